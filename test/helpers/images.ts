/** Small encoded test images for the data tests. */
import sharp from 'sharp';

/**
 * A w×h RGB PNG of a busy, deterministic byte pattern: byte i = (i·mul + floor(i / period)·step) mod 256 (every
 * pixel differs from its neighbours, so any crop, flip or pixel op shows).
 */
export function patternPng(w: number, h: number, mul = 37, period = 97, step = 11): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * mul + Math.floor(i / period) * step) % 256;
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}
