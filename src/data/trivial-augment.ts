/**
 * TrivialAugmentWide (Müller & Hutter 2021) with the semantics of torchvision's
 * `transforms.TrivialAugmentWide(interpolation=BICUBIC)` applied to a PIL image, as in the reference fine-tuning
 * transform (spec §7.4 step 3): one of 14 ops drawn uniformly, one of 31 magnitude bins drawn uniformly (ops with a
 * magnitude range), and signed ops negated with probability ½. It works on an interleaved RGB uint8 buffer (HWC).
 *
 * Pixel semantics follow Pillow, which torchvision calls for PIL images (the ops are in pil-ops.ts, checked against
 * Pillow 12.3 output in test/fixtures/augment/, written by scripts/make-augment-fixtures.py):
 * - geometric ops (ShearX/Y, TranslateX/Y, Rotate) are `Image.transform(AFFINE)` with **bicubic** resampling and
 *   **fill 0**, the matrix from torchvision's `_get_inverse_affine_matrix`; Rotate is `Image.rotate`;
 * - Brightness / Color / Contrast / Sharpness are the ImageEnhance blends by factor 1 + magnitude;
 * - Posterize, Solarize, AutoContrast and Equalize are `ImageOps` lookup tables.
 * The draw order on the caller's `Rng` is: op index, magnitude bin (ops with magnitudes), sign (signed ops).
 */
import type { Rng } from '../util/rng.js';
import { affineBicubic, autocontrast, brightness, color, contrast, equalize, posterize, rotateBicubic, sharpness, solarize } from './pil-ops.js';

export const TA_OPS = [
  'Identity',
  'ShearX',
  'ShearY',
  'TranslateX',
  'TranslateY',
  'Rotate',
  'Brightness',
  'Color',
  'Contrast',
  'Sharpness',
  'Posterize',
  'Solarize',
  'AutoContrast',
  'Equalize',
] as const;
export type TaOp = (typeof TA_OPS)[number];

/** Magnitude bins of TrivialAugmentWide. */
export const TA_BINS = 31;

/** `torch.linspace(start, end, steps)` in float32 (CPU kernel: the first half counts up from start, the rest down from end). */
export function linspaceF32(start: number, end: number, steps: number): number[] {
  const f = Math.fround;
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  return Array.from({ length: steps }, (_, i) => (i < half ? f(s + f(step * i)) : f(e - f(step * (steps - i - 1)))));
}

interface OpMeta {
  /** The 31 magnitudes, or null for ops without one (Identity, AutoContrast, Equalize). */
  magnitudes: readonly number[] | null;
  signed: boolean;
}

/** torchvision's "wide" augmentation space (31 bins). */
export const TA_SPACE: Readonly<Record<TaOp, OpMeta>> = (() => {
  const lin = (a: number, b: number) => linspaceF32(a, b, TA_BINS);
  return {
    Identity: { magnitudes: null, signed: false },
    ShearX: { magnitudes: lin(0, 0.99), signed: true },
    ShearY: { magnitudes: lin(0, 0.99), signed: true },
    TranslateX: { magnitudes: lin(0, 32), signed: true },
    TranslateY: { magnitudes: lin(0, 32), signed: true },
    Rotate: { magnitudes: lin(0, 135), signed: true },
    Brightness: { magnitudes: lin(0, 0.99), signed: true },
    Color: { magnitudes: lin(0, 0.99), signed: true },
    Contrast: { magnitudes: lin(0, 0.99), signed: true },
    Sharpness: { magnitudes: lin(0, 0.99), signed: true },
    // 8 − round(i / 5): 8 bits at bin 0 down to 2 bits at bin 30 (i / 5 never ties)
    Posterize: { magnitudes: Array.from({ length: TA_BINS }, (_, i) => 8 - Math.round(Math.fround(i / ((TA_BINS - 1) / 6)))), signed: false },
    Solarize: { magnitudes: lin(255, 0), signed: false },
    AutoContrast: { magnitudes: null, signed: false },
    Equalize: { magnitudes: null, signed: false },
  };
})();

export interface TaDraw {
  op: TaOp;
  /** Magnitude bin (null for ops without magnitudes). */
  bin: number | null;
  /** Signed magnitude passed to the op (0 for ops without magnitudes). */
  magnitude: number;
}

