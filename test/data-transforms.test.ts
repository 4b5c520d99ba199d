import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Rng } from '../src/util/rng.js';
import {
  sampleRandomResizedCrop,
  decodeTrain,
  decodeEval,
  loadEvalImage,
  preShrinkFactor,
  IMAGENET_MEAN,
  IMAGENET_STD,
  denormalize,
  normalizeRgb,
} from '../src/data/index.js';

/** A smooth but non-symmetric RGB test image (gradients + low-frequency waves). */
function testPixels(w: number, h: number): Buffer {
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      px[i] = Math.round((255 * x) / (w - 1));
      px[i + 1] = Math.round(127.5 + 100 * Math.sin(x / 7) * Math.cos(y / 11));
      px[i + 2] = Math.round((255 * y) / (h - 1));
    }
  }
  return px;
}

function png(px: Buffer, w: number, h: number): Promise<Buffer> {
  return sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}

/** Normalised float → uint8-scale value. */
function toPixel(x: Float32Array): Float64Array {
  const d = denormalize(x);
  return Float64Array.from(d, (v) => v * 255);
}

test('RandomResizedCrop: area and aspect ratio stay within the ranges over many draws', () => {
  const W = 500;
  const H = 375;
  const scale: [number, number] = [0.67, 1];
  const ratio: [number, number] = [3 / 4, 4 / 3];
  let minS = Infinity;
  let maxS = -Infinity;
  let fallbacks = 0;
  let sumS = 0;
  const N = 4000;
  for (let i = 0; i < N; i++) {
    const c = sampleRandomResizedCrop(Rng.from(7, 'aug', 0, i), W, H, scale, ratio);
    assert.ok(c.left >= 0 && c.top >= 0 && c.left + c.width <= W && c.top + c.height <= H, `box inside image: ${JSON.stringify(c)}`);
    if (c.fallback) {
      fallbacks++;
      continue;
    }
    const s = (c.width * c.height) / (W * H);
    // rounding of w and h to integers moves the area/ratio by at most ~1 px per side
    assert.ok(s >= scale[0] - 0.01 && s <= scale[1] + 0.01, `scale ${s}`);
    const r = c.width / c.height;
    assert.ok(r >= ratio[0] - 0.01 && r <= ratio[1] + 0.01, `ratio ${r}`);
    minS = Math.min(minS, s);
    maxS = Math.max(maxS, s);
    sumS += s;
  }
  // with scale ≥ 0.67 on a 4:3 image almost every draw fits within the 10 attempts
  assert.ok(fallbacks < N * 0.05, `fallbacks ${fallbacks}`);
  assert.ok(minS < 0.7 && maxS > 0.95, `scales cover the range: ${minS}..${maxS}`);
  const mean = sumS / (N - fallbacks);
  assert.ok(mean > 0.75 && mean < 0.9, `mean scale ${mean}`);
});

test('RandomResizedCrop: finetune scale 0.08-1 reaches small crops; offsets are uniform-ish', () => {
  let small = 0;
  let leftHalf = 0;
  let n = 0;
  for (let i = 0; i < 2000; i++) {
    const c = sampleRandomResizedCrop(Rng.from(3, 'aug', 1, i), 400, 400, [0.08, 1], [3 / 4, 4 / 3]);
    const s = (c.width * c.height) / 160000;
    assert.ok(s >= 0.075 && s <= 1.0001);
    if (s < 0.2) small++;
    if (c.width <= 200) {
      n++;
      if (c.left + c.width / 2 < 200) leftHalf++;
    }
  }
  assert.ok(small > 100, `small crops ${small}`);
  assert.ok(leftHalf / n > 0.4 && leftHalf / n < 0.6, `crop centres balanced: ${leftHalf}/${n}`);
});

test('RandomResizedCrop: central-crop fallback when no attempt fits', () => {
  // a very wide image: with ratio ≤ 4/3 and scale ≥ 0.9, no box of 90% of the area fits in the height
  const c = sampleRandomResizedCrop(Rng.from(1, 'aug', 0, 0), 1000, 100, [0.9, 1], [3 / 4, 4 / 3]);
  assert.equal(c.fallback, true);
  assert.equal(c.height, 100);
  assert.equal(c.width, 133); // round(100 * 4/3)
  assert.equal(c.left, Math.floor((1000 - 133) / 2));
  assert.equal(c.top, 0);
  // a very tall image: width kept, height = round(w / (3/4))
  const t = sampleRandomResizedCrop(Rng.from(1, 'aug', 0, 1), 100, 1000, [0.9, 1], [3 / 4, 4 / 3]);
  assert.equal(t.fallback, true);
  assert.deepEqual([t.width, t.height, t.left, t.top], [100, 133, 0, Math.floor((1000 - 133) / 2)]);
  // in-range aspect but impossible scale (> 1): whole image
  const w = sampleRandomResizedCrop(Rng.from(1, 'aug', 0, 2), 120, 100, [1.5, 2], [3 / 4, 4 / 3]);
  assert.deepEqual([w.fallback, w.width, w.height, w.left, w.top], [true, 120, 100, 0, 0]);
});

