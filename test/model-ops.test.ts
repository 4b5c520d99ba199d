/**
 * Sparse ops: oracles O7 (sparse BN) and O8 (sparse conv) of spec §11, mask upsampling, PyTorch padding semantics,
 * ConvTranspose(k4,s2,p1), GELU, DropPath, and this module's own convolution gradients against tfjs's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import {
  batchNorm,
  conv2d,
  convTranspose2x,
  depthwiseConv2d,
  dropPath,
  gelu,
  layerNorm,
  MaskPyramid,
  setOwnConvGrads,
  sparseConv2d,
  sparseMaxPool,
  upsampleMask,
  type BatchNormVars,
} from '../src/models/ops.js';
import { fromTorchLayout } from '../src/models/weights.js';
import { Rng } from '../src/util/rng.js';

await testBackend();

/** The O6/O7/O8 mask: image 0 [[1,0],[0,1]], image 1 [[0,1],[0,0]] as [2,2,2,1]. */
function o6Mask(): tf.Tensor4D {
  return tf.tensor4d([1, 0, 0, 1, 0, 1, 0, 0], [2, 2, 2, 1]);
}

/** NCHW flat data → NHWC tensor. */
function nchwToNhwc(data: Float32Array, [b, c, h, w]: number[]): tf.Tensor4D {
  return tf.tidy(() => tf.transpose(tf.tensor4d(data, [b!, c!, h!, w!]), [0, 2, 3, 1]) as tf.Tensor4D);
}

/** NHWC tensor → NCHW nested arrays. */
function toNchw(x: tf.Tensor4D): number[][][][] {
  return tf.tidy(() => tf.transpose(x, [0, 3, 1, 2]).arraySync() as number[][][][]);
}

