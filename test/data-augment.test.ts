/**
 * The fine-tuning augmentations of spec §7.4: TrivialAugmentWide (against Pillow output, the pixels torchvision
 * produces for PIL images), RandomErasing (timm), and their place in the train transform.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { patternPng } from './helpers/images.js';
import { Rng, roundHalfEven } from '../src/util/rng.js';
import { packageRoot } from '../src/util/paths.js';
import {
  TA_OPS,
  TA_BINS,
  TA_SPACE,
  applyTaOp,
  sampleTrivialAugment,
  trivialAugmentWide,
  decodeTrain,
  denormalizeToUint8,
  flipRgb,
  normalizeRgb,
  randomErasing,
  type TaOp,
} from '../src/data/index.js';

interface Fixture {
  pillow: string;
  images: Array<{ width: number; height: number; pixels: string; cases: Array<{ op: TaOp; magnitude: number; pixels: string }> }>;
}
const fixture = JSON.parse(readFileSync(path.join(packageRoot(), 'test', 'fixtures', 'augment', 'trivial-augment-pil.json'), 'utf8')) as Fixture;
const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

test('TrivialAugmentWide ops equal Pillow byte for byte (bicubic affine with fill 0, enhancers, ImageOps), square and non-square', () => {
  let cases = 0;
  const seen = new Set<string>();
  for (const im of fixture.images) {
    const src = b64(im.pixels);
    for (const c of im.cases) {
      const want = b64(c.pixels);
      const got = applyTaOp(src, im.width, im.height, c.op, c.magnitude);
      assert.equal(got.length, want.length);
      let diff = 0;
      for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) diff++;
      assert.equal(diff, 0, `${c.op}(${c.magnitude}) on ${im.width}×${im.height}: ${diff} of ${want.length} values differ from Pillow ${fixture.pillow}`);
      assert.notEqual(got, src, 'a new buffer');
      seen.add(c.op);
      cases++;
    }
  }
  assert.deepEqual([...seen].sort(), [...TA_OPS].sort(), 'every op is covered');
  assert.equal(cases, 148, `${cases} cases`);
  // the oracle is not vacuous: non-zero magnitudes change the image
  const im = fixture.images[0]!;
  for (const c of im.cases.filter((x) => x.op !== 'Identity' && x.magnitude !== 0 && !(x.op === 'Posterize' && x.magnitude === 8))) {
    assert.notDeepEqual(b64(c.pixels), b64(im.pixels), `${c.op}(${c.magnitude}) changes the image`);
  }
});

test('TrivialAugmentWide magnitude bins: 31 per op, torchvision ranges and Posterize 8→2 bits', () => {
  assert.equal(TA_OPS.length, 14);
  assert.equal(TA_BINS, 31);
  const f = Math.fround;
  for (const op of ['ShearX', 'ShearY', 'Brightness', 'Color', 'Contrast', 'Sharpness'] as const) {
    const m = TA_SPACE[op].magnitudes!;
    assert.equal(m.length, 31);
    assert.equal(m[0], 0);
    assert.equal(m[30], f(0.99));
    assert.ok(Math.abs(m[10]! - 0.33) < 1e-6);
    assert.equal(TA_SPACE[op].signed, true);
  }
  const tr = TA_SPACE.TranslateX.magnitudes!;
  assert.equal(tr[30], 32);
  assert.ok(Math.abs(tr[15]! - 16) < 1e-5);
  assert.deepEqual(TA_SPACE.Rotate.magnitudes, Array.from({ length: 31 }, (_, i) => 4.5 * i), 'rotate bins are exact multiples of 4.5°');
  assert.deepEqual(TA_SPACE.Posterize.magnitudes, [8, 8, 8, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 2, 2, 2]);
  assert.equal(TA_SPACE.Posterize.signed, false);
  const so = TA_SPACE.Solarize.magnitudes!;
  assert.equal(so[0], 255);
  assert.equal(so[30], 0);
  assert.equal(so[15], 127.5);
  assert.equal(TA_SPACE.Solarize.signed, false);
  for (const op of ['Identity', 'AutoContrast', 'Equalize'] as const) assert.equal(TA_SPACE[op].magnitudes, null);
});

test('TrivialAugmentWide draws: seeded, uniform over the 14 ops and 31 bins, signed ops negated about half the time', () => {
  const a = Array.from({ length: 50 }, (_, i) => sampleTrivialAugment(Rng.from(3, 'ta', i)));
  const b = Array.from({ length: 50 }, (_, i) => sampleTrivialAugment(Rng.from(3, 'ta', i)));
  assert.deepEqual(a, b);
  const rng = Rng.from(11, 'ta-stats');
  const N = 14000;
  const ops = new Map<string, number>();
  const bins = new Array<number>(31).fill(0);
  let signed = 0;
  let negative = 0;
  for (let i = 0; i < N; i++) {
    const d = sampleTrivialAugment(rng);
    ops.set(d.op, (ops.get(d.op) ?? 0) + 1);
    if (d.bin !== null) {
      bins[d.bin]!++;
      assert.equal(Math.abs(d.magnitude), TA_SPACE[d.op].magnitudes![d.bin]);
    } else {
      assert.equal(d.magnitude, 0);
    }
    if (TA_SPACE[d.op].signed && d.bin! > 0) {
      signed++;
      if (d.magnitude < 0) negative++;
    }
    if (!TA_SPACE[d.op].signed) assert.ok(d.magnitude >= 0);
  }
  assert.equal(ops.size, 14);
  for (const [op, n] of ops) assert.ok(Math.abs(n / N - 1 / 14) < 0.012, `${op}: ${n}`);
  const withBins = bins.reduce((s, x) => s + x, 0);
  for (let k = 0; k < 31; k++) assert.ok(Math.abs(bins[k]! / withBins - 1 / 31) < 0.012, `bin ${k}: ${bins[k]}`);
  assert.ok(Math.abs(negative / signed - 0.5) < 0.03, `negated ${negative} of ${signed}`);
  // the op applied is the drawn one
  const px = b64(fixture.images[0]!.pixels);
  const r = trivialAugmentWide(px, 16, 16, Rng.from(5, 'x'));
  assert.deepEqual(r.pixels, applyTaOp(px, 16, 16, r.draw.op, r.draw.magnitude));
});

test('train transform with TrivialAugmentWide = crop, flip, then the op on the uint8 crop, then normalise (same Rng stream)', async () => {
  const png = await patternPng(48, 40);
  const t = { size: 16, scale: [0.3, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], hflip: 0.5 };
  let flips = 0;
  const ops = new Set<string>();
  for (let k = 0; k < 24; k++) {
    const plain = await decodeTrain(png, t, Rng.from(9, 'aug', 0, k));
    const ta = await decodeTrain(png, { ...t, autoAugment: 'trivial_augment_wide' }, Rng.from(9, 'aug', 0, k));
    assert.deepEqual(ta.crop, plain.crop, 'the crop draws come first and are unchanged');
    assert.equal(ta.flipped, plain.flipped);
    assert.equal(plain.augment, undefined);
    const d = ta.augment!;
    ops.add(d.op);
    // rebuild: the plain transform's (already flipped) crop as uint8, then the drawn op on it
    const cropU8 = denormalizeToUint8(plain.data);
    assert.deepEqual(normalizeRgb(cropU8, 16, 16, false), plain.data, 'uint8 round trip is exact');
    if (plain.flipped) assert.deepEqual(normalizeRgb(flipRgb(cropU8, 16, 16), 16, 16, true), plain.data, 'flipRgb mirrors rows');
    const want = normalizeRgb(applyTaOp(cropU8, 16, 16, d.op, d.magnitude), 16, 16, false);
    assert.deepEqual(ta.data, want, `image ${k}: ${d.op}(${d.magnitude})`);
    if (plain.flipped) flips++;
  }
  assert.ok(flips > 0 && flips < 24);
  assert.ok(ops.size >= 6, `ops seen: ${[...ops].join(', ')}`);
});

test('RandomErasing (timm, mode pixel, one box): draw order, box constraints, N(0,1) noise inside and nothing outside', () => {
  const W = 40;
  const H = 30;
  const base = Float32Array.from({ length: W * H * 3 }, (_, i) => (i % 7) - 3);
  // p = 0: untouched, nothing drawn
  const r0 = Rng.from(1, 're');
  const x0 = base.slice();
  assert.deepEqual(randomErasing(x0, W, H, r0, { probability: 0 }), []);
  assert.deepEqual(x0, base);
  assert.equal(r0.float(), Rng.from(1, 're').float(), 'no draw consumed');
  // the reference algorithm written out with the same Rng: u, then per attempt area, log-aspect, top, left, CHW noise
  for (let s = 0; s < 40; s++) {
    const x = base.slice();
    const boxes = randomErasing(x, W, H, Rng.from(s, 're'), { probability: 1, mode: 'pixel', maxCount: 1 });
    const r = Rng.from(s, 're');
    assert.ok(r.float() <= 1);
    let want: { top: number; left: number; height: number; width: number } | null = null;
    const expected = base.slice();
    for (let a = 0; a < 10 && !want; a++) {
      const area = r.uniform(0.02, 1 / 3) * W * H;
      const ar = Math.exp(r.uniform(Math.log(0.3), Math.log(1 / 0.3)));
      const h = roundHalfEven(Math.sqrt(area * ar)); // Python's round()
      const w = roundHalfEven(Math.sqrt(area / ar));
      if (w < W && h < H) {
        want = { top: r.int(H - h + 1), left: r.int(W - w + 1), height: h, width: w };
        for (let c = 0; c < 3; c++) for (let yy = 0; yy < h; yy++) for (let xx = 0; xx < w; xx++) expected[((want.top + yy) * W + want.left + xx) * 3 + c] = r.normal();
      }
    }
    assert.deepEqual(boxes, want ? [want] : []);
    assert.deepEqual(x, expected, `seed ${s}`);
    const b = boxes[0]!;
    assert.ok(b.width < W && b.height < H && b.top + b.height <= H && b.left + b.width <= W);
    assert.ok(b.width * b.height >= 0.02 * W * H * 0.6 && b.width * b.height <= (W * H) / 3 + W + H, `area ${b.width * b.height}`);
  }
  // noise statistics inside a large box
  const big = new Float32Array(224 * 224 * 3);
  const [bb] = randomErasing(big, 224, 224, Rng.from(4, 're'), { probability: 1 });
  const vals: number[] = [];
  for (let y = bb!.top; y < bb!.top + bb!.height; y++) for (let x = bb!.left; x < bb!.left + bb!.width; x++) for (let c = 0; c < 3; c++) vals.push(big[(y * 224 + x) * 3 + c]!);
  const mean = vals.reduce((s, v) => s + v, 0) / vals.length;
  const sd = Math.sqrt(vals.reduce((s, v) => s + (v - mean) ** 2, 0) / vals.length);
  assert.ok(vals.length > 1000 && Math.abs(mean) < 0.05 && Math.abs(sd - 1) < 0.05, `n ${vals.length} mean ${mean} sd ${sd}`);
  assert.equal(big.reduce((n, v) => n + (v !== 0 ? 1 : 0), 0), vals.length, 'only the box is written');
  // p = 0.25: about a quarter of the images are erased
  let erased = 0;
  for (let i = 0; i < 4000; i++) if (randomErasing(new Float32Array(8 * 8 * 3), 8, 8, Rng.from(2, 're', i), { probability: 0.25 }).length) erased++;
  assert.ok(Math.abs(erased / 4000 - 0.25) < 0.025, `${erased} of 4000 erased`);
});

test('train transform with RandomErasing: the crop, flip and TrivialAugmentWide draws are unchanged; only the box differs', async () => {
  const png = await patternPng(40, 40, 53, 61, 7);
  const t = { size: 24, scale: [0.3, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], hflip: 0.5, autoAugment: 'trivial_augment_wide' as const };
  let hits = 0;
  for (let k = 0; k < 12; k++) {
    const a = await decodeTrain(png, t, Rng.from(3, 'aug', 1, k));
    const b = await decodeTrain(png, { ...t, randomErasing: 1 }, Rng.from(3, 'aug', 1, k));
    assert.deepEqual(b.crop, a.crop);
    assert.deepEqual(b.augment, a.augment);
    assert.equal(b.erased!.length, 1);
    const box = b.erased![0]!;
    for (let y = 0; y < 24; y++) {
      for (let x = 0; x < 24; x++) {
        const inside = y >= box.top && y < box.top + box.height && x >= box.left && x < box.left + box.width;
        for (let c = 0; c < 3; c++) {
          const i = (y * 24 + x) * 3 + c;
          if (!inside) assert.equal(b.data[i], a.data[i]);
          else if (b.data[i] !== a.data[i]) hits++;
        }
      }
    }
  }
  assert.ok(hits > 100);
});
