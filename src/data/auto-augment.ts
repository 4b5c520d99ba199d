/**
 * timm's `AutoAugment` with the ImageNet 'v0' policy (`auto_augment_transform('v0', hparams)`), what the reference
 * fine-tuning transform keeps for inputs of 384 px and more (spec §7.4 step 3), on an interleaved RGB uint8 buffer.
 *
 * timm's semantics (timm 0.5.4 `timm/data/auto_augment.py`, unchanged in 1.0 for these ops and magnitudes ≤ 10):
 * - one of the 25 sub-policies is drawn uniformly (`random.choice`); its two ops run in order, each with its own
 *   probability: `if prob < 1 and random() > prob: skip` (an op of probability 1 draws nothing);
 * - the magnitude M (0..10, fixed per op in the policy) becomes the op's argument through timm's level functions, on a
 *   scale out of 10 (`_LEVEL_DENOM`): Rotate ±30°·M/10, ShearX/Y ±0.3·M/10, TranslateX/Y ±translate_const·M/10 px,
 *   TranslateX/YRel ±0.45·M/10 of the width / height, Color/Contrast/Brightness/Sharpness factor 0.1 + 1.8·M/10,
 *   Posterize int(4·M/10) bits (v0's 'Posterize' is TF-EfficientNet's: 0..4 bits kept), Solarize threshold
 *   int(256·M/10), SolarizeAdd int(110·M/10) added below 128; AutoContrast, Equalize and Invert take none;
 * - the signed ops (Rotate, Shear*, Translate*) are negated by `_randomly_negate` — a draw made only when the op runs,
 *   after its probability draw — when `random() > 0.5`;
 * - the hparams of timm's `transforms_imagenet_train`: `translate_const = int(0.45 · size)`, the fill colour of the
 *   geometric ops `img_mean = round(255 · ImageNet mean)` = (124, 116, 104), and bicubic resampling (the reference
 *   passes interpolation 'bicubic', so timm does not pick bilinear/bicubic at random).
 * The 'v0' policy itself uses TranslateYRel (0.45 of the height), so translate_const is unused by it; the absolute
 * variants are implemented with it anyway, as timm's op set.
 *
 * Pixels are Pillow's (pil-ops.ts): affine ops are `Image.transform(AFFINE, (1, s, tx, 0, 1, 0) …, BICUBIC,
 * fillcolor=img_mean)`, Rotate is `Image.rotate(deg, BICUBIC, fillcolor=img_mean)`, the rest are ImageEnhance /
 * ImageOps / lookup tables. Checked byte for byte against timm's own op functions on Pillow 12.3 by
 * test/data-auto-augment.test.ts (fixture from scripts/make-augment-fixtures.py).
 *
 * Draw order on the caller's `Rng`: sub-policy index; then for each of its two ops, the probability draw (when the
 * probability is below 1) and, if the op runs and is signed, the sign draw.
 */
import { roundHalfEven, type Rng } from '../util/rng.js';
import { IMAGENET_MEAN } from './normalize.js';
import {
  affineBicubic,
  autocontrast,
  brightness,
  color,
  contrast,
  equalize,
  invert,
  posterize,
  rotateBicubic,
  sharpness,
  solarize,
  solarizeAdd,
  type Rgb,
} from './pil-ops.js';

export const AA_OPS = [
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'Posterize',
  'Solarize',
  'SolarizeAdd',
  'Color',
  'Contrast',
  'Brightness',
  'Sharpness',
  'ShearX',
  'ShearY',
  'TranslateX',
  'TranslateY',
  'TranslateXRel',
  'TranslateYRel',
] as const;
export type AaOp = (typeof AA_OPS)[number];

/** One op of a sub-policy: [name, probability, magnitude (0..10)]. */
export type AaOpSpec = readonly [AaOp, number, number];

