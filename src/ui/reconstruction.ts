/**
 * Reconstruction grids (spec §4.5, §8.5): per image a row of three panels, input | masked | reconstruction,
 * de-normalised (x·std + mean, clamped to [0, 1]); masked areas show the ImageNet-mean grey (0 in normalised
 * space) and the reconstruction pastes the prediction (de-normalised with each input patch's own mean and std)
 * into the masked patches only. A header strip carries the column labels, drawn with a built-in bitmap font.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import type { ExperimentConfig } from '../spec/types.js';
import { Rng } from '../util/rng.js';
import { atomicWriteFile } from '../util/atomic.js';
import { UsageError } from '../util/errors.js';
import { denormalizeToUint8, normalizeRgb } from '../data/normalize.js';
import { loadEvalImage } from '../data/transforms.js';
import { syntheticImage } from '../data/synthetic.js';
import { scanImageFolder } from '../data/imagefolder.js';
import { drawText, GLYPH_H, textWidth } from './font.js';

/** What the grid needs from a model (a `SparKModel` satisfies it). */
export interface ReconstructionModel {
  makeMask(batch: number, rng: Rng): tf.Tensor4D;
  reconstruct(x: tf.Tensor4D, mask: tf.Tensor4D): { masked: tf.Tensor4D; composite: tf.Tensor4D; loss: tf.Scalar };
}

export interface GridLayout {
  width: number;
  height: number;
  /** Height of the label strip at the top. */
  labelHeight: number;
  /** Scale of the bitmap font. */
  fontScale: number;
  /** The three column labels. */
  labels: [string, string, string];
}

const HEADER_BG: [number, number, number] = [255, 255, 255];
const HEADER_FG: [number, number, number] = [0, 0, 0];

/** Geometry of a grid of `n` rows of `size`-pixel panels: width 3·size, height labelHeight + n·size. */
export function gridLayout(size: number, n: number): GridLayout {
  const fontScale = size >= 160 ? 2 : 1;
  const labelHeight = (GLYPH_H + 4) * fontScale;
  const fit = (long: string, short: string): string => (textWidth(long, fontScale) <= size - 2 * fontScale ? long : short);
  const labels: [string, string, string] = [fit('input', 'in'), fit('masked', 'mask'), fit('reconstruction', 'recon')];
  return { width: 3 * size, height: labelHeight + n * size, labelHeight, fontScale, labels };
}

/** Tile one f×f mask (1 = visible) for a batch: [B, f, f, 1] float32. */
export function tileMask(bits: Uint8Array | number[], f: number, batch: number): tf.Tensor4D {
  if (bits.length !== f * f) throw new Error(`tileMask: expected ${f * f} cells, got ${bits.length}`);
  const data = new Float32Array(batch * f * f);
  for (let b = 0; b < batch; b++) for (let i = 0; i < f * f; i++) data[b * f * f + i] = bits[i] ? 1 : 0;
  return tf.tensor4d(data, [batch, f, f, 1]);
}

/**
 * Parse a `--mask` string: f² characters '0'/'1' (1 = visible), row-major. Whitespace, ',', '/', '_' and '|' may
 * separate rows and are ignored. Needs at least one visible and one masked cell.
 */
export function parseMaskString(s: string, f: number): Uint8Array {
  const clean = s.replace(/[\s,/_|]/g, '');
  const bad = clean.match(/[^01]/);
  if (bad) throw new UsageError(`--mask: only '0' (masked) and '1' (visible) are allowed, found '${bad[0]}'`);
  if (clean.length !== f * f) {
    throw new UsageError(`--mask: expected ${f * f} cells (${f}×${f} grid for this model's input size), got ${clean.length}`);
  }
  const bits = Uint8Array.from(clean, (c) => (c === '1' ? 1 : 0));
  const visible = bits.reduce((a, b) => a + b, 0);
  if (visible === 0) throw new UsageError('--mask: at least one cell must be visible (1)');
  if (visible === bits.length) throw new UsageError('--mask: at least one cell must be masked (0); the loss is over masked cells');
  return bits;
}

/**
 * Run `model.reconstruct` (eval mode) on `images` (normalised HWC, size·size·3 each) with `masks` ([N, f, f, 1],
 * 1 = visible) or, when null, masks drawn from `Rng.from(seed, 'reconstruct')` (fixed across calls, so periodic
 * grids of a run are comparable). Writes the PNG atomically; returns the SparK loss on these images.
 */
