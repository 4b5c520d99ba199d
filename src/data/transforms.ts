/**
 * Image transforms with sharp (libvips), matching torchvision:
 * - train: RandomResizedCrop(size, scale, ratio, bicubic) → RandomHorizontalFlip(p) → ToTensor → Normalize(ImageNet);
 * - eval: Resize(shorter side = floor(size / cropPct)) → CenterCrop(size) → ToTensor → Normalize.
 * Outputs are normalised Float32 HWC. Randomness comes from the caller's `Rng` (one per image).
 */
import sharp from 'sharp';
import { readFile } from 'node:fs/promises';
import { Rng, roundHalfEven } from '../util/rng.js';
import { normalizeRgb } from './normalize.js';
import { postCrop, type AutoAugment } from './augment.js';
import type { TaDraw } from './trivial-augment.js';
import type { AaDraw } from './auto-augment.js';
import type { ErasedBox } from './random-erasing.js';

export interface CropBox {
  /** Top row (torchvision `i`). */
  top: number;
  /** Left column (torchvision `j`). */
  left: number;
  height: number;
  width: number;
  /** True when the 10 sampling attempts failed and the central-crop fallback was used. */
  fallback: boolean;
}

/**
 * torchvision `RandomResizedCrop.get_params`: 10 attempts of (area ∈ scale·W·H uniform, log-ratio uniform), each
 * accepted when the rounded box fits; otherwise the central crop clamped to the ratio range. Draw order: area,
 * log-ratio, then (on success) top, left.
 */
export function sampleRandomResizedCrop(
  rng: Rng,
  width: number,
  height: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): CropBox {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { top, left, height: h, width: w, fallback: false };
    }
  }
  const inRatio = width / height;
  const rMin = Math.min(ratio[0], ratio[1]);
  const rMax = Math.max(ratio[0], ratio[1]);
  let w: number;
  let h: number;
  if (inRatio < rMin) {
    w = width;
    h = roundHalfEven(w / rMin);
  } else if (inRatio > rMax) {
    h = height;
    w = roundHalfEven(h * rMax);
  } else {
    w = width;
    h = height;
  }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w, fallback: true };
}

export interface TrainTransform {
  size: number;
  scale: readonly [number, number];
  ratio: readonly [number, number];
  hflip: number;
  /** Fine-tuning: TrivialAugmentWide or AutoAugment 'v0' after the flip (spec §7.4 step 3); default none. */
  autoAugment?: AutoAugment;
  /** Fine-tuning: RandomErasing probability after normalisation (spec §7.4 step 6); default 0. */
  randomErasing?: number;
}

export interface DecodedImage {
  /** Normalised HWC float32, size·size·3. */
  data: Float32Array;
  /** Original image size, and the crop/flip applied (train only). */
  width: number;
  height: number;
  crop?: CropBox;
  flipped?: boolean;
  /** Shrink applied at load time before cropping (1 = none), see `preShrinkFactor`. */
  preShrink?: number;
  /** The TrivialAugmentWide op applied (train with `autoAugment: 'trivial_augment_wide'`). */
  augment?: TaDraw;
  /** The AutoAugment 'v0' sub-policy drawn and which ops ran (train with `autoAugment: 'auto_augment_v0'`). */
  aaDraw?: AaDraw;
  /** The boxes RandomErasing filled (train with `randomErasing`). */
  erased?: ErasedBox[];
}

type Input = Buffer | string;

async function toBuffer(input: Input): Promise<Buffer> {
  return typeof input === 'string' ? readFile(input) : input;
}

/** sharp instance for decoding untrusted files: truncated or corrupt pixel data is an error (like PIL), decoder warnings are not. */
function load(buf: Buffer): sharp.Sharp {
  return sharp(buf, { failOn: 'error' });
}

/** Raw 8-bit sRGB with three channels (alpha dropped like PIL's convert('RGB'); grey expanded; CMYK converted). */
function rgb(img: sharp.Sharp): sharp.Sharp {
  return img.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' });
}