function randn(shape: number[], seed: number, scale = 1): tf.Tensor {
  const r = Rng.from(seed, 'test-randn');
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = r.normal() * scale;
  return tf.tensor(d, shape);
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

function freshBn(c: number): BatchNormVars {
  return {
    weight: tf.variable(tf.ones([c])),
    bias: tf.variable(tf.zeros([c])),
    runningMean: tf.variable(tf.zeros([c]), false),
    runningVar: tf.variable(tf.ones([c]), false),
    numBatchesTracked: tf.variable(tf.scalar(0, 'int32'), false),
  };
}

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]} (tol ${tol})`);
  }
}

test('upsampleMask is exact nearest repetition (spec §10.6)', () => {
  const m = o6Mask();
  const up = upsampleMask(m, 3);
  assert.deepEqual(up.shape, [2, 6, 6, 1]);
  const a = up.arraySync() as number[][][][];
  const base = m.arraySync() as number[][][][];
  for (let b = 0; b < 2; b++) for (let y = 0; y < 6; y++) for (let x = 0; x < 6; x++) assert.equal(a[b]![y]![x]![0], base[b]![Math.floor(y / 3)]![Math.floor(x / 3)]![0]);
  const pyr = new MaskPyramid(m);
  assert.equal(pyr.at(2), m);
  assert.equal(pyr.at(8), pyr.at(8), 'cached');
  assert.throws(() => pyr.at(5));
  tf.dispose([m, up, pyr.at(8)]);
});

test('O7: sparse BatchNorm2d train-mode outputs, running stats, eval output; dense BN differs', () => {
  const shape = [2, 2, 4, 4];
  const data = new Float32Array(64);
  for (let k = 0; k < 64; k++) {
    const c = Math.floor(k / 16) % 2;
    data[k] = 0.1 * k + 5 * c * Math.cos(k);
  }
  const x = nchwToNhwc(data, shape);
  const mask = upsampleMask(o6Mask(), 2);
  const bn = freshBn(2);
  const y = toNchw(batchNorm(x, bn, mask, true));
  const r5 = (v: number[][]) => v.flat();
  assertClose(r5(y[0]![0]!), [-1.19085, -1.12148, 0, 0, -0.91337, -0.844, 0, 0, 0, 0, -0.49715, -0.42778, 0, 0, -0.21967, -0.1503], 1e-5, 'y[0,0]');
  assertClose(r5(y[0]![1]!), [-1.79462, -0.88123, 0, 0, 0.08514, -1.13161, 0, 0, 0, 0, 0.5517, -0.64327, 0, 0, 0.01514, 1.02994], 1e-5, 'y[0,1]');
  assertClose(r5(y[1]![0]!), [0, 0, 1.16772, 1.23709, 0, 0, 1.4452, 1.51457, 0, 0, 0, 0, 0, 0, 0, 0], 1e-5, 'y[1,0]');
  assertClose(r5(y[1]![1]!), [0, 0, 1.58932, 1.32562, 0, 0, -0.63959, 0.49346, 0, 0, 0, 0, 0, 0, 0, 0], 1e-5, 'y[1,1]');
  // masked positions are exactly 0 (not β)
  const flat = y.flat(3);
  const mflat = toNchw(tf.tile(mask, [1, 1, 1, 2])).flat(3);
  for (let i = 0; i < flat.length; i++) if (mflat[i] === 0) assert.ok(flat[i] === 0, `masked position ${i} is ${flat[i]}`);
  assertClose(Array.from(bn.runningMean.dataSync()), [0.171667, 0.371302], 1e-5, 'running_mean');
  assertClose(Array.from(bn.runningVar.dataSync()), [1.126697, 2.513265], 1e-5, 'running_var (unbiased)');
  assert.equal(bn.numBatchesTracked.dataSync()[0], 1);
  assert.equal(bn.numBatchesTracked.dtype, 'int32');
  // eval mode afterwards uses the running stats
  const ye = toNchw(batchNorm(x, bn, mask, false));
  assertClose(ye[0]![0]![0]!, [-0.161726, -0.067517, 0, 0], 1e-5, 'eval y[0,0,0,:]');
  // a dense BN (statistics over all positions) gives a different running mean
  const dense = freshBn(2);
  batchNorm(x, dense, null, true);
  assertClose(Array.from(dense.runningMean.dataSync()), [0.235, 0.409085], 1e-5, 'dense running_mean');
  assert.ok(Math.abs(dense.runningMean.dataSync()[0]! - bn.runningMean.dataSync()[0]!) > 0.01);
});

test('O8: SparseConv2d 3x3 pad 1 with ones and bias 0.5', () => {
  const mask = upsampleMask(o6Mask(), 2); // [2,4,4,1], the input is ones at visible pixels
  const w = tf.ones([3, 3, 1, 1]) as tf.Tensor4D;
  const pyr = new MaskPyramid(o6Mask());
  const y = sparseConv2d(mask, w, pyr, { stride: 1, pad: 1, bias: tf.scalar(0.5) });
  const a = toNchw(y);
  assert.deepEqual(a[0]![0], [[4.5, 4.5, 0, 0], [4.5, 5.5, 0, 0], [0, 0, 5.5, 4.5], [0, 0, 4.5, 4.5]]);
  assert.deepEqual(a[1]![0], [[0, 0, 4.5, 4.5], [0, 0, 4.5, 4.5], [0, 0, 0, 0], [0, 0, 0, 0]]);
});

/** Direct PyTorch Conv2d definition (NCHW, OIHW, symmetric zero padding p). */
function directConv(x: number[][][][], w: number[][][][], s: number, p: number): number[][][][] {
  const B = x.length, C = x[0]!.length, H = x[0]![0]!.length, W = x[0]![0]![0]!.length;
  const O = w.length, k = w[0]![0]!.length;
  const oh = Math.floor((H + 2 * p - k) / s) + 1, ow = Math.floor((W + 2 * p - k) / s) + 1;
  const out: number[][][][] = [];
  for (let b = 0; b < B; b++) {
    out.push([]);
    for (let o = 0; o < O; o++) {
      const plane: number[][] = [];
      for (let yy = 0; yy < oh; yy++) {
        const row: number[] = [];
        for (let xx = 0; xx < ow; xx++) {
          let acc = 0;
          for (let c = 0; c < C; c++)
            for (let i = 0; i < k; i++)
              for (let j = 0; j < k; j++) {
                const iy = yy * s - p + i, ix = xx * s - p + j;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += x[b]![c]![iy]![ix]! * w[o]![c]![i]![j]!;
              }
          row.push(acc);
        }
        plane.push(row);
      }
      out[b]!.push(plane);
    }
  }
  return out;
}

test('conv2d matches PyTorch semantics (symmetric padding, OIHW→HWIO) incl. stride 2 and k7 s2 p3', () => {
  for (const [k, s, p, H] of [[3, 2, 1, 8], [7, 2, 3, 10], [3, 1, 1, 5], [1, 2, 0, 6]] as const) {
    const xt = randn([2, 3, H, H], 11 + k) as tf.Tensor4D; // NCHW
    const wTorch = randn([4, 3, k, k], 21 + k);
    const expected = directConv(xt.arraySync() as number[][][][], wTorch.arraySync() as number[][][][], s, p);
    const wTf = fromTorchLayout('conv.weight', [4, 3, k, k], wTorch.dataSync() as Float32Array);
    const y = conv2d(tf.transpose(xt, [0, 2, 3, 1]) as tf.Tensor4D, tf.tensor4d(wTf.data, wTf.shape as [number, number, number, number]), s, p);
    const got = toNchw(y);
    assert.deepEqual([got.length, got[0]!.length, got[0]![0]!.length], [2, 4, expected[0]![0]!.length]);
    assertClose(got.flat(3), expected.flat(3), 1e-4, `conv k${k} s${s} p${p}`);
  }
});

test('ConvTranspose2d(k4,s2,p1) = conv2dTranspose same to 2H, with the I×O×kH×kW ↔ [kH,kW,O,I] mapping', () => {
  const B = 2, I = 3, O = 2, H = 3;
  const x = randn([B, I, H, H], 31) as tf.Tensor4D; // NCHW
  const wTorch = randn([I, O, 4, 4], 32); // I×O×kH×kW
  const xa = x.arraySync() as number[][][][];
  const wa = wTorch.arraySync() as number[][][][];
  // direct definition: y[b,o,2i-1+kh, 2j-1+kw] += x[b,c,i,j]·W[c,o,kh,kw]
  const exp = Array.from({ length: B }, () => Array.from({ length: O }, () => Array.from({ length: 2 * H }, () => new Array<number>(2 * H).fill(0))));
  for (let b = 0; b < B; b++)
    for (let c = 0; c < I; c++)
      for (let i = 0; i < H; i++)
        for (let j = 0; j < H; j++)
          for (let o = 0; o < O; o++)
            for (let kh = 0; kh < 4; kh++)
              for (let kw = 0; kw < 4; kw++) {
                const Y = 2 * i - 1 + kh, X = 2 * j - 1 + kw;
                if (Y >= 0 && Y < 2 * H && X >= 0 && X < 2 * H) exp[b]![o]![Y]![X]! += xa[b]![c]![i]![j]! * wa[c]![o]![kh]![kw]!;
              }
  const wTf = fromTorchLayout('dense_decoder.dec.0.up_sample.weight', [I, O, 4, 4], wTorch.dataSync() as Float32Array);
  assert.deepEqual(wTf.shape, [4, 4, O, I]);
  const y = convTranspose2x(tf.transpose(x, [0, 2, 3, 1]) as tf.Tensor4D, tf.tensor4d(wTf.data, [4, 4, O, I]));
  assert.deepEqual(y.shape, [B, 2 * H, 2 * H, O]);
  assertClose(toNchw(y).flat(3), exp.flat(3), 1e-4, 'convTranspose');
});

test('depthwise 7x7 conv matches the direct definition (C×1×k×k ↔ [k,k,C,1])', () => {
  const C = 3, H = 8, k = 7;
  const x = randn([1, C, H, H], 41) as tf.Tensor4D;
  const wTorch = randn([C, 1, k, k], 42);
  const xa = x.arraySync() as number[][][][];
  const wa = wTorch.arraySync() as number[][][][];
  const exp: number[] = [];
  for (let c = 0; c < C; c++)
    for (let yy = 0; yy < H; yy++)
      for (let xx = 0; xx < H; xx++) {
        let acc = 0;
        for (let i = 0; i < k; i++)
          for (let j = 0; j < k; j++) {
            const iy = yy - 3 + i, ix = xx - 3 + j;
            if (iy >= 0 && iy < H && ix >= 0 && ix < H) acc += xa[0]![c]![iy]![ix]! * wa[c]![0]![i]![j]!;
          }
        exp.push(acc);
      }
  const wTf = fromTorchLayout('stages.0.0.dwconv.weight', [C, 1, k, k], wTorch.dataSync() as Float32Array);
  assert.deepEqual(wTf.shape, [k, k, C, 1]);
  const y = depthwiseConv2d(tf.transpose(x, [0, 2, 3, 1]) as tf.Tensor4D, tf.tensor4d(wTf.data, [k, k, C, 1]), 1, 3);
  assertClose(toNchw(y).flat(3), exp, 1e-4, 'depthwise');
});

test("own convolution gradients equal tfjs's (conv k1/k3/k7 strides 1-2, depthwise, transposed)", () => {
  const cases: Array<{ name: string; f: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor; x: number[]; w: number[] }> = [
    { name: 'conv k3 s1', f: (x, w) => conv2d(x, w, 1, 1), x: [2, 6, 6, 3], w: [3, 3, 3, 4] },
    { name: 'conv k3 s2', f: (x, w) => conv2d(x, w, 2, 1), x: [2, 8, 8, 3], w: [3, 3, 3, 5] },
    { name: 'conv k7 s2', f: (x, w) => conv2d(x, w, 2, 3), x: [2, 10, 10, 3], w: [7, 7, 3, 4] },
    { name: 'conv k1 s2', f: (x, w) => conv2d(x, w, 2, 0), x: [2, 6, 6, 4], w: [1, 1, 4, 3] },
    { name: 'conv k4 s4', f: (x, w) => conv2d(x, w, 4, 0), x: [2, 8, 8, 3], w: [4, 4, 3, 4] },
    { name: 'conv k2 s2', f: (x, w) => conv2d(x, w, 2, 0), x: [2, 6, 6, 3], w: [2, 2, 3, 4] },
    { name: 'depthwise k7', f: (x, w) => depthwiseConv2d(x, w, 1, 3), x: [2, 8, 8, 3], w: [7, 7, 3, 1] },
    { name: 'transpose k4 s2', f: (x, w) => convTranspose2x(x, w), x: [2, 3, 3, 4], w: [4, 4, 4, 4] },
  ];
  const prev = setOwnConvGrads('on');
  try {
    for (const c of cases) {
      const x = randn(c.x, 51) as tf.Tensor4D;
      const w = randn(c.w, 52) as tf.Tensor4D;
      const probe = randn(tf.tidy(() => c.f(x, w)).shape, 53);
      const loss = (f: typeof c.f) => (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor4D, b as tf.Tensor4D), probe));
      const [gx, gw] = tf.grads(loss(c.f))([x, w]);
      setOwnConvGrads('off');
      const [rx, rw] = tf.grads(loss(c.f))([x, w]);
      setOwnConvGrads('on');
      assert.deepEqual(gx!.shape, x.shape);
      assert.deepEqual(gw!.shape, w.shape);
      const sx = tf.max(tf.abs(rx!)).dataSync()[0]!;
      const sw = tf.max(tf.abs(rw!)).dataSync()[0]!;
      assert.ok(sx > 0 && sw > 0, `${c.name}: reference grads are non-zero`);
      assert.ok(maxAbsDiff(gx!, rx!) <= 1e-4 * Math.max(1, sx), `${c.name}: dx differs by ${maxAbsDiff(gx!, rx!)}`);
      assert.ok(maxAbsDiff(gw!, rw!) <= 1e-4 * Math.max(1, sw), `${c.name}: dW differs by ${maxAbsDiff(gw!, rw!)}`);
    }
  } finally {
    setOwnConvGrads(prev);
  }
});

test('sparse max-pool: 3x3 s2 p1 with -inf padding, then masked', () => {
  const x = tf.tensor4d(Array.from({ length: 16 }, (_, i) => -1 - i), [1, 4, 4, 1]); // all negative: padding must not win
  const y = sparseMaxPool(x, null);
  assert.deepEqual(y.shape, [1, 2, 2, 1]);
  assert.deepEqual(Array.from(y.dataSync()), [-1, -2, -5, -6]);
  const pyr = new MaskPyramid(tf.tensor4d([1, 0, 0, 0], [1, 2, 2, 1]));
  assert.deepEqual(Array.from(sparseMaxPool(x, pyr).dataSync()).map((v) => v + 0), [-1, 0, 0, 0]);
});

test('sparse LayerNorm: per position over channels, eps 1e-6, zeros at masked positions', () => {
  const x = randn([2, 2, 2, 5], 61) as tf.Tensor4D;
  const w = randn([5], 62);
  const b = randn([5], 63);
  const mask = o6Mask();
  const y = layerNorm(x, w, b, mask);
  const xa = x.arraySync() as number[][][][];
  const ya = y.arraySync() as number[][][][];
  const wa = Array.from(w.dataSync()), ba = Array.from(b.dataSync());
  const ma = mask.arraySync() as number[][][][];
  for (let i = 0; i < 2; i++)
    for (let r = 0; r < 2; r++)
      for (let c = 0; c < 2; c++) {
        const v = xa[i]![r]![c]!;
        const mu = v.reduce((s, t) => s + t, 0) / 5;
        const va = v.reduce((s, t) => s + (t - mu) ** 2, 0) / 5;
        const exp = v.map((t, j) => (ma[i]![r]![c]![0] ? ((t - mu) / Math.sqrt(va + 1e-6)) * wa[j]! + ba[j]! : 0));
        assertClose(ya[i]![r]![c]!, exp, 1e-5, `ln[${i},${r},${c}]`);
      }
});

test('GELU is the exact erf form, with a correct gradient', () => {
  const xs = [-3, -1, -0.5, 0, 0.3, 1, 2.5];
  const y = Array.from(gelu(tf.tensor1d(xs)).dataSync());
  // reference values of 0.5·x·(1+erf(x/√2))
  const ref = [-0.0040496941, -0.15865525, -0.15426877, 0, 0.18537343, 0.84134475, 2.4844758];
  assertClose(y, ref, 2e-6, 'gelu');
  const g = Array.from(tf.grad((t: tf.Tensor) => tf.sum(gelu(t)))(tf.tensor1d(xs)).dataSync());
  const pdf = (x: number) => Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI);
  const cdf = (x: number, yv: number) => (x === 0 ? 0.5 : yv / x);
  const expG = xs.map((x, i) => cdf(x, ref[i]!) + x * pdf(x));
  assertClose(g, expG, 1e-5, "gelu'");
});

test('DropPath: per-sample keep from the Rng, divided by the keep probability; identity in eval', () => {
  const x = tf.ones([8, 2, 2, 1]);
  const r1 = Rng.from(3, 'droppath', 0);
  const y = dropPath(x, 0.5, true, r1).arraySync() as number[][][][];
  const r2 = Rng.from(3, 'droppath', 0);
  const expectKeep = Array.from({ length: 8 }, () => r2.float() < 0.5);
  for (let b = 0; b < 8; b++) for (const row of y[b]!) for (const v of row) assert.equal(v[0], expectKeep[b] ? 2 : 0);
  assert.ok(expectKeep.some((k) => k) && expectKeep.some((k) => !k), 'seed gives both outcomes');
  assert.equal(dropPath(x, 0.5, false, undefined), x);
  assert.equal(dropPath(x, 0, true, undefined), x);
  assert.throws(() => dropPath(x, 0.2, true, undefined), /rng/);
});
