/**
 * RandomErasing as timm's `RandomErasing(probability, mode, max_count)` (timm 0.5.4 `timm/data/random_erasing.py`),
 * the last step of the reference fine-tuning transform (spec §7.4 step 6: p 0.25, mode 'pixel', one box). It runs
 * on the normalised image (HWC float32, in place):
 *
 * - with probability p (skipped when u > p), erase `count` boxes (max_count 1 → exactly one);
 * - each box: up to 10 attempts of area ∈ U(0.02, 1/3)·H·W / count and log-aspect ∈ U(log 0.3, log 1/0.3);
 *   h = round(√(area·aspect)), w = round(√(area/aspect)) (Python's round); accepted when w < W and h < H, then
 *   top ∈ {0..H−h}, left ∈ {0..W−w} uniformly;
 * - the box is filled with N(0, 1) noise per pixel and channel ('pixel'), one N(0, 1) value per channel ('rand'), or
 *   0 ('const'), drawn in CHW order like the reference's (C, h, w) tensor.
 *
 * Draw order on the caller's `Rng`: u, [count], per attempt (area, aspect[, top, left, noise]).
 */
import { roundHalfEven, type Rng } from '../util/rng.js';

export type ErasingMode = 'pixel' | 'rand' | 'const';

export interface RandomErasingOptions {
  probability: number;
  mode?: ErasingMode;
  minArea?: number;
  maxArea?: number;
  minAspect?: number;
  /** Default 1 / minAspect. */
  maxAspect?: number;
  minCount?: number;
  /** Default minCount. */
  maxCount?: number;
}

export interface ErasedBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Erase boxes of `data` (HWC float32, `width × height × 3`) in place; returns the boxes erased. */
export function randomErasing(data: Float32Array, width: number, height: number, rng: Rng, opts: RandomErasingOptions): ErasedBox[] {
  const channels = 3;
  if (data.length !== width * height * channels) throw new Error(`randomErasing: expected ${width * height * channels} values, got ${data.length}`);
  if (!(opts.probability > 0)) return [];
  if (rng.float() > opts.probability) return [];
  const mode = opts.mode ?? 'pixel';
  const minArea = opts.minArea ?? 0.02;
  const maxArea = opts.maxArea ?? 1 / 3;
  const minAspect = opts.minAspect ?? 0.3;
  const logLo = Math.log(minAspect);
  const logHi = Math.log(opts.maxAspect ?? 1 / minAspect);
  const minCount = opts.minCount ?? 1;
  const maxCount = opts.maxCount ?? minCount;
  const count = minCount === maxCount ? minCount : minCount + rng.int(maxCount - minCount + 1);
  const area = width * height;
  const boxes: ErasedBox[] = [];
  for (let n = 0; n < count; n++) {
    for (let attempt = 0; attempt < 10; attempt++) {
      const target = (rng.uniform(minArea, maxArea) * area) / count;
      const aspect = Math.exp(rng.uniform(logLo, logHi));
      const h = roundHalfEven(Math.sqrt(target * aspect));
      const w = roundHalfEven(Math.sqrt(target / aspect));
      if (!(w < width && h < height)) continue;
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      const perChannel = mode === 'rand' ? [rng.normal(), rng.normal(), rng.normal()] : null;
      for (let c = 0; c < channels; c++) {
        for (let y = top; y < top + h; y++) {
          for (let x = left; x < left + w; x++) {
            data[(y * width + x) * channels + c] = mode === 'pixel' ? rng.normal() : mode === 'rand' ? perChannel![c]! : 0;
          }
        }
      }
      boxes.push({ top, left, height: h, width: w });
      break;
    }
  }
  return boxes;
}
