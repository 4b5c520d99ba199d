/**
 * The per-image steps of the fine-tuning transform after the RandomResizedCrop (spec §7.4): horizontal flip →
 * TrivialAugmentWide (uint8) → ToTensor + Normalize. All draws come from the image's own `Rng`, continuing after the
 * crop draws, so a batch stays a pure function of (seed, step) whichever worker decodes it.
 */
import type { Rng } from '../util/rng.js';
import { normalizeRgb } from './normalize.js';
import { trivialAugmentWide, type TaDraw } from './trivial-augment.js';

export type AutoAugment = 'trivial_augment_wide' | null;

export interface PostCropOptions {
  /** TrivialAugmentWide on the flipped crop (null = none, the pre-training transform). */
  autoAugment?: AutoAugment;
}

export interface PostCropResult {
  data: Float32Array;
  augment?: TaDraw;
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
 * Flip (already drawn), then the optional auto-augmentation, then normalisation of a `size × size` RGB crop.
 * Without auto-augmentation this is exactly `normalizeRgb(px, size, size, flipped)` and draws nothing.
 */
export function postCrop(px: Uint8Array, size: number, flipped: boolean, opts: PostCropOptions, rng: Rng): PostCropResult {
  if (opts.autoAugment !== 'trivial_augment_wide') return { data: normalizeRgb(px, size, size, flipped) };
  const src = flipped ? flipRgb(px, size, size) : px;
  const ta = trivialAugmentWide(src, size, size, rng);
  return { data: normalizeRgb(ta.pixels, size, size, false), augment: ta.draw };
}
