/**
 * The per-image steps of the fine-tuning transform after the RandomResizedCrop (spec §7.4): horizontal flip →
 * TrivialAugmentWide (uint8) → ToTensor + Normalize → RandomErasing (float). All draws come from the image's own `Rng`, continuing after the
 * crop draws, so a batch stays a pure function of (seed, step) whichever worker decodes it.
 */
import type { Rng } from '../util/rng.js';
import { normalizeRgb } from './normalize.js';
import { trivialAugmentWide, type TaDraw } from './trivial-augment.js';
import { randomErasing, type ErasedBox } from './random-erasing.js';

export type AutoAugment = 'trivial_augment_wide' | null;

export interface PostCropOptions {
  /** TrivialAugmentWide on the flipped crop (null = none, the pre-training transform). */
  autoAugment?: AutoAugment;
  /** RandomErasing probability after normalisation (timm mode 'pixel', one box); 0 / undefined = none. */
  randomErasing?: number;
}

export interface PostCropResult {
  data: Float32Array;
  augment?: TaDraw;
  /** The boxes RandomErasing filled with noise (when enabled). */
  erased?: ErasedBox[];
}

/** Mirror each row of an RGB uint8 image (a new buffer). */
export function flipRgb(px: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let x = 0; x < width; x++) {
      const i = row + x * 3;
      const o = row + (width - 1 - x) * 3;
      out[o] = px[i]!;
      out[o + 1] = px[i + 1]!;
      out[o + 2] = px[i + 2]!;
    }
  }
  return out;
}

/**
 * Flip (already drawn), then the optional auto-augmentation, normalisation and random erasing of a `size × size` RGB
 * crop. With neither this is exactly `normalizeRgb(px, size, size, flipped)` and draws nothing.
 */
export function postCrop(px: Uint8Array, size: number, flipped: boolean, opts: PostCropOptions, rng: Rng): PostCropResult {
  const out: PostCropResult = { data: new Float32Array(0) };
  if (opts.autoAugment === 'trivial_augment_wide') {
    const ta = trivialAugmentWide(flipped ? flipRgb(px, size, size) : px, size, size, rng);
    out.data = normalizeRgb(ta.pixels, size, size, false);
    out.augment = ta.draw;
  } else {
    out.data = normalizeRgb(px, size, size, flipped);
  }
  if (opts.randomErasing && opts.randomErasing > 0) out.erased = randomErasing(out.data, size, size, rng, { probability: opts.randomErasing, mode: 'pixel', maxCount: 1 });
  return out;
}

/** True when `postCrop` draws anything (the pre-training transform draws only crop and flip). */
export function hasPostCropDraws(opts: PostCropOptions): boolean {
  return opts.autoAugment === 'trivial_augment_wide' || (opts.randomErasing ?? 0) > 0;
}