export async function renderReconstructionGrid(
  model: ReconstructionModel,
  images: Float32Array[],
  masks: tf.Tensor4D | null,
  size: number,
  outPng: string,
  opts: { seed?: number } = {},
): Promise<{ loss: number; width: number; height: number }> {
  const n = images.length;
  if (n === 0) throw new UsageError('reconstruction grid: no images');
  const px = size * size * 3;
  images.forEach((im, i) => {
    if (im.length !== px) throw new UsageError(`reconstruction grid: image ${i} has ${im.length} values, expected ${size}×${size}×3 = ${px}`);
  });
  if (masks && masks.shape[0] !== n) throw new UsageError(`reconstruction grid: ${masks.shape[0]} masks for ${n} images`);

  const flat = new Float32Array(n * px);
  images.forEach((im, i) => flat.set(im, i * px));
  const x = tf.tensor4d(flat, [n, size, size, 3]);
  const mask = masks ?? model.makeMask(n, Rng.from(opts.seed ?? 0, 'reconstruct'));
  let maskedData: Float32Array;
  let compositeData: Float32Array;
  let loss: number;
  try {
    const out = model.reconstruct(x, mask);
    try {
      [maskedData, compositeData] = (await Promise.all([out.masked.data(), out.composite.data()])) as [Float32Array, Float32Array];
      loss = (await out.loss.data())[0]!;
    } finally {
      out.masked.dispose();
      out.composite.dispose();
      out.loss.dispose();
      const extra = (out as { pred?: tf.Tensor }).pred;
      extra?.dispose();
    }
  } finally {
    x.dispose();
    if (!masks) mask.dispose();
  }

  const layout = gridLayout(size, n);
  const W = layout.width;
  const canvas = new Uint8Array(W * layout.height * 3);
  // label strip
  for (let i = 0; i < W * layout.labelHeight; i++) canvas.set(HEADER_BG, i * 3);
  const s = layout.fontScale;
  layout.labels.forEach((label, col) => {
    const tw = textWidth(label, s);
    const x0 = col * size + Math.max(0, Math.floor((size - tw) / 2));
    drawText(canvas, W, layout.labelHeight, x0, 2 * s, label, HEADER_FG, s);
  });
  // panels
  const panels = [flat, maskedData, compositeData];
  for (let r = 0; r < n; r++) {
    for (let col = 0; col < 3; col++) {
      const rgb = denormalizeToUint8(panels[col]!.subarray(r * px, (r + 1) * px));
      for (let y = 0; y < size; y++) {
        const dst = ((layout.labelHeight + r * size + y) * W + col * size) * 3;
        canvas.set(rgb.subarray(y * size * 3, (y + 1) * size * 3), dst);
      }
    }
  }
  const png = await sharp(canvas, { raw: { width: W, height: layout.height, channels: 3 } }).png().toBuffer();
  await atomicWriteFile(outPng, png);
  return { loss, width: W, height: layout.height };
}

/**
 * The fixed batch of a run's reconstruction grids: `n` images spread evenly over the validation folder (or the
 * training folder), or synthetic images past the training range. Unreadable files are passed over — those in `skip`
 * (the loader's skipped files, absolute paths) without trying — and the next readable file in folder order takes
 * their place, so corrupt images never break the grid; no readable image at all is an error.
 */
export async function fixedValidationBatch(config: ExperimentConfig, n: number, opts: { skip?: ReadonlySet<string> } = {}): Promise<Float32Array[]> {
  const size = config.data.input_size;
  const root = config.data.val_root ?? (config.data.source === 'imagefolder' ? config.data.root : null);
  if (root) {
    const folder = scanImageFolder(root);
    if (!folder.files.length) throw new UsageError(`${root}: no images for the reconstruction grid`);
    const N = folder.files.length;
    const k = Math.min(n, N);
    const tried = new Set<number>();
    const out: Float32Array[] = [];
    let lastError = '';
    for (let i = 0; i < k; i++) {
      // the evenly spaced pick, or the next untried file after it
      for (let j = Math.floor((i * N) / k), t = 0; t < N; t++, j = (j + 1) % N) {
        if (tried.has(j)) continue;
        tried.add(j);
        const file = path.join(folder.root, folder.files[j]!);
        if (opts.skip?.has(file)) continue;
        try {
          out.push(await loadEvalImage(file, size));
          break;
        } catch (e) {
          lastError = `'${file}': ${(e as Error).message.split('\n')[0]}`;
        }
      }
      if (tried.size >= N) break;
    }
    if (!out.length) throw new UsageError(`${root}: no readable image for the reconstruction grid${lastError ? ` (e.g. ${lastError})` : ''}`);
    return out;
  }
  const base = Math.max(0, config.data.synthetic_size);
  return Array.from({ length: n }, (_, i) => normalizeRgb(syntheticImage(config.runtime.seed, base + i, size), size, size));
}
