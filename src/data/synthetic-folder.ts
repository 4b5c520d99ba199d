/** Write a labelled synthetic dataset in the ImageNet folder layout (for tests and the linear-probe benchmark). */
import sharp from 'sharp';
import path from 'node:path';
import { atomicWriteFile } from '../util/atomic.js';
import { syntheticLabelled, SYNTHETIC_MAX_CLASSES } from './synthetic.js';

export interface SyntheticFolderOptions {
  /** Number of classes (≤ SYNTHETIC_MAX_CLASSES). */
  classes: number;
  perClass: number;
  size: number;
  seed: number;
  format?: 'png' | 'jpg';
  /** JPEG quality (default 90). */
  quality?: number;
}

export interface SyntheticFolder {
  root: string;
  /** Class folder names, `class_00`, `class_01`, ... (sorted = label order). */
  classes: string[];
  /** Written files, relative to root, in dataset order. */
  files: string[];
}

/**
 * Writes `dir/class_XX/img_YYYYY.{png,jpg}`: image k of class c is `syntheticLabelled(seed, k·classes + c, ...)`,
 * so its label is c. Deterministic: the same options write the same pixels.
 */
export async function writeSyntheticFolder(dir: string, opts: SyntheticFolderOptions): Promise<SyntheticFolder> {
  const { classes, perClass, size, seed } = opts;
  const format = opts.format ?? 'png';
  if (!Number.isInteger(classes) || classes < 1 || classes > SYNTHETIC_MAX_CLASSES) {
    throw new RangeError(`classes must be an integer in [1, ${SYNTHETIC_MAX_CLASSES}], got ${classes}`);
  }
  const names = Array.from({ length: classes }, (_, c) => `class_${String(c).padStart(2, '0')}`);
  const files: string[] = [];
  for (let c = 0; c < classes; c++) {
    for (let k = 0; k < perClass; k++) {
      const { pixels, label } = syntheticLabelled(seed, k * classes + c, size, classes);
      if (label !== c) throw new Error(`internal: synthetic label ${label} != ${c}`);
      const img = sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.length), { raw: { width: size, height: size, channels: 3 } });
      const data = format === 'png' ? await img.png().toBuffer() : await img.jpeg({ quality: opts.quality ?? 90 }).toBuffer();
      const rel = path.join(names[c]!, `img_${String(k).padStart(5, '0')}.${format}`);
      await atomicWriteFile(path.join(dir, rel), data);
      files.push(rel);
    }
  }
  return { root: path.resolve(dir), classes: names, files };
}