/** Draw one TrivialAugmentWide op: op index, then bin, then sign. */
export function sampleTrivialAugment(rng: Rng): TaDraw {
  const op = TA_OPS[rng.int(TA_OPS.length)]!;
  const meta = TA_SPACE[op];
  if (!meta.magnitudes) return { op, bin: null, magnitude: 0 };
  const bin = rng.int(meta.magnitudes.length);
  let magnitude = meta.magnitudes[bin]!;
  if (meta.signed && rng.float() < 0.5) magnitude = -magnitude;
  return { op, bin, magnitude };
}

/** Apply TrivialAugmentWide to an RGB uint8 image; returns the new pixels (a new buffer) and the draw. */
export function trivialAugmentWide(px: Uint8Array, width: number, height: number, rng: Rng): { pixels: Uint8Array; draw: TaDraw } {
  const draw = sampleTrivialAugment(rng);
  return { pixels: applyTaOp(px, width, height, draw.op, draw.magnitude), draw };
}

// ---------------------------------------------------------------------------------------------------------------
// geometry

const DEG2RAD = Math.PI / 180;
const RAD2DEG = 180 / Math.PI;

/**
 * torchvision's `_get_inverse_affine_matrix(center, angle, translate, scale, shear)`: the 2×3 matrix mapping output
 * coordinates to input coordinates of rotate-about-center ∘ shear ∘ translate (angles in degrees).
 */
export function inverseAffineMatrix(center: [number, number], angle: number, translate: [number, number], scale: number, shear: [number, number]): number[] {
  const rot = angle * DEG2RAD;
  const sx = shear[0] * DEG2RAD;
  const sy = shear[1] * DEG2RAD;
  const [cx, cy] = center;
  const [tx, ty] = translate;
  const a = Math.cos(rot - sy) / Math.cos(sy);
  const b = (-Math.cos(rot - sy) * Math.tan(sx)) / Math.cos(sy) - Math.sin(rot);
  const c = Math.sin(rot - sy) / Math.cos(sy);
  const d = (-Math.sin(rot - sy) * Math.tan(sx)) / Math.cos(sy) + Math.cos(rot);
  const m = [d, -b, 0, -c, a, 0].map((v) => v / scale);
  m[2]! += m[0]! * (-cx - tx) + m[1]! * (-cy - ty);
  m[5]! += m[3]! * (-cx - tx) + m[4]! * (-cy - ty);
  m[2]! += cx;
  m[5]! += cy;
  return m;
}

/**
 * One TrivialAugmentWide op with a given signed magnitude, as torchvision's `_apply_op` on a PIL image (bicubic, fill
 * 0). Returns a new buffer.
 */
export function applyTaOp(px: Uint8Array, width: number, height: number, op: TaOp, magnitude: number): Uint8Array {
  switch (op) {
    case 'Identity':
      return px.slice();
    case 'ShearX':
      return affineBicubic(px, width, height, inverseAffineMatrix([0, 0], 0, [0, 0], 1, [Math.atan(magnitude) * RAD2DEG, 0]));
    case 'ShearY':
      return affineBicubic(px, width, height, inverseAffineMatrix([0, 0], 0, [0, 0], 1, [0, Math.atan(magnitude) * RAD2DEG]));
    case 'TranslateX':
      return affineBicubic(px, width, height, inverseAffineMatrix([width * 0.5, height * 0.5], 0, [Math.trunc(magnitude), 0], 1, [0, 0]));
    case 'TranslateY':
      return affineBicubic(px, width, height, inverseAffineMatrix([width * 0.5, height * 0.5], 0, [0, Math.trunc(magnitude)], 1, [0, 0]));
    case 'Rotate':
      return rotateBicubic(px, width, height, magnitude);
    case 'Brightness':
      return brightness(px, 1 + magnitude);
    case 'Color':
      return color(px, 1 + magnitude);
    case 'Contrast':
      return contrast(px, width, height, 1 + magnitude);
    case 'Sharpness':
      return sharpness(px, width, height, 1 + magnitude);
    case 'Posterize':
      return posterize(px, magnitude);
    case 'Solarize':
      return solarize(px, magnitude);
    case 'AutoContrast':
      return autocontrast(px);
    case 'Equalize':
      return equalize(px);
  }
}
