/**
 * Fused ops (src/models/fused.ts, issue 12): forward values and gradients of masked / unmasked training BatchNorm,
 * eval BatchNorm, LayerNorm, GELU and the mask multiply against the composite versions written as chains of plain
 * tf ops (tfjs autodiff), to 1e-5 relative (max-abs difference / max-abs of the reference); the running-stat update
 * against PyTorch's formula; and, on a backend with its own fused kernels (tensorflow), those kernels against the
 * portable composites. Runs on whichever backend SPARK_BACKEND selects (tensorflow and cpu both checked).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { batchNorm, gelu, layerNorm, type BatchNormVars } from '../src/models/ops.js';
import { BN_TRAIN, addSame, backendHasKernel, batchNormTrain, biasAdd, geluFused, layerNormFused, linearFused, maskMul, relu6Fused, reluFused, setFusedDispatch, type RunningStats } from '../src/models/fused.js';
import { Rng } from '../src/util/rng.js';

const info = await testBackend();
const TOL = 1e-5;

function randn(shape: number[], seed: number, scale = 1, shift = 0): tf.Tensor {
  const r = Rng.from(seed, 'fused-test');
  const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < d.length; i++) d[i] = r.normal() * scale + shift;
  return tf.tensor(d, shape);
}

/** A binary mask [N,H,W,1] with about half the positions visible (at least one per call). */
function randomMask(shape: [number, number, number], seed: number): tf.Tensor4D {
  const r = Rng.from(seed, 'fused-mask');
  const d = new Float32Array(shape[0] * shape[1] * shape[2]);
  for (let i = 0; i < d.length; i++) d[i] = r.float() < 0.45 ? 1 : 0;
  d[0] = 1;
  d[d.length - 1] = 0;
  return tf.tensor4d(d, [...shape, 1]);
}

function relErr(a: tf.Tensor, ref: tf.Tensor): number {
  return tf.tidy(() => {
    const diff = tf.max(tf.abs(tf.sub(a, ref))).dataSync()[0]!;
    const scale = tf.max(tf.abs(ref)).dataSync()[0]!;
    return diff / Math.max(scale, 1e-30);
  });
}

