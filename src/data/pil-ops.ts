/**
 * Pillow's pixel operations on interleaved RGB uint8 buffers (HWC), byte for byte: what torchvision's
 * TrivialAugmentWide (trivial-augment.ts) and timm's AutoAugment (auto-augment.ts) call on PIL images. Checked against
 * Pillow 12.3 output in test/fixtures/augment/ (scripts/make-augment-fixtures.py).
 * - `affineBicubic` is `Image.transform(size, AFFINE, m, BICUBIC, fillcolor)`: cubic convolution with a = −1 on the
 *   inverse-mapped pixel centre, neighbours clamped at the edges, result clipped to 0..255 and truncated; the fill
 *   colour where the inverse-mapped centre falls outside the image. `rotateBicubic` is `Image.rotate(angle, BICUBIC,
 *   expand=False, fillcolor)` (exact transposes for 0/90/180/270° as Pillow takes them).
 * - The enhancers (`ImageEnhance.Brightness/Color/Contrast/Sharpness(img).enhance(factor)`) blend with a degenerate
 *   image (black / grey / mean grey / 3×3 SMOOTH) in float32 like `Image.blend`.
 * - Posterize, Solarize, SolarizeAdd (timm's), Invert, AutoContrast and Equalize are lookup tables (`ImageOps`).
 * Every function returns a new buffer.
 */

export type Rgb = readonly [number, number, number];

const BLACK: Rgb = [0, 0, 0];
const DEG2RAD = Math.PI / 180;

// ---------------------------------------------------------------------------------------------------------------
// geometry

/** Pillow's cubic convolution step (a = −1) between v2 and v3 at fraction d. */
function cubic(v1: number, v2: number, v3: number, v4: number, d: number): number {
  const p2 = -v1 + v3;
  const p3 = 2 * (v1 - v2) + v3 - v4;
  const p4 = -v1 + v2 - v3 + v4;
  return v2 + d * (p2 + d * (p3 + d * p4));
}

/**
 * Pillow `Image.transform(size, AFFINE, m, BICUBIC, fillcolor=fill)` of an RGB image: output pixel (x, y) samples the
 * input at m·(x + ½, y + ½); centres outside [0, W) × [0, H) take `fill` (default black).
 */
export function affineBicubic(src: Uint8Array, width: number, height: number, m: readonly number[], fill: Rgb = BLACK): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  const [a0, a1, a2, a3, a4, a5] = m as [number, number, number, number, number, number];
  const [f0, f1, f2] = fill;
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
      const o = (y * width + x) * 3;
      if (!(xin >= 0 && xin < width && yin >= 0 && yin < height)) {
        out[o] = f0;
        out[o + 1] = f1;
        out[o + 2] = f2;
        continue;
      }
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

/** Pillow `Image.rotate(angle, BICUBIC, expand=False, fillcolor=fill)` (counter-clockwise degrees, about the centre). */
export function rotateBicubic(src: Uint8Array, width: number, height: number, angleDeg: number, fill: Rgb = BLACK): Uint8Array {
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
  return affineBicubic(src, width, height, m, fill);
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

/** `ImageEnhance.Brightness(img).enhance(factor)`: blend with black. */
export function brightness(px: Uint8Array, factor: number): Uint8Array {
  return blend(new Uint8Array(px.length), px, factor);
}

/** `ImageEnhance.Color(img).enhance(factor)`: blend with the image's grey (L) version. */
export function color(px: Uint8Array, factor: number): Uint8Array {
  return blend(greyRgb(px), px, factor);
}

/** `ImageEnhance.Contrast(img).enhance(factor)`: blend with the mean grey level (rounded). */
export function contrast(px: Uint8Array, width: number, height: number, factor: number): Uint8Array {
  let sum = 0;
  for (let i = 0; i < px.length; i += 3) sum += luma(px[i]!, px[i + 1]!, px[i + 2]!);
  const mean = Math.trunc(sum / (width * height) + 0.5);
  return blend(new Uint8Array(px.length).fill(mean), px, factor);
}

/** `ImageEnhance.Sharpness(img).enhance(factor)`: blend with the SMOOTH-filtered image. */
export function sharpness(px: Uint8Array, width: number, height: number, factor: number): Uint8Array {
  return blend(smooth(px, width, height), px, factor);
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

/** `ImageOps.posterize(img, bits)`: keep the `bits` most significant bits (0 = black, 8 = unchanged). */
export function posterize(px: Uint8Array, bits: number): Uint8Array {
  const mask = ~(2 ** (8 - Math.trunc(bits)) - 1) & 0xff;
  return applyLut(px, (v) => v & mask);
}

/** `ImageOps.solarize(img, threshold)`: values ≥ threshold are inverted. */
export function solarize(px: Uint8Array, threshold: number): Uint8Array {
  return applyLut(px, (v) => (v < threshold ? v : 255 - v));
}

/** timm's `solarize_add(img, add, thresh=128)`: values below the threshold get `add` (capped at 255). */
export function solarizeAdd(px: Uint8Array, add: number, threshold = 128): Uint8Array {
  return applyLut(px, (v) => (v < threshold ? Math.min(255, v + add) : v));
}

/** `ImageOps.invert(img)`: 255 − v. */
export function invert(px: Uint8Array): Uint8Array {
  return applyLut(px, (v) => 255 - v);
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
