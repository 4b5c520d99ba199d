import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { renderReconstructionGrid, gridLayout, parseMaskString, tileMask, fixedValidationBatch, type ReconstructionModel } from '../src/ui/reconstruction.js';
import { normalizeRgb } from '../src/data/normalize.js';
import { syntheticImage } from '../src/data/synthetic.js';
import { buildSparK } from '../src/models/spark.js';
import { Rng } from '../src/util/rng.js';
import { UsageError } from '../src/util/errors.js';
import { demoConfig } from '../src/ui/demo.js';

const MEAN_GREY = [124, 116, 104]; // round(255 · ImageNet mean)

function images(n: number, size: number, seed = 3): Float32Array[] {
  return Array.from({ length: n }, (_, i) => normalizeRgb(syntheticImage(seed, i, size), size, size));
}

/** Nearest upsampling of [B,f,f,1] by r in NHWC. */
function upsample(mask: tf.Tensor4D, r: number): tf.Tensor4D {
  const [b, f] = mask.shape;
  return tf.tile(mask.reshape([b, f, 1, f, 1, 1]), [1, 1, r, 1, r, 1]).reshape([b, f * r, f * r, 1]) as tf.Tensor4D;
}

/** A stand-in model: the "prediction" is a constant +1 in normalised space, composited per spec §4.5. */
function fakeModel(size: number, f: number, keep: number): ReconstructionModel & { calls: number } {
  const m = {
    calls: 0,
    makeMask(batch: number, rng: Rng): tf.Tensor4D {
      const d = new Float32Array(batch * f * f);
      for (let b = 0; b < batch; b++) for (const i of rng.permutation(f * f).slice(0, keep)) d[b * f * f + i] = 1;
      return tf.tensor4d(d, [batch, f, f, 1]);
    },
    reconstruct(x: tf.Tensor4D, mask: tf.Tensor4D) {
      m.calls++;
      return tf.tidy(() => {
        const up = upsample(mask, size / f);
        const masked = tf.mul(x, up) as tf.Tensor4D;
        const composite = tf.add(masked, tf.mul(tf.onesLike(x), tf.sub(1, up))) as tf.Tensor4D;
        return { masked, composite, loss: tf.scalar(0.25) };
      });
    },
  };
  return m;
}

async function readRaw(file: string): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

function pixel(img: { data: Buffer; width: number; channels: number }, x: number, y: number): number[] {
  const o = (y * img.width + x) * img.channels;
  return [img.data[o]!, img.data[o + 1]!, img.data[o + 2]!];
}

/** Checks the three panels of every row against the input and the mask (1 = visible). */
function checkPanels(
  img: { data: Buffer; width: number; height: number; channels: number },
  ims: Float32Array[],
  maskBits: (row: number, cell: number) => number,
  size: number,
  f: number,
  labelH: number,
): { maskedCells: number; visibleCells: number } {
  const r = size / f;
  let maskedCells = 0;
  let visibleCells = 0;
  for (let row = 0; row < ims.length; row++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const cell = Math.floor(y / r) * f + Math.floor(x / r);
        const visible = maskBits(row, cell) === 1;
        const Y = labelH + row * size + y;
        const inp = pixel(img, x, Y);
        const masked = pixel(img, size + x, Y);
        const rec = pixel(img, 2 * size + x, Y);
        if (visible) {
          assert.deepEqual(masked, inp, `row ${row} (${x},${y}): visible pixel of the masked panel equals the input`);
          assert.deepEqual(rec, inp, `row ${row} (${x},${y}): visible pixel of the reconstruction is the input`);
        } else {
          assert.deepEqual(masked, MEAN_GREY, `row ${row} (${x},${y}): masked pixel is ImageNet-mean grey`);
        }
      }
    }
    for (let c = 0; c < f * f; c++) (maskBits(row, c) ? visibleCells++ : maskedCells++);
  }
  // the input panel is the de-normalised input
  const v = ims[0]!;
  const expect0 = [0, 1, 2].map((c) => Math.round(Math.min(1, Math.max(0, v[c]! * [0.229, 0.224, 0.225][c]! + [0.485, 0.456, 0.406][c]!)) * 255));
  assert.deepEqual(pixel(img, 0, labelH), expect0);
  return { maskedCells, visibleCells };
}

