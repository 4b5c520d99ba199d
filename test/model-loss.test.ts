/** Masking and loss: oracles O1 (len_keep) and O6 (patchify, loss) of spec §11, random masks. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { lenKeepFor, patchify, patchStats, randomMask, sparkLoss, unpatchify } from '../src/models/spark.js';
import { Rng } from '../src/util/rng.js';

await testBackend();

test('O1: len_keep with Python (half-to-even) rounding', () => {
  const table: Array<[number, number, number]> = [
    [224, 0.4, 29], [224, 0.5, 24], [224, 0.6, 20], [224, 0.7, 15], [224, 0.75, 12], [224, 0.8, 10], [224, 0.9, 5],
    [384, 0.6, 58], [384, 0.75, 36], [384, 0.5, 72],
    [128, 0.6, 6], [128, 0.75, 4],
    [160, 0.5, 12], [160, 0.7, 8], [160, 0.9, 2],
    [256, 0.6, 26], [256, 0.75, 16],
    [512, 0.6, 102], [512, 0.75, 64],
    [288, 0.5, 40],
  ];
  for (const [size, ratio, keep] of table) assert.equal(lenKeepFor(size, ratio), keep, `${size} @ ${ratio}`);
});

test('randomMask: exactly len_keep visible cells per image, different per image, deterministic from the Rng', () => {
  const a = randomMask(16, 7, 20, Rng.from(1, 'mask', 0));
  const b = randomMask(16, 7, 20, Rng.from(1, 'mask', 0));
  const c = randomMask(16, 7, 20, Rng.from(1, 'mask', 1));
  assert.deepEqual(a.shape, [16, 7, 7, 1]);
  assert.equal(a.dtype, 'float32');
  const av = a.dataSync();
  assert.deepEqual(Array.from(av), Array.from(b.dataSync()));
  assert.notDeepEqual(Array.from(av), Array.from(c.dataSync()));
  const rows = new Set<string>();
  for (let i = 0; i < 16; i++) {
    const row = Array.from(av.slice(i * 49, (i + 1) * 49));
    assert.equal(row.reduce((s, v) => s + v, 0), 20, `image ${i}`);
    assert.ok(row.every((v) => v === 0 || v === 1));
    rows.add(row.join(''));
  }
  assert.ok(rows.size > 1, 'masks differ between images');
  // uniform: over many images every cell is visible with frequency ≈ 20/49
  const many = randomMask(2000, 7, 20, Rng.from(2, 'mask', 0)).dataSync();
  for (let l = 0; l < 49; l++) {
    let n = 0;
    for (let i = 0; i < 2000; i++) n += many[i * 49 + l]!;
    assert.ok(Math.abs(n / 2000 - 20 / 49) < 0.05, `cell ${l} frequency ${n / 2000}`);
  }
});

/** The O6 inputs: B=2, C=3, 64×64, k = flat NCHW index, inp = sin(0.1k), rec = cos(0.05k); returned NHWC. */
function o6Inputs(): { inp: tf.Tensor4D; rec: tf.Tensor4D; mask: tf.Tensor4D } {
  const n = 2 * 3 * 64 * 64;
  const a = new Float32Array(n);
  const b = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    a[k] = Math.sin(0.1 * k);
    b[k] = Math.cos(0.05 * k);
  }
  const toNhwc = (d: Float32Array) => tf.tidy(() => tf.transpose(tf.tensor4d(d, [2, 3, 64, 64]), [0, 2, 3, 1]) as tf.Tensor4D);
  return { inp: toNhwc(a), rec: toNhwc(b), mask: tf.tensor4d([1, 0, 0, 1, 0, 1, 0, 0], [2, 2, 2, 1]) };
}

test('O6: patchify mapping, patch statistics, loss with unbiased variance (and the biased variant differs)', () => {
  const { inp, rec, mask } = o6Inputs();
  const p = patchify(inp);
  assert.deepEqual(p.shape, [2, 4, 3072]);
  const pv = p.arraySync() as number[][][];
  // inp[1,2,37,5] (NCHW) = patch[1, l=2, n=(5·32+5)·3+2 = 497]
  assert.ok(Math.abs(pv[1]![2]![497]! - -0.97831031) < 1e-6, `mapping: ${pv[1]![2]![497]}`);
  const nhwc = inp.arraySync() as number[][][][];
  assert.equal(pv[1]![2]![497], nhwc[1]![37]![5]![2]);
  const { mean, std } = patchStats(p);
  const m0 = (mean.arraySync() as number[][][])[0]!.map((r) => r[0]!);
  const s0 = (std.arraySync() as number[][][])[0]!.map((r) => r[0]!);
  [-0.1829296, 0.18432786, 0.1677983, -0.16292867].forEach((v, i) => assert.ok(Math.abs(m0[i]! - v) < 2e-6, `mean ${i}: ${m0[i]}`));
  [0.68300153, 0.68262079, 0.68692389, 0.6881098].forEach((v, i) => assert.ok(Math.abs(s0[i]! - v) < 2e-6, `std ${i}: ${s0[i]}`));
  const loss = sparkLoss(inp, rec, mask).dataSync()[0]!;
  assert.ok(Math.abs(loss - 1.4840207) < 2e-6, `loss ${loss}`);
  const biased = sparkLoss(inp, rec, mask, { biasedVariance: true }).dataSync()[0]!;
  assert.ok(Math.abs(biased - 1.4843463) < 2e-6, `biased loss ${biased}`);
  assert.ok(Math.abs(loss - biased) > 1e-4, 'unbiased and biased variants are distinguishable');
  // per-patch MSE (unbiased): recompute from the patches to check the averaging over masked patches only
  const target = tf.div(tf.sub(p, mean), std);
  const l2 = tf.mean(tf.square(tf.sub(patchify(rec), target)), -1).arraySync() as number[][];
  const expL2 = [[1.47659236, 1.50061078, 1.45251723, 1.55118267], [1.48249541, 1.52241399, 1.56457091, 1.41991276]];
  for (let b = 0; b < 2; b++) for (let l = 0; l < 4; l++) assert.ok(Math.abs(l2[b]![l]! - expL2[b]![l]!) < 3e-6, `l2[${b},${l}] ${l2[b]![l]}`);
  const masked = [l2[0]![1]!, l2[0]![2]!, l2[1]![0]!, l2[1]![2]!, l2[1]![3]!];
  assert.ok(Math.abs(masked.reduce((s, v) => s + v, 0) / 5 - loss) < 1e-6);
});

test('unpatchify ∘ patchify = identity (exactly)', () => {
  const { inp } = o6Inputs();
  const back = unpatchify(patchify(inp));
  assert.deepEqual(back.shape, inp.shape);
  assert.equal(tf.max(tf.abs(tf.sub(back, inp))).dataSync()[0], 0);
});

test('the loss ignores visible patches and has gradients only there where masked', () => {
  const { inp, rec, mask } = o6Inputs();
  const g = tf.grad((r: tf.Tensor) => sparkLoss(inp, r as tf.Tensor4D, mask))(rec);
  const gp = tf.sum(tf.abs(patchify(g as tf.Tensor4D)), -1).arraySync() as number[][];
  const mv = mask.dataSync();
  for (let b = 0; b < 2; b++) for (let l = 0; l < 4; l++) {
    if (mv[b * 4 + l]) assert.equal(gp[b]![l], 0, `visible patch ${b},${l} has no gradient`);
    else assert.ok(gp[b]![l]! > 0, `masked patch ${b},${l} has a gradient`);
  }
});
