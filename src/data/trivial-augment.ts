/**
 * TrivialAugmentWide (Müller & Hutter 2021) with the semantics of torchvision's
 * `transforms.TrivialAugmentWide(interpolation=BICUBIC)` applied to a PIL image, as in the reference fine-tuning
 * transform (spec §7.4 step 3): one of 14 ops drawn uniformly, one of 31 magnitude bins drawn uniformly (ops with a
 * magnitude range), and signed ops negated with probability ½. It works on an interleaved RGB uint8 buffer (HWC).
 *
 * Pixel semantics follow Pillow, which torchvision calls for PIL images (checked against Pillow 12.3 output in
 * test/fixtures/augment/, written by scripts/make-augment-fixtures.py):
 * - geometric ops (ShearX/Y, TranslateX/Y, Rotate) are `Image.transform(AFFINE)` with **bicubic** resampling as Pillow
 *   implements it (cubic convolution with a = −1 on the inverse-mapped pixel centre, neighbours clamped at the edges,
 *   result clipped to 0..255 and truncated), **fill 0** where the inverse-mapped centre falls outside the image;
 *   Rotate by 0/90/180/270° of a square image is Pillow's exact transpose;
 * - Brightness / Color / Contrast / Sharpness blend with a degenerate image (black / grey / mean grey / 3×3 SMOOTH)
 *   by factor 1 + magnitude, in float32 like `Image.blend`;
 * - Posterize, Solarize, AutoContrast and Equalize are `ImageOps` lookup tables.
 * The draw order on the caller's `Rng` is: op index, magnitude bin (ops with magnitudes), sign (signed ops).
 */
import type { Rng } from '../util/rng.js';

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

/** Pillow's cubic convolution step (a = −1) between v2 and v3 at fraction d. */
function cubic(v1: number, v2: number, v3: number, v4: number, d: number): number {
  const p2 = -v1 + v3;
  const p3 = 2 * (v1 - v2) + v3 - v4;
  const p4 = -v1 + v2 - v3 + v4;
  return v2 + d * (p2 + d * (p3 + d * p4));
}

/**
 * Pillow `Image.transform(size, AFFINE, m, BICUBIC, fillcolor=0)` of an RGB image: output pixel (x, y) samples the
 * input at m·(x + ½, y + ½); centres outside [0, W) × [0, H) are 0.
 */
export function affineBicubic(src: Uint8Array, width: number, height: number, m: readonly number[]): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  const [a0, a1, a2, a3, a4, a5] = m as [number, number, number, number, number, number];
  const clampX = (x: number) => (x < 0 ? 0 : x >= width ? width - 1 : x);
  const clampY = (y: number) => (y < 0 ? 0 : y >= height ? height - 1 : y);
  const cols = [0, 0, 0, 0];
  const rows = [0, 0, 0, 0];
  const v = [0, 0, 0, 0];
  for (let y = 0; y < height; y++) {
    const yc = y + 0.5;
    for (let x = 0; x < width; x++) {
      const xc = x + 0.5;
      let xin = a0 * xc + a1 * yc + a2;
      let yin = a3 * xc + a4 * yc + a5;
      if (!(xin >= 0 && xin < width && yin >= 0 && yin < height)) continue; // fill 0
      xin -= 0.5;
      yin -= 0.5;
      const xf = Math.floor(xin);
      const yf = Math.floor(yin);
      const dx = xin - xf;
      const dy = yin - yf;
      for (let k = 0; k < 4; k++) {
        cols[k] = clampX(xf - 1 + k) * 3;
        rows[k] = clampY(yf - 1 + k) * width * 3;
      }
      const o = (y * width + x) * 3;
      for (let ch = 0; ch < 3; ch++) {
        for (let k = 0; k < 4; k++) {
          const r = rows[k]! + ch;
          v[k] = cubic(src[r + cols[0]!]!, src[r + cols[1]!]!, src[r + cols[2]!]!, src[r + cols[3]!]!, dx);
        }
        const val = cubic(v[0]!, v[1]!, v[2]!, v[3]!, dy);
        out[o + ch] = val <= 0 ? 0 : val >= 255 ? 255 : Math.trunc(val);
      }
    }
  }
  return out;
}