/** timm's `auto_augment_policy_v0`: ImageNet policy of the TPU EfficientNet implementation, 25 sub-policies of two ops. */
export const AA_V0_POLICY: ReadonlyArray<readonly [AaOpSpec, AaOpSpec]> = [
  [['Equalize', 0.8, 1], ['ShearY', 0.8, 4]],
  [['Color', 0.4, 9], ['Equalize', 0.6, 3]],
  [['Color', 0.4, 1], ['Rotate', 0.6, 8]],
  [['Solarize', 0.8, 3], ['Equalize', 0.4, 7]],
  [['Solarize', 0.4, 2], ['Solarize', 0.6, 2]],
  [['Color', 0.2, 0], ['Equalize', 0.8, 8]],
  [['Equalize', 0.4, 8], ['SolarizeAdd', 0.8, 3]],
  [['ShearX', 0.2, 9], ['Rotate', 0.6, 8]],
  [['Color', 0.6, 1], ['Equalize', 1.0, 2]],
  [['Invert', 0.4, 9], ['Rotate', 0.6, 0]],
  [['Equalize', 1.0, 9], ['ShearY', 0.6, 3]],
  [['Color', 0.4, 7], ['Equalize', 0.6, 0]],
  [['Posterize', 0.4, 6], ['AutoContrast', 0.4, 7]],
  [['Solarize', 0.6, 8], ['Color', 0.6, 9]],
  [['Solarize', 0.2, 4], ['Rotate', 0.8, 9]],
  [['Rotate', 1.0, 7], ['TranslateYRel', 0.8, 9]],
  [['ShearX', 0.0, 0], ['Solarize', 0.8, 4]],
  [['ShearY', 0.8, 0], ['Color', 0.6, 4]],
  [['Color', 1.0, 0], ['Rotate', 0.6, 2]],
  [['Equalize', 0.8, 4], ['Equalize', 0.0, 8]],
  [['Equalize', 1.0, 4], ['AutoContrast', 0.6, 2]],
  [['ShearY', 0.4, 7], ['SolarizeAdd', 0.6, 7]],
  [['Posterize', 0.8, 2], ['Solarize', 0.6, 10]], // 0 bits kept: a black image, as in timm
  [['Solarize', 0.6, 8], ['Equalize', 0.6, 1]],
  [['Color', 0.8, 6], ['Rotate', 0.4, 5]],
];

/** timm's magnitude scale: a level M means M / 10 of each op's range. */
export const AA_LEVEL_DENOM = 10;