test('train transform = sharp bicubic resize of the sampled crop (not bilinear / lanczos), then normalise', async () => {
  const W = 120;
  const H = 90;
  const buf = await png(testPixels(W, H), W, H);
  const size = 48;
  const t = { size, scale: [0.3, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], hflip: 0 };
  for (let i = 0; i < 3; i++) {
    const r = await decodeTrain(buf, t, Rng.from(5, 'aug', 0, i));
    const c = r.crop!;
    assert.equal(r.flipped, false);
    const ref = async (kernel: 'cubic' | 'linear' | 'lanczos3' | 'nearest') =>
      sharp(buf).extract({ left: c.left, top: c.top, width: c.width, height: c.height }).resize(size, size, { fit: 'fill', kernel }).raw().toBuffer();
    const got = toPixel(r.data);
    const err = async (k: 'cubic' | 'linear' | 'lanczos3' | 'nearest') => {
      const px = await ref(k);
      let m = 0;
      for (let j = 0; j < px.length; j++) m = Math.max(m, Math.abs(got[j]! - px[j]!));
      return m;
    };
    const eCubic = await err('cubic');
    assert.ok(eCubic <= 0.51, `matches sharp cubic within rounding: ${eCubic}`);
    assert.ok((await err('nearest')) > 2, 'differs from nearest');
    assert.ok((await err('lanczos3')) > eCubic, 'differs from lanczos3');
    assert.ok((await err('linear')) > eCubic, 'differs from bilinear');
  }
});

test('horizontal flip mirrors rows; p = 0 never flips, p = 1 always flips', async () => {
  const W = 64;
  const H = 64;
  const buf = await png(testPixels(W, H), W, H);
  const base = { size: 32, scale: [0.5, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number] };
  const a = await decodeTrain(buf, { ...base, hflip: 0 }, Rng.from(9, 'aug', 0, 0));
  const b = await decodeTrain(buf, { ...base, hflip: 1 }, Rng.from(9, 'aug', 0, 0));
  assert.deepEqual(a.crop, b.crop, 'same crop: the flip draw comes after the crop draws');
  assert.equal(a.flipped, false);
  assert.equal(b.flipped, true);
  const S = 32;
  for (let y = 0; y < S; y += 5) {
    for (let x = 0; x < S; x++) {
      for (let c = 0; c < 3; c++) assert.equal(b.data[(y * S + x) * 3 + c], a.data[(y * S + (S - 1 - x)) * 3 + c]);
    }
  }
  let flips = 0;
  for (let i = 0; i < 200; i++) {
    const r = await decodeTrain(buf, { ...base, size: 8, hflip: 0.5 }, Rng.from(9, 'aug', 0, i));
    if (r.flipped) flips++;
  }
  assert.ok(flips > 70 && flips < 130, `p=0.5 flips ${flips}/200`);
});

test('normalisation of a known pixel: (v/255 - mean) / std per channel', async () => {
  const px = Buffer.alloc(16 * 16 * 3);
  for (let i = 0; i < px.length; i += 3) {
    px[i] = 255;
    px[i + 1] = 128;
    px[i + 2] = 0;
  }
  const buf = await png(px, 16, 16);
  const expect = [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0 - 0.406) / 0.225];
  const r = await decodeTrain(buf, { size: 8, scale: [0.67, 1], ratio: [3 / 4, 4 / 3], hflip: 0.5 }, Rng.from(1, 'aug', 0, 0));
  for (let i = 0; i < r.data.length; i++) assert.ok(Math.abs(r.data[i]! - expect[i % 3]!) < 1e-5, `value ${i}: ${r.data[i]}`);
  assert.deepEqual([...IMAGENET_MEAN], [0.485, 0.456, 0.406]);
  assert.deepEqual([...IMAGENET_STD], [0.229, 0.224, 0.225]);
  // denormalize inverts
  const back = denormalize(normalizeRgb(new Uint8Array([255, 128, 0]), 1, 1));
  assert.ok(Math.abs(back[0]! - 1) < 1e-6 && Math.abs(back[1]! - 128 / 255) < 1e-6 && Math.abs(back[2]!) < 1e-6);
});