function assertClose(a: tf.Tensor, ref: tf.Tensor, what: string, tol = TOL): void {
  assert.deepEqual(a.shape, ref.shape, `${what}: shape`);
  const e = relErr(a, ref);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol} (${info.name})`);
}

/** Value and gradients of sum(f(x, g, b) · w) for a fixed random weighting w (a non-trivial upstream gradient). */
function valueAndGrads(f: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.Tensor, x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, w: tf.Tensor): { y: tf.Tensor; grads: tf.Tensor[] } {
  const y = tf.tidy(() => f(x, g, b));
  const grads = tf.grads((xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(f(xi, gi, bi), w)))([x, g, b]);
  return { y, grads };
}

// ------------------------------------------------------------------------- the composite versions (plain tf ops)

function bnComposite(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, mask: tf.Tensor | null, eps = 1e-5): tf.Tensor {
  const axes = Array.from({ length: x.rank - 1 }, (_, i) => i);
  if (mask) {
    const cnt = tf.sum(mask);
    const mean = tf.div(tf.sum(tf.mul(x, mask), axes), cnt);
    const d = tf.sub(x, mean);
    const variance = tf.div(tf.sum(tf.mul(tf.square(d), mask), axes), cnt);
    return tf.mul(tf.add(tf.mul(d, tf.mul(tf.rsqrt(tf.add(variance, eps)), g)), b), mask);
  }
  const { mean, variance } = tf.moments(x, axes);
  return tf.add(tf.mul(tf.sub(x, mean), tf.mul(tf.rsqrt(tf.add(variance, eps)), g)), b);
}

function lnComposite(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, eps = 1e-6): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), g), b);
}

function geluComposite(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

function freshBn(c: number, seed: number): BatchNormVars {
  return {
    weight: tf.variable(randn([c], seed, 0.5, 1)),
    bias: tf.variable(randn([c], seed + 1, 0.3)),
    runningMean: tf.variable(randn([c], seed + 2, 0.2), false),
    runningVar: tf.variable(tf.tidy(() => tf.abs(randn([c], seed + 3, 1, 1))), false),
    numBatchesTracked: tf.variable(tf.scalar(3, 'int32'), false),
  };
}
/** Running statistics (mean 0.1·k, variance 1 + 0.1·k, count 3) for the ops that need them. */
function freshRunning(c: number): RunningStats {
  return {
    mean: tf.tidy(() => tf.variable(tf.mul(tf.range(0, c), 0.1), false)),
    variance: tf.tidy(() => tf.variable(tf.add(tf.mul(tf.range(0, c), 0.1), 1), false)),
    count: tf.tidy(() => tf.variable(tf.scalar(3, 'int32'), false)),
    momentum: 0.1,
  };
}
function disposeRunning(r: RunningStats): void {
  tf.dispose([r.mean, r.variance, r.count]);
}
function disposeBn(bn: BatchNormVars): void {
  tf.dispose([bn.weight, bn.bias, bn.runningMean, bn.runningVar, bn.numBatchesTracked]);
}

/** Both dispatch modes where they differ: the backend's own kernels ('auto') and the portable composites. */
const MODES: Array<'auto' | 'portable'> = backendHasKernel(BN_TRAIN) ? ['auto', 'portable'] : ['portable'];

const SHAPES: Array<[number, number, number, number]> = [
  [2, 6, 6, 5],
  [3, 4, 4, 16],
];

for (const mode of MODES) {
  test(`training BatchNorm (${mode}): forward and gradients equal the composite, with and without a mask, 4-D and 2-D`, () => {
    const prev = setFusedDispatch(mode);
    try {
      for (const [si, shape] of SHAPES.entries()) {
        const [n, h, w, c] = shape;
        for (const masked of [false, true]) {
          const before = tf.memory().numTensors;
          const x = randn(shape, 10 + si, 2, 0.5);
          const g = randn([c], 20 + si, 0.5, 1);
          const b = randn([c], 30 + si, 0.3);
          const wt = randn(shape, 40 + si);
          const mask = masked ? randomMask([n, h, w], 50 + si) : null;
          const running = freshRunning(c);
          const fused = valueAndGrads((xi, gi, bi) => batchNormTrain(xi, gi, bi, mask, 1e-5, running), x, g, b, wt);
          const ref = valueAndGrads((xi, gi, bi) => bnComposite(xi, gi, bi, mask), x, g, b, wt);
          const what = `BN ${JSON.stringify(shape)} ${masked ? 'masked' : 'dense'}`;
          assertClose(fused.y, ref.y, `${what} y`);
          for (const [i, nm] of ['dx', 'dgamma', 'dbeta'].entries()) assertClose(fused.grads[i]!, ref.grads[i]!, `${what} ${nm}`);
          // with a fused activation: act(BN(x)) against act(composite)
          for (const act of ['relu', 'relu6'] as const) {
            const ra = freshRunning(c);
            const fa = valueAndGrads((xi, gi, bi) => batchNormTrain(xi, gi, bi, mask, 1e-5, ra, act), x, g, b, wt);
            const refAct = (t: tf.Tensor) => (act === 'relu' ? tf.relu(t) : tf.relu6(t));
            const rr = valueAndGrads((xi, gi, bi) => refAct(tf.mul(bnComposite(xi, gi, bi, mask), 3)), x, g, b, wt);
            // (×3 spreads the outputs past 6 for ReLU6; undone below by scaling the fused input's γ, β)
            tf.dispose([fa.y, ...fa.grads]);
            const g3 = tf.mul(g, 3);
            const b3 = tf.mul(b, 3);
            const fb = valueAndGrads((xi, gi, bi) => batchNormTrain(xi, gi, bi, mask, 1e-5, ra, act), x, g3, b3, wt);
            assertClose(fb.y, rr.y, `${what} ${act} y`);
            assertClose(fb.grads[0]!, rr.grads[0]!, `${what} ${act} dx`);
            disposeRunning(ra);
            tf.dispose([rr.y, ...rr.grads, g3, b3, fb.y, ...fb.grads]);
          }
          if (mask) {
            // zeros at masked positions, in the output and in dx
            const atMasked = tf.tidy(() => tf.max(tf.abs(tf.mul(tf.add(tf.abs(fused.y), tf.abs(fused.grads[0]!)), tf.sub(1, mask)))).dataSync()[0]);
            assert.equal(atMasked, 0, `${what}: masked positions are exactly 0`);
          }
          // 2-D [N·H·W, C] input (no mask): the same statistics
          if (!masked && si === 0) {
            const x2 = tf.reshape(x, [-1, c]);
            const w2 = tf.reshape(wt, [-1, c]);
            const f2 = valueAndGrads((xi, gi, bi) => batchNormTrain(xi, gi, bi, null, 1e-5, running), x2, g, b, w2);
            const [y4, dx4] = [tf.reshape(f2.y, shape), tf.reshape(f2.grads[0]!, shape)];
            assertClose(y4, ref.y, 'BN 2-D y');
            assertClose(dx4, ref.grads[0]!, 'BN 2-D dx');
            tf.dispose([x2, w2, f2.y, ...f2.grads, y4, dx4]);
          }
          disposeRunning(running);
          tf.dispose([x, g, b, wt, ...(mask ? [mask] : []), fused.y, ...fused.grads, ref.y, ...ref.grads]);
          assert.equal(tf.memory().numTensors, before, `${what}: no tensor left behind`);
        }
      }
    } finally {
      setFusedDispatch(prev);
    }
  });

  test(`batchNorm (${mode}): running statistics as PyTorch updates them (momentum 0.1, unbiased variance, num_batches_tracked) over two steps; eval mode`, () => {
    const prev = setFusedDispatch(mode);
    try {
      const shape: [number, number, number, number] = [2, 5, 5, 4];
      for (const masked of [false, true]) {
        const x = randn(shape, 60, 1.5, -0.3) as tf.Tensor4D;
        const mask = masked ? randomMask([2, 5, 5], 61) : null;
        const a = freshBn(4, 70);
        const rm0 = a.runningMean.dataSync().slice();
        const rv0 = a.runningVar.dataSync().slice();
        // expected: PyTorch's formula from the visible positions' statistics
        const [mean, varB, n] = tf.tidy(() => {
          const m = mask ?? tf.ones([2, 5, 5, 1]);
          const cnt = tf.sum(m);
          const mu = tf.div(tf.sum(tf.mul(x, m), [0, 1, 2]), cnt);
          const v = tf.div(tf.sum(tf.mul(tf.square(tf.sub(x, mu)), m), [0, 1, 2]), cnt);
          return [mu.dataSync(), v.dataSync(), cnt.dataSync()[0]!] as const;
        });
        const y = batchNorm(x, a, mask, true);
        for (let i = 0; i < 4; i++) {
          const expMean = 0.9 * rm0[i]! + 0.1 * mean[i]!;
          const expVar = 0.9 * rv0[i]! + 0.1 * varB[i]! * (n / (n - 1));
          assert.ok(Math.abs(a.runningMean.dataSync()[i]! - expMean) <= 1e-6 * Math.max(1, Math.abs(expMean)), `running_mean[${i}]`);
          assert.ok(Math.abs(a.runningVar.dataSync()[i]! - expVar) <= 1e-6 * Math.max(1, Math.abs(expVar)), `running_var[${i}]`);
        }
        assert.equal(a.numBatchesTracked.dataSync()[0], 4);
        assert.equal(a.numBatchesTracked.dtype, 'int32');
        // a second step updates from the new values (and the count again)
        const rm1 = a.runningMean.dataSync().slice();
        const before = tf.memory().numTensors;
        const y2 = batchNorm(x, a, mask, true);
        assert.equal(tf.memory().numTensors, before + 1, 'the update leaves only the output behind');
        for (let i = 0; i < 4; i++) {
          const expMean = 0.9 * rm1[i]! + 0.1 * mean[i]!;
          assert.ok(Math.abs(a.runningMean.dataSync()[i]! - expMean) <= 1e-6 * Math.max(1, Math.abs(expMean)), `running_mean[${i}] after 2 steps`);
        }
        assert.equal(a.numBatchesTracked.dataSync()[0], 5);
        // eval: the running statistics, × mask
        const ye = batchNorm(x, a, mask, false);
        const ref = tf.tidy(() => {
          const r = tf.add(tf.mul(tf.sub(x, a.runningMean), tf.mul(tf.rsqrt(tf.add(a.runningVar, 1e-5)), a.weight)), a.bias);
          return mask ? tf.mul(r, mask) : r;
        });
        assertClose(ye, ref, `eval BN ${masked ? 'masked' : 'dense'}`);
        tf.dispose([x, y, y2, ye, ref, ...(mask ? [mask] : [])]);
        disposeBn(a);
      }
    } finally {
      setFusedDispatch(prev);
    }
  });

  test(`LayerNorm, GELU and the mask multiply (${mode}): forward and gradients equal the composite`, () => {
    const prev = setFusedDispatch(mode);
    try {
      const shape: [number, number, number, number] = [2, 5, 5, 12];
      const x = randn(shape, 90, 1.5, 0.4);
      const g = randn([12], 91, 0.5, 1);
      const b = randn([12], 92, 0.3);
      const wt = randn(shape, 93);
      const mask = randomMask([2, 5, 5], 94);
      for (const m of [null, mask]) {
        const fused = valueAndGrads((xi, gi, bi) => layerNorm(xi as tf.Tensor4D, gi, bi, m), x, g, b, wt);
        const ref = valueAndGrads((xi, gi, bi) => (m ? tf.mul(lnComposite(xi, gi, bi), m) : lnComposite(xi, gi, bi)), x, g, b, wt);
        const what = `LN ${m ? 'masked' : 'dense'}`;
        assertClose(fused.y, ref.y, `${what} y`);
        for (const [i, nm] of ['dx', 'dgamma', 'dbeta'].entries()) assertClose(fused.grads[i]!, ref.grads[i]!, `${what} ${nm}`);
        tf.dispose([fused.y, ...fused.grads, ref.y, ...ref.grads]);
      }
      // a 2-D LayerNorm (the ConvNeXt head's pooled features)
      const x2 = tf.reshape(x, [-1, 12]);
      const w2 = tf.reshape(wt, [-1, 12]);
      const f2 = valueAndGrads((xi, gi, bi) => layerNormFused(xi, gi, bi, 1e-6), x2, g, b, w2);
      const r2 = valueAndGrads((xi, gi, bi) => lnComposite(xi, gi, bi), x2, g, b, w2);
      for (const [i, t] of [f2.y, ...f2.grads].entries()) assertClose(t, [r2.y, ...r2.grads][i]!, `LN 2-D output ${i}`);
      // GELU over a wide range (tails included)
      const xg = randn([4, 7, 9], 95, 3);
      const wg = randn([4, 7, 9], 96);
      const gf = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(geluFused(xi), wg)))(xg);
      const gr = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(geluComposite(xi), wg)))(xg);
      const yf = gelu(xg);
      const yr = geluComposite(xg);
      assertClose(yf, yr, 'GELU y');
      assertClose(gf, gr, 'GELU dx');
      // mask multiply: × mask forward, dy × mask backward, no gradient to the mask
      const mf = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(maskMul(xi, mask), wt)))(x);
      const mr = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(tf.mul(xi, mask), wt)))(x);
      const ym = maskMul(x, mask);
      const ymr = tf.mul(x, mask);
      assert.deepEqual(Array.from(ym.dataSync()), Array.from(ymr.dataSync()));
      assert.deepEqual(Array.from(mf.dataSync()), Array.from(mr.dataSync()));
      tf.dispose([x, g, b, wt, mask, x2, w2, f2.y, ...f2.grads, r2.y, ...r2.grads, xg, wg, gf, gr, yf, yr, mf, mr, ym, ymr]);
    } finally {
      setFusedDispatch(prev);
    }
  });
}

test('ReLU, ReLU6, the bias and residual adds and the dense layer: forward and gradients equal the composite (ReLU6: derivative 1 on 0 < x < 6)', () => {
  const before = tf.memory().numTensors;
  // values spread over (−12, 12), none exactly 0 or 6
  const x = tf.tidy(() => {
    const r = randn([3, 5, 5, 8], 110, 5);
    return tf.where(tf.logicalOr(tf.equal(r, 0), tf.equal(r, 6)), tf.fill(r.shape, 0.5), r);
  });
  const wt = randn([3, 5, 5, 8], 111);
  const check = (f: (t: tf.Tensor) => tf.Tensor, ref: (t: tf.Tensor) => tf.Tensor, what: string) => {
    const [yf, yr] = [f(x), ref(x)];
    const gf = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(f(xi), wt)))(x);
    const gr = tf.grad((xi: tf.Tensor) => tf.sum(tf.mul(ref(xi), wt)))(x);
    assert.deepEqual(Array.from(yf.dataSync()), Array.from(yr.dataSync()), `${what} y`);
    assert.deepEqual(Array.from(gf.dataSync()), Array.from(gr.dataSync()), `${what} dx`);
    tf.dispose([yf, yr, gf, gr]);
  };
  check(reluFused, tf.relu, 'ReLU');
  check(relu6Fused, tf.relu6, 'ReLU6');
  // bias add: gradients to x and to the bias, exactly tf.add's
  const bias = randn([8], 115);
  const ba = valueAndGrads((xi, bi) => biasAdd(xi, bi), x, bias, bias, wt);
  const br = valueAndGrads((xi, bi) => tf.add(xi, bi), x, bias, bias, wt);
  assert.deepEqual(Array.from(ba.y.dataSync()), Array.from(br.y.dataSync()), 'bias add y');
  for (const i of [0, 1]) assert.deepEqual(Array.from(ba.grads[i]!.dataSync()), Array.from(br.grads[i]!.dataSync()), `bias add grad ${i}`);
  tf.dispose([bias, ba.y, ...ba.grads, br.y, ...br.grads]);
  // residual add: an identity shortcut whose input also feeds the other branch (gradients accumulate on it)
  const residual = (add: (p: tf.Tensor, q: tf.Tensor) => tf.Tensor) => (xi: tf.Tensor) => {
    const h = tf.mul(xi, 1.5);
    const out = add(tf.relu(tf.mul(h, -0.7)), h);
    return tf.add(tf.sum(tf.mul(out, wt)), tf.sum(tf.square(h)));
  };
  const rf = tf.grad(residual(addSame))(x);
  const rr = tf.grad(residual(tf.add))(x);
  assert.deepEqual(Array.from(rf.dataSync()), Array.from(rr.dataSync()), 'residual add dx');
  tf.dispose([rf, rr]);
  assert.throws(() => addSame(x, bias), /shapes differ/);
  // the dense layer: y = x·w + b against tf.matMul + tf.add (all three gradients)
  const w = randn([8, 6], 112) as tf.Tensor2D;
  const b = randn([6], 113);
  const w6 = randn([3, 5, 5, 6], 114);
  const fused = valueAndGrads((xi, wi, bi) => linearFused(xi, wi as tf.Tensor2D, bi), x, w, b, w6);
  const ref = valueAndGrads((xi, wi, bi) => tf.reshape(tf.add(tf.matMul(tf.reshape(xi, [-1, 8]), wi as tf.Tensor2D), bi), [3, 5, 5, 6]), x, w, b, w6);
  assertClose(fused.y, ref.y, 'linear y');
  for (const [i, nm] of ['dx', 'dw', 'db'].entries()) assertClose(fused.grads[i]!, ref.grads[i]!, `linear ${nm}`);
  // with a tf.Variable weight (read again in the backward pass instead of saved)
  const wv = tf.variable(w);
  const gv = tf.variableGrads(() => tf.sum(tf.mul(linearFused(x, wv as unknown as tf.Tensor2D, null), w6)), [wv]);
  const gvr = tf.grad((wi: tf.Tensor) => tf.sum(tf.mul(tf.reshape(tf.matMul(tf.reshape(x, [-1, 8]), wi as tf.Tensor2D), [3, 5, 5, 6]), w6)))(w);
  assertClose(gv.grads[wv.name]!, gvr, 'linear dw (variable)');
  tf.dispose([x, wt, w, b, w6, fused.y, ...fused.grads, ref.y, ...ref.grads, wv, gv.value, ...Object.values(gv.grads), gvr]);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});

test('a backend with its own fused kernels agrees with the portable composites (tensorflow: FusedBatchNormV3 etc.)', (t) => {
  if (!backendHasKernel(BN_TRAIN)) {
    t.skip(`backend '${info.name}' has no fused kernels of its own (the portable composites are what runs there)`);
    return;
  }
  const shape: [number, number, number, number] = [2, 8, 8, 6];
  const x = randn(shape, 100, 2, 1);
  const g = randn([6], 101, 0.5, 1);
  const b = randn([6], 102, 0.3);
  const wt = randn(shape, 103);
  for (const mask of [null, randomMask([2, 8, 8], 104)]) {
    const run = (mode: 'auto' | 'portable') => {
      const prev = setFusedDispatch(mode);
      try {
        const running = freshRunning(6);
        const r = valueAndGrads((xi, gi, bi) => batchNormTrain(xi, gi, bi, mask, 1e-5, running), x, g, b, wt);
        const stats = [running.mean.clone(), running.variance.clone(), running.count.clone()];
        disposeRunning(running);
        return { ...r, stats };
      } finally {
        setFusedDispatch(prev);
      }
    };
    const nat = run('auto');
    const port = run('portable');
    const what = mask ? 'masked' : 'dense';
    assertClose(nat.y, port.y, `${what} y`);
    for (const [i, nm] of ['dx', 'dgamma', 'dbeta'].entries()) assertClose(nat.grads[i]!, port.grads[i]!, `${what} ${nm}`);
    assertClose(nat.stats[0]!, port.stats[0]!, `${what} running mean (two updates)`);
    assertClose(nat.stats[1]!, port.stats[1]!, `${what} running variance (two updates)`);
    assert.equal(nat.stats[2]!.dataSync()[0], 5);
    assert.equal(port.stats[2]!.dataSync()[0], 5);
    tf.dispose([nat.y, ...nat.grads, ...nat.stats, port.y, ...port.grads, ...port.stats, ...(mask ? [mask] : [])]);
  }
  tf.dispose([x, g, b, wt]);
});