test('grid with a stand-in model: 3 panels × size wide, N rows, mean grey exactly where the mask is 0', async () => {
  await testBackend();
  const size = 64;
  const f = 2;
  const n = 3;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-recon-'));
  const out = path.join(dir, 'grid.png');
  const model = fakeModel(size, f, 2);
  const ims = images(n, size);
  const before = tf.memory().numTensors;
  const res = await renderReconstructionGrid(model, ims, null, size, out, { seed: 7 });
  assert.equal(tf.memory().numTensors, before, 'no tensors leak');
  assert.equal(res.loss, 0.25);
  assert.equal(model.calls, 1);
  const L = gridLayout(size, n);
  const img = await readRaw(out);
  assert.equal(img.width, 3 * size);
  assert.equal(img.height, L.labelHeight + n * size);
  assert.deepEqual([res.width, res.height], [img.width, img.height]);
  // the masks drawn were those of Rng.from(7, 'reconstruct')
  const m = model.makeMask(n, Rng.from(7, 'reconstruct'));
  const bits = m.dataSync();
  m.dispose();
  const counts = checkPanels(img, ims, (row, c) => bits[row * f * f + c]!, size, f, L.labelHeight);
  assert.equal(counts.visibleCells, 2 * n);
  // masked cells of the reconstruction panel carry the prediction (+1 normalised ≠ mean grey)
  const Y = L.labelHeight;
  for (let c = 0; c < f * f; c++) {
    if (bits[c]) continue;
    const x = (c % f) * (size / f) + 1;
    const y = Math.floor(c / f) * (size / f) + 1;
    assert.deepEqual(pixel(img, 2 * size + x, Y + y), [0, 1, 2].map((k) => Math.round(Math.min(1, [0.229, 0.224, 0.225][k]! + [0.485, 0.456, 0.406][k]!) * 255)));
  }
  // the label strip has dark text on white
  let dark = 0;
  for (let y = 0; y < L.labelHeight; y++) for (let x = 0; x < img.width; x++) if (pixel(img, x, y)[0]! < 64) dark++;
  assert.ok(dark > 30, `label pixels drawn (${dark})`);
});

test('grid with a real tiny SparK model and an explicit mask', async () => {
  await testBackend();
  const size = 64;
  const model = buildSparK(
    { encoder: { family: 'resnet', layers: [1, 1, 1, 1], width: 2 }, decoder: { type: 'light', width: 32 }, mask_ratio: 0.5, drop_path: null, densify_norm: 'auto' },
    size,
    0,
  );
  try {
    const f = model.fmap;
    assert.equal(f, 2);
    const bits = parseMaskString('10/01', f);
    const ims = images(2, size, 11);
    const mask = tileMask(bits, f, 2);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-recon-'));
    const out = path.join(dir, 'sub', 'grid.png');
    const res = await renderReconstructionGrid(model, ims, mask, size, out);
    mask.dispose();
    assert.ok(Number.isFinite(res.loss) && res.loss > 0, `finite positive loss ${res.loss}`);
    assert.ok(existsSync(out));
    const img = await readRaw(out);
    const L = gridLayout(size, 2);
    assert.equal(img.width, 192);
    assert.equal(img.height, L.labelHeight + 128);
    const counts = checkPanels(img, ims, (_row, c) => bits[c]!, size, f, L.labelHeight);
    assert.deepEqual(counts, { maskedCells: 4, visibleCells: 4 });
  } finally {
    model.dispose();
  }
});

test('parseMaskString: separators, length and content errors', () => {
  assert.deepEqual([...parseMaskString('0101 1010 0000 1111', 4)], [0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
  assert.throws(() => parseMaskString('0101', 3), (e: unknown) => e instanceof UsageError && /expected 9 cells \(3×3 grid/.test(e.message));
  assert.throws(() => parseMaskString('01x1', 2), (e: unknown) => e instanceof UsageError && /found 'x'/.test(e.message));
  assert.throws(() => parseMaskString('1111', 2), (e: unknown) => e instanceof UsageError && /masked/.test(e.message));
  assert.throws(() => parseMaskString('0000', 2), (e: unknown) => e instanceof UsageError && /visible/.test(e.message));
});

test('fixedValidationBatch: synthetic source is deterministic and normalised at the input size', async () => {
  const cfg = demoConfig('x', 1);
  const a = await fixedValidationBatch(cfg, 3);
  const b = await fixedValidationBatch(cfg, 3);
  assert.equal(a.length, 3);
  assert.equal(a[0]!.length, 64 * 64 * 3);
  assert.deepEqual(a[2], b[2]);
  assert.notDeepEqual(a[0], a[1]);
  // indices after the training set's (synthetic_size = 64)
  assert.deepEqual(a[0], normalizeRgb(syntheticImage(0, 64, 64), 64, 64));
});