test('eval transform: shorter side → size (bilinear), center crop; cropPct 0.95 resizes to floor(size/0.95)', async () => {
  const W = 100;
  const H = 60;
  const buf = await png(testPixels(W, H), W, H);
  const size = 32;
  const dir = await mkdtemp(path.join(tmpdir(), 'spark-eval-'));
  const file = path.join(dir, 'img.png');
  await writeFile(file, buf);
  const got = toPixel(await loadEvalImage(file, size));
  await rm(dir, { recursive: true, force: true });
  // torchvision: Resize(32) → 53×32 (int(32*100/60) = 53), center crop left = round((53-32)/2) = 10 (round half even of 10.5)
  const ref = await sharp(buf).resize(53, 32, { fit: 'fill', kernel: 'linear' }).extract({ left: 10, top: 0, width: 32, height: 32 }).raw().toBuffer();
  let m = 0;
  for (let j = 0; j < ref.length; j++) m = Math.max(m, Math.abs(got[j]! - ref[j]!));
  assert.ok(m <= 0.51, `eval matches resize+center crop: ${m}`);
  const ft = toPixel((await decodeEval(buf, size, { cropPct: 0.95, interpolation: 'bicubic' })).data);
  // floor(32/0.95) = 33 → 55×33; crop left round(11.5) = 12, top round(0.5) = 0
  const ref2 = await sharp(buf).resize(55, 33, { fit: 'fill', kernel: 'cubic' }).extract({ left: 12, top: 0, width: 32, height: 32 }).raw().toBuffer();
  m = 0;
  for (let j = 0; j < ref2.length; j++) m = Math.max(m, Math.abs(ft[j]! - ref2[j]!));
  assert.ok(m <= 0.51, `ft eval: ${m}`);
});

test('shrink-on-load path for large JPEG crops is equivalent to cropping the full-resolution image', async () => {
  const W = 1600;
  const H = 1200;
  const jpg = await sharp(testPixels(W, H), { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 95 }).toBuffer();
  const size = 64;
  assert.equal(preShrinkFactor('png', 1500, 1500, size), 1);
  assert.ok(preShrinkFactor('jpeg', 1500, 1100, size) >= 4);
  const t = { size, scale: [0.67, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], hflip: 0 };
  const r = await decodeTrain(jpg, t, Rng.from(2, 'aug', 0, 0));
  assert.ok(r.preShrink! >= 4, `pre-shrink used: ${r.preShrink}`);
  const c = r.crop!;
  const ref = await sharp(jpg).extract({ left: c.left, top: c.top, width: c.width, height: c.height }).resize(size, size, { fit: 'fill', kernel: 'cubic' }).raw().toBuffer();
  const got = toPixel(r.data);
  let sum = 0;
  for (let j = 0; j < ref.length; j++) sum += Math.abs(got[j]! - ref[j]!);
  const mae = sum / ref.length;
  assert.ok(mae < 2, `mean abs difference ${mae} (of 255)`);
});

test('grey and RGBA inputs become 3-channel RGB (alpha dropped, like PIL convert("RGB"))', async () => {
  const grey = await sharp(Buffer.alloc(20 * 20, 200), { raw: { width: 20, height: 20, channels: 1 } }).png().toBuffer();
  const rgba = Buffer.alloc(20 * 20 * 4);
  for (let i = 0; i < rgba.length; i += 4) {
    rgba[i] = 10;
    rgba[i + 1] = 20;
    rgba[i + 2] = 30;
    rgba[i + 3] = 7; // nearly transparent: PIL's convert('RGB') keeps the colour
  }
  const rgbaPng = await sharp(rgba, { raw: { width: 20, height: 20, channels: 4 } }).png().toBuffer();
  const t = { size: 8, scale: [0.67, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], hflip: 0 };
  const g = toPixel((await decodeTrain(grey, t, Rng.from(0, 'aug', 0, 0))).data);
  const c = toPixel((await decodeTrain(rgbaPng, t, Rng.from(0, 'aug', 0, 0))).data);
  assert.equal(g.length, 8 * 8 * 3);
  for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i]! - 200) < 0.51, `grey ${g[i]}`);
  for (let i = 0; i < c.length; i++) assert.ok(Math.abs(c[i]! - [10, 20, 30][i % 3]!) < 0.51, `rgba ${c[i]}`);
});