/** The ops whose argument timm negates with probability ½ (`_randomly_negate`). */
export const AA_SIGNED: ReadonlySet<AaOp> = new Set<AaOp>(['Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'TranslateXRel', 'TranslateYRel']);

export interface AaHparams {
  /** Absolute translation at level 10 (px): timm `translate_const`. */
  translateConst: number;
  /** Relative translation at level 10 (fraction of the side): timm `translate_pct` (default 0.45). */
  translatePct: number;
  /** Fill colour of the geometric ops: timm `img_mean`. */
  fill: Rgb;
}

/**
 * The hparams timm's `transforms_imagenet_train` gives AutoAugment for a `size` px input: translate_const =
 * int(0.45·size), img_mean = round(255·mean) per channel (ImageNet mean → (124, 116, 104)), translate_pct 0.45.
 */
export function aaHparams(size: number): AaHparams {
  const fill = IMAGENET_MEAN.map((m) => Math.min(255, roundHalfEven(255 * m))) as unknown as Rgb;
  return { translateConst: Math.trunc(size * 0.45), translatePct: 0.45, fill };
}

/**
 * timm's level → argument of an op at magnitude `level` (clamped to 0..10), `negate` = the outcome of
 * `_randomly_negate` for signed ops (ignored otherwise). null for ops without an argument.
 */
export function aaLevelToArg(op: AaOp, level: number, negate: boolean, hp: AaHparams): number | null {
  const m = Math.max(0, Math.min(level, AA_LEVEL_DENOM)) / AA_LEVEL_DENOM;
  const sign = (v: number) => (negate ? -v : v);
  switch (op) {
    case 'AutoContrast':
    case 'Equalize':
    case 'Invert':
      return null;
    case 'Rotate':
      return sign(m * 30);
    case 'ShearX':
    case 'ShearY':
      return sign(m * 0.3);
    case 'TranslateX':
    case 'TranslateY':
      return sign(m * hp.translateConst);
    case 'TranslateXRel':
    case 'TranslateYRel':
      return sign(m * hp.translatePct);
    case 'Posterize':
      return Math.trunc(m * 4);
    case 'Solarize':
      return Math.min(256, Math.trunc(m * 256));
    case 'SolarizeAdd':
      return Math.min(128, Math.trunc(m * 110));
    case 'Color':
    case 'Contrast':
    case 'Brightness':
    case 'Sharpness':
      return m * 1.8 + 0.1;
  }
}

/** One timm AutoAugment op on an RGB uint8 image with its argument (from `aaLevelToArg`); returns a new buffer. */
export function applyAaOp(px: Uint8Array, width: number, height: number, op: AaOp, arg: number | null, hp: AaHparams): Uint8Array {
  const a = arg ?? 0;
  const affine = (m: number[]) => affineBicubic(px, width, height, m, hp.fill);
  switch (op) {
    case 'AutoContrast':
      return autocontrast(px);
    case 'Equalize':
      return equalize(px);
    case 'Invert':
      return invert(px);
    case 'Rotate':
      return rotateBicubic(px, width, height, a, hp.fill);
    case 'ShearX':
      return affine([1, a, 0, 0, 1, 0]);
    case 'ShearY':
      return affine([1, 0, 0, a, 1, 0]);
    case 'TranslateX':
      return affine([1, 0, a, 0, 1, 0]);
    case 'TranslateY':
      return affine([1, 0, 0, 0, 1, a]);
    case 'TranslateXRel':
      return affine([1, 0, a * width, 0, 1, 0]);
    case 'TranslateYRel':
      return affine([1, 0, 0, 0, 1, a * height]);
    case 'Posterize':
      return a >= 8 ? px.slice() : posterize(px, a);
    case 'Solarize':
      return solarize(px, a);
    case 'SolarizeAdd':
      return solarizeAdd(px, a, 128);
    case 'Color':
      return color(px, a);
    case 'Contrast':
      return contrast(px, width, height, a);
    case 'Brightness':
      return brightness(px, a);
    case 'Sharpness':
      return sharpness(px, width, height, a);
  }
}

export interface AaOpDraw {
  op: AaOp;
  prob: number;
  magnitude: number;
  /** Whether the op ran. */
  applied: boolean;
  /** The sign draw of a signed op that ran (false otherwise). */
  negated: boolean;
  /** The argument it ran with (null when it did not run or takes none). */
  arg: number | null;
}

export interface AaDraw {
  policy: 'v0';
  /** Index into AA_V0_POLICY. */
  subPolicy: number;
  ops: AaOpDraw[];
}

/** What the sampler needs of a random source (an `Rng`, or recorded draws in tests). */
export type UniformSource = Pick<Rng, 'int' | 'float'>;

/** Draw one AutoAugment 'v0' application (see the module comment for the order of draws). */
export function sampleAutoAugment(rng: UniformSource, hp: AaHparams): AaDraw {
  const subPolicy = rng.int(AA_V0_POLICY.length);
  const ops = AA_V0_POLICY[subPolicy]!.map(([op, prob, magnitude]): AaOpDraw => {
    const applied = !(prob < 1 && rng.float() > prob);
    if (!applied) return { op, prob, magnitude, applied, negated: false, arg: null };
    const negated = AA_SIGNED.has(op) && rng.float() > 0.5;
    return { op, prob, magnitude, applied, negated, arg: aaLevelToArg(op, magnitude, negated, hp) };
  });
  return { policy: 'v0', subPolicy, ops };
}

/** Apply a drawn sub-policy: its ops that ran, in order. */
export function applyAaDraw(px: Uint8Array, width: number, height: number, draw: AaDraw, hp: AaHparams): Uint8Array {
  let out = px;
  for (const o of draw.ops) if (o.applied) out = applyAaOp(out, width, height, o.op, o.arg, hp);
  return out === px ? px.slice() : out;
}

/** timm `AutoAugment(auto_augment_policy('v0', hparams))` on an RGB uint8 image; hparams default to `aaHparams(min side)`. */
export function autoAugmentV0(px: Uint8Array, width: number, height: number, rng: UniformSource, hp: AaHparams = aaHparams(Math.min(width, height))): { pixels: Uint8Array; draw: AaDraw } {
  const draw = sampleAutoAugment(rng, hp);
  return { pixels: applyAaDraw(px, width, height, draw, hp), draw };
}