async function rawRgb(img: sharp.Sharp): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await rgb(img).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`);
  return { data, width: info.width, height: info.height };
}

async function header(buf: Buffer): Promise<{ width: number; height: number; format: string; hasAlpha: boolean }> {
  if (buf.length === 0) throw new Error('empty file');
  const meta = await sharp(buf).metadata();
  if (!meta.width || !meta.height) throw new Error('image has no size');
  return { width: meta.width, height: meta.height, format: meta.format ?? '', hasAlpha: !!meta.hasAlpha };
}

/**
 * A factory of sharp pipelines over the decoded image as PIL's `convert('RGB')` sees it. Images with an alpha
 * channel are first decoded to raw RGB with the alpha dropped: sharp would otherwise premultiply by alpha around
 * the resize (and drop it only at the end), which changes the colours of translucent pixels.
 */
async function rgbSource(buf: Buffer, hasAlpha: boolean): Promise<() => sharp.Sharp> {
  if (!hasAlpha) return () => load(buf);
  const raw = await rawRgb(load(buf));
  return () => sharp(raw.data, { raw: { width: raw.width, height: raw.height, channels: 3 } });
}

/**
 * The load-time shrink for a crop of `cw × ch` resized to `size`: q = min(cw, ch) / (2·size) when q ≥ 4, else 1.
 * Shrinking the whole image by q right after load lets libvips decode JPEG/WebP at 1/2, 1/4 or 1/8 scale
 * (shrink-on-load, which sharp only uses for shrinks of about 3× and more); the crop then still covers at least
 * 2× the target resolution for the final bicubic reduce. Other formats get 1 (no gain).
 */
export function preShrinkFactor(format: string, cw: number, ch: number, size: number): number {
  if (format !== 'jpeg' && format !== 'webp') return 1;
  const q = Math.min(cw, ch) / (2 * size);
  return q >= 4 ? q : 1;
}

/**
 * Train transform of one encoded image: RandomResizedCrop (bicubic) + horizontal flip [+ TrivialAugmentWide] +
 * normalisation [+ RandomErasing]. The crop is
 * sampled in original-image coordinates; when it is much larger than the target, the image is first decoded with
 * libvips shrink-on-load (JPEG/WebP) and the same box, scaled, is cropped from the shrunk image.
 */
export async function decodeTrain(input: Input, t: TrainTransform, rng: Rng): Promise<DecodedImage> {
  const buf = await toBuffer(input);
  const { width, height, format, hasAlpha } = await header(buf);
  const crop = sampleRandomResizedCrop(rng, width, height, t.scale, t.ratio);
  const flipped = rng.float() < t.hflip;
  const k = hasAlpha ? 1 : preShrinkFactor(format, crop.width, crop.height, t.size);
  let pixels: Buffer;
  if (k === 1) {
    const src = await rgbSource(buf, hasAlpha);
    pixels = (
      await rawRgb(
        src()
          .extract({ left: crop.left, top: crop.top, width: crop.width, height: crop.height })
          .resize(t.size, t.size, { fit: 'fill', kernel: 'cubic' }),
      )
    ).data;
  } else {
    // Resize immediately after load → libvips shrinks on load (DCT scaling), then reduces to exactly W/k × H/k.
    const sw = Math.max(1, Math.round(width / k));
    const sh = Math.max(1, Math.round(height / k));
    const small = await rawRgb(load(buf).resize(sw, sh, { fit: 'fill', kernel: 'cubic' }));
    const fx = small.width / width;
    const fy = small.height / height;
    const left = Math.min(small.width - 1, Math.round(crop.left * fx));
    const top = Math.min(small.height - 1, Math.round(crop.top * fy));
    const w = Math.max(1, Math.min(small.width - left, Math.round((crop.left + crop.width) * fx) - left));
    const h = Math.max(1, Math.min(small.height - top, Math.round((crop.top + crop.height) * fy) - top));
    pixels = (
      await rawRgb(
        sharp(small.data, { raw: { width: small.width, height: small.height, channels: 3 } })
          .extract({ left, top, width: w, height: h })
          .resize(t.size, t.size, { fit: 'fill', kernel: 'cubic' }),
      )
    ).data;
  }
  const post = postCrop(pixels, t.size, flipped, { autoAugment: t.autoAugment ?? null, randomErasing: t.randomErasing ?? 0 }, rng);
  return { data: post.data, width, height, crop, flipped, preShrink: k, ...(post.augment ? { augment: post.augment } : {}), ...(post.aaDraw ? { aaDraw: post.aaDraw } : {}), ...(post.erased ? { erased: post.erased } : {}) };
}

export interface EvalOptions {
  /** Resize the shorter side to floor(size / cropPct) before the center crop (1 = torchvision viz; 0.95 = FT eval). */
  cropPct?: number;
  /** Resampling of the resize: 'bilinear' (torchvision default, reconstruction viz) or 'bicubic' (FT eval). */
  interpolation?: 'bilinear' | 'bicubic';
}

/** Resize shorter side + center crop + normalise (torchvision `Resize(s)` + `CenterCrop(size)`). */
export async function decodeEval(input: Input, size: number, opts: EvalOptions = {}): Promise<DecodedImage> {
  const buf = await toBuffer(input);
  const { width, height, hasAlpha } = await header(buf);
  const cropPct = opts.cropPct ?? 1;
  if (!(cropPct > 0 && cropPct <= 1)) throw new RangeError(`cropPct must be in (0, 1], got ${cropPct}`);
  const s = Math.floor(size / cropPct + 1e-9);
  // torchvision Resize(int): the shorter side becomes s, the longer int(s * long / short)
  let ow: number;
  let oh: number;
  if (width <= height) {
    ow = s;
    oh = Math.floor((s * height) / width);
  } else {
    oh = s;
    ow = Math.floor((s * width) / height);
  }
  const top = roundHalfEven((oh - size) / 2);
  const left = roundHalfEven((ow - size) / 2);
  const kernel = (opts.interpolation ?? 'bilinear') === 'bicubic' ? 'cubic' : 'linear';
  const src = await rgbSource(buf, hasAlpha);
  const { data } = await rawRgb(
    src().resize(ow, oh, { fit: 'fill', kernel }).extract({ left, top, width: size, height: size }),
  );
  return { data: normalizeRgb(data, size, size, false), width, height };
}

/**
 * Load one image for visualisation / evaluation: resize the shorter side to `size / cropPct` (bilinear by
 * default), center-crop `size × size`, normalise. Returns Float32 HWC (size·size·3).
 */
export async function loadEvalImage(file: string, size: number, opts: EvalOptions = {}): Promise<Float32Array> {
  return (await decodeEval(file, size, opts)).data;
}
