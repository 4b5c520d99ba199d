/** ImageNet normalisation (ToTensor /255 then Normalize(mean, std)) and its inverse. Tensors are HWC / NHWC. */

export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

/** lut[c * 256 + v] = (v / 255 - mean[c]) / std[c]: uint8 value of channel c → normalised float. */
const LUT = (() => {
  const t = new Float32Array(768);
  for (let c = 0; c < 3; c++) {
    for (let v = 0; v < 256; v++) t[c * 256 + v] = (v / 255 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
  }
  return t;
})();

/**
 * Normalise interleaved RGB uint8 pixels (`width·height·3`, row-major HWC) into `out` at `offset`, optionally
 * mirroring each row (horizontal flip). Returns `out`.
 */
export function normalizeRgb(
  pixels: Uint8Array,
  width: number,
  height: number,
  flip = false,
  out: Float32Array = new Float32Array(width * height * 3),
  offset = 0,
): Float32Array {
  if (pixels.length < width * height * 3) throw new Error(`normalizeRgb: expected ${width * height * 3} bytes, got ${pixels.length}`);
  const rowLen = width * 3;
  for (let y = 0; y < height; y++) {
    const rowIn = y * rowLen;
    let o = offset + y * rowLen;
    if (!flip) {
      for (let i = rowIn, end = rowIn + rowLen; i < end; i += 3, o += 3) {
        out[o] = LUT[pixels[i]!]!;
        out[o + 1] = LUT[256 + pixels[i + 1]!]!;
        out[o + 2] = LUT[512 + pixels[i + 2]!]!;
      }
    } else {
      for (let i = rowIn + rowLen - 3; i >= rowIn; i -= 3, o += 3) {
        out[o] = LUT[pixels[i]!]!;
        out[o + 1] = LUT[256 + pixels[i + 1]!]!;
        out[o + 2] = LUT[512 + pixels[i + 2]!]!;
      }
    }
  }
  return out;
}

/** Inverse of the normalisation, `x·std + mean`, clamped to [0, 1] (interleaved RGB, any number of pixels). */
export function denormalize(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = i % 3;
    const v = x[i]! * IMAGENET_STD[c]! + IMAGENET_MEAN[c]!;
    out[i] = v < 0 ? 0 : v > 1 ? 1 : v;
  }
  return out;
}

/** `denormalize` then round to uint8 RGB (for writing PNGs). */
export function denormalizeToUint8(x: Float32Array): Uint8Array {
  const d = denormalize(x);
  const out = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i++) out[i] = Math.round(d[i]! * 255);
  return out;
}
