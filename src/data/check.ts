/**
 * Check a data set before a run makes anything: the image folder exists, holds images, and at least one of them
 * decodes (files are tried in dataset order until one does, so a healthy folder costs one decode). A folder whose
 * every image is unreadable is a DataError (exit 2) before the run folder or the MLflow run exist.
 */
import path from 'node:path';
import type { DataConfig } from '../spec/types.js';
import { DataError } from '../util/errors.js';
import { scanImageFolder } from './imagefolder.js';
import { loadEvalImage } from './transforms.js';

/** Throws DataError when the configured data cannot give a single image; returns the number of files tried. */
export async function checkDataReadable(cfg: DataConfig, root = cfg.root): Promise<number> {
  if (cfg.source !== 'imagefolder') return 0;
  if (!root) throw new DataError(`data.root is required when data.source is 'imagefolder'`);
  const folder = scanImageFolder(root);
  let first: { file: string; reason: string } | null = null;
  for (let i = 0; i < folder.files.length; i++) {
    const file = path.join(folder.root, folder.files[i]!);
    try {
      await loadEvalImage(file, Math.min(32, cfg.input_size));
      return i + 1;
    } catch (e) {
      first ??= { file, reason: (e as Error).message.split('\n')[0]! };
    }
  }
  throw new DataError(
    `all ${folder.files.length} images under data.root '${root}' are unreadable (e.g. '${first?.file}': ${first?.reason ?? 'unknown'})`,
  );
}