/** Pillow's exact transposes: 90 = counter-clockwise, 270 = clockwise, 180. */
function transpose(src: Uint8Array, width: number, height: number, angle: 90 | 180 | 270): Uint8Array {
  const out = new Uint8Array(src.length);
  const ow = angle === 180 ? width : height;
  const oh = angle === 180 ? height : width;
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      let sx: number;
      let sy: number;
      if (angle === 90) [sx, sy] = [width - 1 - y, x];
      else if (angle === 270) [sx, sy] = [y, height - 1 - x];
      else [sx, sy] = [width - 1 - x, height - 1 - y];
      const i = (sy * width + sx) * 3;
      const o = (y * ow + x) * 3;
      out[o] = src[i]!;
      out[o + 1] = src[i + 1]!;
      out[o + 2] = src[i + 2]!;
    }
  }
  return out;
}

/** Python's round(x, 15) for the rotation matrix entries (as Pillow's `Image.rotate`). */
const round15 = (x: number) => Number(x.toFixed(15));

/** Pillow `Image.rotate(angle, BICUBIC, expand=False, fillcolor=0)` (counter-clockwise degrees, about the centre). */
export function rotateBicubic(src: Uint8Array, width: number, height: number, angleDeg: number): Uint8Array {
  let angle = angleDeg % 360;
  if (angle !== 0 && angle < 0) angle += 360;
  if (angle === 0) return src.slice();
  if (angle === 180) return transpose(src, width, height, 180);
  if ((angle === 90 || angle === 270) && width === height) return transpose(src, width, height, angle);
  const r = -(angle * DEG2RAD);
  const m = [round15(Math.cos(r)), round15(Math.sin(r)), 0, round15(-Math.sin(r)), round15(Math.cos(r)), 0];
  const cx = width / 2;
  const cy = height / 2;
  m[2] = m[0]! * -cx + m[1]! * -cy + m[2]!;
  m[5] = m[3]! * -cx + m[4]! * -cy + m[5]!;
  m[2] += cx;
  m[5] += cy;
  return affineBicubic(src, width, height, m);
}

// ---------------------------------------------------------------------------------------------------------------
// colour

/** `Image.blend(degenerate, img, factor)` in float32 (clipped when extrapolating, truncated). */
function blend(degenerate: Uint8Array, img: Uint8Array, factor: number): Uint8Array {
  const f = Math.fround;
  const alpha = f(factor);
  const out = new Uint8Array(img.length);
  const inside = alpha >= 0 && alpha <= 1;
  for (let i = 0; i < img.length; i++) {
    const d = degenerate[i]!;
    const t = f(d + f(alpha * (img[i]! - d)));
    out[i] = inside ? Math.trunc(t) : t <= 0 ? 0 : t >= 255 ? 255 : Math.trunc(t);
  }
  return out;
}

/** Pillow's RGB → L (ITU-R 601-2 with rounding). */
function luma(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
}

function greyRgb(px: Uint8Array): Uint8Array {
  const out = new Uint8Array(px.length);
  for (let i = 0; i < px.length; i += 3) {
    const l = luma(px[i]!, px[i + 1]!, px[i + 2]!);
    out[i] = l;
    out[i + 1] = l;
    out[i + 2] = l;
  }
  return out;
}

