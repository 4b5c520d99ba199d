/**
 * The per-image steps of the fine-tuning transform after the RandomResizedCrop (spec §7.4): horizontal flip →
 * auto-augmentation (uint8: torchvision's TrivialAugmentWide, or timm's AutoAugment 'v0' as the reference uses at
 * 384 px) → ToTensor + Normalize → RandomErasing (float). All draws come from the image's own `Rng`, continuing after
 * the crop draws, so a batch stays a pure function of (seed, step) whichever worker decodes it.
 */
import type { Rng } from '../util/rng.js';
import { normalizeRgb } from './normalize.js';
import { trivialAugmentWide, type TaDraw } from './trivial-augment.js';
import { aaHparams, autoAugmentV0, type AaDraw } from './auto-augment.js';
import { randomErasing, type ErasedBox } from './random-erasing.js';

/**
 * The auto-augmentation of the data pipeline: 'trivial_augment_wide' (torchvision, bicubic), 'auto_augment_v0' (timm
 * AutoAugment 'v0' with the hparams of a `size` px input: translate_const int(0.45·size), img_mean fill, bicubic), or
 * null (none). (The `finetune.auto_augment` option's 'auto' is resolved to one of these before it gets here.)
 */
export type AutoAugment = 'trivial_augment_wide' | 'auto_augment_v0' | null;

export const AUTO_AUGMENTS: readonly AutoAugment[] = ['trivial_augment_wide', 'auto_augment_v0', null];

export interface PostCropOptions {
  /** Auto-augmentation of the flipped crop (null = none, the pre-training transform). */
  autoAugment?: AutoAugment;
  /** RandomErasing probability after normalisation (timm mode 'pixel', one box); 0 / undefined = none. */
  randomErasing?: number;
}

export interface PostCropResult {
  data: Float32Array;
  /** The TrivialAugmentWide op applied (autoAugment 'trivial_augment_wide'). */
  augment?: TaDraw;
  /** The AutoAugment sub-policy drawn and which of its ops ran (autoAugment 'auto_augment_v0'). */
  aaDraw?: AaDraw;
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
  const aa = opts.autoAugment ?? null;
  if (aa !== null && !AUTO_AUGMENTS.includes(aa)) throw new Error(`unknown auto-augmentation '${String(aa)}'`);
  if (aa === 'trivial_augment_wide') {
    const ta = trivialAugmentWide(flipped ? flipRgb(px, size, size) : px, size, size, rng);
    out.data = normalizeRgb(ta.pixels, size, size, false);
    out.augment = ta.draw;
  } else if (aa === 'auto_augment_v0') {
    const r = autoAugmentV0(flipped ? flipRgb(px, size, size) : px, size, size, rng, aaHparams(size));
    out.data = normalizeRgb(r.pixels, size, size, false);
    out.aaDraw = r.draw;
  } else {
    out.data = normalizeRgb(px, size, size, flipped);
  }
  if (opts.randomErasing && opts.randomErasing > 0) out.erased = randomErasing(out.data, size, size, rng, { probability: opts.randomErasing, mode: 'pixel', maxCount: 1 });
  return out;
}

/** True when `postCrop` draws anything (the pre-training transform draws only crop and flip). */
export function hasPostCropDraws(opts: PostCropOptions): boolean {
  return (opts.autoAugment ?? null) !== null || (opts.randomErasing ?? 0) > 0;
}