/** Pillow's 3×3 SMOOTH filter (kernel 1 1 1 / 1 5 1 / 1 1 1, scale 13); border pixels are copied. */
function smooth(px: Uint8Array, width: number, height: number): Uint8Array {
  const f = Math.fround;
  const out = px.slice();
  const k1 = f(1 / 13);
  const k5 = f(5 / 13);
  const row = width * 3;
  for (let y = 1; y < height - 1; y++) {
    for (let x = 1; x < width - 1; x++) {
      for (let c = 0; c < 3; c++) {
        const i = y * row + x * 3 + c;
        const up = i - row;
        const dn = i + row;
        // Pillow sums the row below, the row, then the row above, each as a 3-tap float32 dot product
        const r1 = f(f(f(px[dn - 3]! * k1) + f(px[dn]! * k1)) + f(px[dn + 3]! * k1));
        const r0 = f(f(f(px[i - 3]! * k1) + f(px[i]! * k5)) + f(px[i + 3]! * k1));
        const r_1 = f(f(f(px[up - 3]! * k1) + f(px[up]! * k1)) + f(px[up + 3]! * k1));
        const ss = f(f(r1 + r0) + r_1);
        out[i] = ss <= 0 ? 0 : ss >= 255 ? 255 : Math.trunc(f(ss + 0.5));
      }
    }
  }
  return out;
}

function applyLut(px: Uint8Array, lut: (v: number, channel: number) => number): Uint8Array {
  const tables = [0, 1, 2].map((c) => Uint8Array.from({ length: 256 }, (_, v) => Math.max(0, Math.min(255, lut(v, c)))));
  const out = new Uint8Array(px.length);
  for (let i = 0; i < px.length; i++) out[i] = tables[i % 3]![px[i]!]!;
  return out;
}

function histograms(px: Uint8Array): Int32Array[] {
  const h = [new Int32Array(256), new Int32Array(256), new Int32Array(256)];
  for (let i = 0; i < px.length; i++) h[i % 3]![px[i]!]!++;
  return h;
}

/** `ImageOps.autocontrast(img)` (cutoff 0): per channel, [lo, hi] → [0, 255]. */
export function autocontrast(px: Uint8Array): Uint8Array {
  const luts = histograms(px).map((h) => {
    let lo = 0;
    while (lo < 255 && !h[lo]) lo++;
    let hi = 255;
    while (hi > 0 && !h[hi]) hi--;
    if (hi <= lo) return (v: number) => v;
    const scale = 255 / (hi - lo);
    const offset = -lo * scale;
    return (v: number) => Math.trunc(v * scale + offset);
  });
  return applyLut(px, (v, c) => luts[c]!(v));
}

/** `ImageOps.equalize(img)`: per channel, the cumulative histogram with Pillow's integer steps. */
export function equalize(px: Uint8Array): Uint8Array {
  const luts = histograms(px).map((h) => {
    const nz = [...h].filter((v) => v > 0);
    if (nz.length <= 1) return null;
    const step = Math.floor((nz.reduce((a, b) => a + b, 0) - nz[nz.length - 1]!) / 255);
    if (!step) return null;
    const lut = new Int32Array(256);
    let n = Math.floor(step / 2);
    for (let i = 0; i < 256; i++) {
      lut[i] = Math.floor(n / step);
      n += h[i]!;
    }
    return lut;
  });
  return applyLut(px, (v, c) => (luts[c] ? luts[c]![v]! : v));
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
      return blend(new Uint8Array(px.length), px, 1 + magnitude);
    case 'Color':
      return blend(greyRgb(px), px, 1 + magnitude);
    case 'Contrast': {
      let sum = 0;
      for (let i = 0; i < px.length; i += 3) sum += luma(px[i]!, px[i + 1]!, px[i + 2]!);
      const mean = Math.trunc(sum / (width * height) + 0.5);
      return blend(new Uint8Array(px.length).fill(mean), px, 1 + magnitude);
    }
    case 'Sharpness':
      return blend(smooth(px, width, height), px, 1 + magnitude);
    case 'Posterize': {
      const mask = ~(2 ** (8 - Math.trunc(magnitude)) - 1) & 0xff;
      return applyLut(px, (v) => v & mask);
    }
    case 'Solarize':
      return applyLut(px, (v) => (v < magnitude ? v : 255 - v));
    case 'AutoContrast':
      return autocontrast(px);
    case 'Equalize':
      return equalize(px);
  }
}
