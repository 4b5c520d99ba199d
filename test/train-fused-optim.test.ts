/**
 * The fused optimizer (src/train/fused-optim.ts): the portable flat composite against the per-parameter update
 * dispatched to backend kernels (the reference implementations registered as `SparkLambUpdate` /
 * `SparkAdamWUpdate` / `SparkGlobalNorm`), the on-device skip, parameters without a gradient, the state format,
 * and the kernel count of one update.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { AdamW, Lamb, buildParamGroups, type SparkOptimizer } from '../src/train/optimizers.js';
import { ADAMW_UPDATE_KERNEL, FLAT_BLOCK, GLOBAL_NORM_KERNEL, LAMB_UPDATE_KERNEL, referenceKernelConfig } from '../src/train/fused-optim.js';
import { Rng } from '../src/util/rng.js';

const SHAPES: Record<string, number[]> = {
  'stem.conv.weight': [3, 3, 3, 8], // 216: less than a row
  'stem.bn.weight': [8],
  'stem.bn.bias': [8],
  'blocks.0.fc.weight': [40, 20], // 800: rows of 256 with padding
  'blocks.0.fc.bias': [20],
  'blocks.0.gamma': [20],
  'head.weight': [16, 32], // 512: exactly two rows
};

function values(rng: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

function makeParams(seed: number): Map<string, tf.Variable> {
  const rng = Rng.from(seed, 'params');
  return new Map(Object.entries(SHAPES).map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return [name, tf.variable(tf.tensor(values(rng, n, 0.5), shape), true, `fused-test/${seed}/${name}/${Math.random()}`)];
  }));
}

function makeGrads(seed: number, step: number, scale: number, skip: string[] = []): Map<string, tf.Tensor> {
  const rng = Rng.from(seed, 'grads', step);
  const out = new Map<string, tf.Tensor>();
  for (const [name, shape] of Object.entries(SHAPES)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = values(rng, n, scale);
    if (!skip.includes(name)) out.set(name, tf.tensor(v, shape));
  }
  return out;
}

function snapshot(params: Map<string, tf.Variable>): Map<string, Float32Array> {
  return new Map([...params].map(([k, v]) => [k, Float32Array.from(v.dataSync() as Float32Array)]));
}

function assertClose(a: Map<string, Float32Array>, b: Map<string, Float32Array>, rel: number, what: string): void {
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) {
      const tol = rel * Math.max(1, Math.abs(x[i]!));
      assert.ok(Math.abs(x[i]! - y[i]!) <= tol, `${what} ${k}[${i}]: ${x[i]} vs ${y[i]}`);
    }
  }
}

function stateArrays(opt: SparkOptimizer): Map<string, Float32Array> {
  const st = opt.getState();
  return new Map([...st.tensors].map(([k, t]) => [k, new Float32Array(t.data.slice().buffer)]));
}

/**
 * Register the reference kernels on the current backend for the duration of `f` and count their calls. A backend
 * that registers its own (native) kernels keeps them: `f` then checks those, and gets `null` for the counts.
 */
async function withUpdateKernels<T>(f: (calls: Map<string, number> | null) => T | Promise<T>): Promise<T> {
  const be = tf.getBackend();
  const names = [GLOBAL_NORM_KERNEL, LAMB_UPDATE_KERNEL, ADAMW_UPDATE_KERNEL] as const;
  if (names.some((name) => tf.getKernel(name, be))) return f(null);
  const calls = new Map<string, number>();
  for (const name of names) {
    const cfg = referenceKernelConfig(name, be);
    tf.registerKernel({ ...cfg, kernelFunc: (args) => (calls.set(name, (calls.get(name) ?? 0) + 1), cfg.kernelFunc(args)) });
  }
  try {
    return await f(calls);
  } finally {
    for (const name of names) tf.unregisterKernel(name, be);
  }
}

type Make = (params: Map<string, tf.Variable>, layout: 'flat' | 'param') => SparkOptimizer;

const VARIANTS: Array<[string, Make]> = [
  ['LAMB pre-training (clip 5, trust ratio on decay groups)', (p, layout) => new Lamb(buildParamGroups(p), { betas: [0.9, 0.95], eps: 1e-6, maxGradNorm: 5, layout })],
  ['LAMB fine-tuning (no bias correction, trust ratio everywhere, layer-wise lr scales)', (p, layout) =>
    new Lamb(buildParamGroups(p, { lrScale: (n) => (n.startsWith('head') ? 1 : 0.5) }), { betas: [0.9, 0.999], eps: 1e-6, maxGradNorm: 0, biasCorrection: false, alwaysAdapt: true, layout })],
  ['LAMB with trust clip and eps 0', (p, layout) => new Lamb(buildParamGroups(p), { betas: [0.9, 0.999], eps: 0, maxGradNorm: 1, trustClip: true, layout })],
  ['AdamW with clip 1', (p, layout) => new AdamW(buildParamGroups(p), { betas: [0.9, 0.999], maxGradNorm: 1, layout })],
  ['AdamW without clip', (p, layout) => new AdamW(buildParamGroups(p), { betas: [0.9, 0.999], layout })],
];

test('flat composite = per-parameter kernels (the backend\'s, or the reference ones registered), every variant, 3 steps', async () => {
  await testBackend();
  await withUpdateKernels(async (calls) => {
    for (const [what, make] of VARIANTS) {
      const pa = makeParams(1);
      const pb = makeParams(1);
      const flat = make(pa, 'flat');
      const viaKernel = make(pb, 'param');
      const before = tf.memory().numTensors;
      calls?.clear();
      for (let s = 0; s < 3; s++) {
        // step 1 is clipped (large gradients) where clipping is on
        const g = makeGrads(2, s, s === 1 ? 3 : 0.05);
        const na = flat.apply(g, { lr: 0.01, wd: 0.05 });
        const nb = viaKernel.apply(g, { lr: 0.01, wd: 0.05 });
        assert.ok(Math.abs(na - nb) <= 1e-6 * Math.max(1, nb), `${what}: grad norm ${na} vs ${nb}`);
        tf.dispose([...g.values()]);
      }
      assert.equal(tf.memory().numTensors, before, `${what}: tensors`);
      if (calls) {
        const groups = viaKernel.groups.length;
        const update = viaKernel.kind === 'lamb' ? LAMB_UPDATE_KERNEL : ADAMW_UPDATE_KERNEL;
        assert.equal(calls.get(update), 3 * groups, `${what}: one ${update} call per group and step`);
        assert.equal(calls.get(GLOBAL_NORM_KERNEL), 3, `${what}: one ${GLOBAL_NORM_KERNEL} call per step`);
      }
      assertClose(snapshot(pa), snapshot(pb), 1e-6, `${what}: params`);
      assertClose(stateArrays(flat), stateArrays(viaKernel), 1e-6, `${what}: moments`);
      assert.deepEqual(flat.getState().groupSteps, viaKernel.getState().groupSteps);
      flat.dispose();
      viaKernel.dispose();
      tf.dispose([...pa.values(), ...pb.values()]);
    }
  });
});

test('applyIf false skips the step on the device; revert() restores the step counters', async () => {
  await testBackend();
  for (const layout of ['flat', 'param'] as const) {
    for (const [what, make] of VARIANTS) {
      const p = makeParams(3);
      const opt = make(p, layout);
      const g0 = makeGrads(4, 0, 0.1);
      opt.apply(g0, { lr: 0.01, wd: 0.05 });
      const params0 = snapshot(p);
      const moments0 = stateArrays(opt);
      const steps0 = opt.getState().groupSteps;
      const before = tf.memory().numTensors;
      const g1 = makeGrads(4, 1, NaN); // what a non-finite loss leaves behind
      const no = tf.scalar(false, 'bool');
      const u = opt.update(g1, { lr: 0.01, wd: 0.05 }, { applyIf: no });
      u.revert();
      assert.ok(Number.isNaN(u.gradNorm.dataSync()[0]!), `${what} (${layout}): the norm of NaN gradients`);
      u.gradNorm.dispose();
      no.dispose();
      tf.dispose([...g1.values()]);
      assert.equal(tf.memory().numTensors, before, `${what} (${layout}): tensors`);
      assert.deepEqual(snapshot(p), params0, `${what} (${layout}): parameters untouched`);
      assert.deepEqual(stateArrays(opt), moments0, `${what} (${layout}): moments untouched`);
      assert.deepEqual(opt.getState().groupSteps, steps0, `${what} (${layout}): step counters restored`);
      // applyIf true is the plain update
      const q = makeParams(3);
      const ref = make(q, layout);
      ref.apply(g0, { lr: 0.01, wd: 0.05 });
      const g2 = makeGrads(4, 2, 0.1);
      const yes = tf.scalar(true, 'bool');
      const u2 = opt.update(g2, { lr: 0.01, wd: 0.05 }, { applyIf: yes });
      const n2 = ref.apply(g2, { lr: 0.01, wd: 0.05 });
      assert.equal(u2.gradNorm.dataSync()[0], n2);
      assert.deepEqual(snapshot(p), snapshot(q), `${what} (${layout}): applyIf true = apply`);
      tf.dispose([u2.gradNorm, yes, ...g0.values(), ...g2.values(), ...p.values(), ...q.values()]);
      opt.dispose();
      ref.dispose();
    }
  }
});

test('a parameter without a gradient keeps its value and moments (flat layout = per-parameter layout)', async () => {
  await testBackend();
  const missing = ['blocks.0.fc.weight', 'stem.bn.bias'];
  for (const [what, make] of VARIANTS) {
    const pa = makeParams(5);
    const pb = makeParams(5);
    const a = make(pa, 'flat');
    const b = make(pb, 'param');
    const init = snapshot(pa);
    for (let s = 0; s < 2; s++) {
      const g = makeGrads(6, s, 0.2, missing);
      a.apply(g, { lr: 0.02, wd: 0.1 });
      b.apply(g, { lr: 0.02, wd: 0.1 });
      tf.dispose([...g.values()]);
    }
    const sa = snapshot(pa);
    for (const k of missing) assert.deepEqual(sa.get(k), init.get(k), `${what}: ${k} untouched`);
    assert.notDeepEqual(sa.get('head.weight'), init.get('head.weight'));
    assertClose(sa, snapshot(pb), 1e-6, `${what}: params`);
    const ma = stateArrays(a);
    for (const k of missing) assert.ok(ma.get(`${k}.exp_avg`)!.every((x) => x === 0), `${what}: ${k} moments stay 0`);
    assertClose(ma, stateArrays(b), 1e-6, `${what}: moments`);
    a.dispose();
    b.dispose();
    tf.dispose([...pa.values(), ...pb.values()]);
  }
});

test('state written by one layout continues exactly in the other', async () => {
  await testBackend();
  const pa = makeParams(7);
  const a = new Lamb(buildParamGroups(pa), { betas: [0.9, 0.95], layout: 'flat' });
  const g = makeGrads(8, 0, 0.1);
  a.apply(g, { lr: 0.01, wd: 0.05 });
  const st = a.getState();
  assert.deepEqual([...st.tensors.keys()].sort(), Object.keys(SHAPES).flatMap((k) => [`${k}.exp_avg`, `${k}.exp_avg_sq`]).sort());
  for (const [k, t] of st.tensors) assert.deepEqual(t.shape, SHAPES[k.replace(/\.exp_avg(_sq)?$/, '')], k);
  for (const layout of ['flat', 'param'] as const) {
    const pb = new Map([...pa].map(([k, v]) => [k, tf.variable(v.clone(), true, `copy/${layout}/${k}/${Math.random()}`)]));
    const b = new Lamb(buildParamGroups(pb), { betas: [0.9, 0.95], layout });
    b.setState(st);
    assert.deepEqual(stateArrays(b), stateArrays(a), `${layout}: restored moments`);
    assert.deepEqual(await b.getStateAsync(), b.getState(), `${layout}: getStateAsync = getState`);
    b.dispose();
    tf.dispose([...pb.values()]);
  }
  // a bad state leaves the optimizer untouched
  const bad = new Map(st.tensors);
  bad.delete('head.weight.exp_avg_sq');
  assert.throws(() => a.setState({ groupSteps: st.groupSteps, tensors: bad }), /missing head\.weight\.exp_avg_sq/);
  tf.dispose([...g.values(), ...pa.values()]);
  a.dispose();
});

test('one flat update costs about three kernel calls per parameter and a few copies of the group in memory', async () => {
  await testBackend();
  // 60 parameters of rank 2 in one decay group (the worst case: each needs a Reshape in and out)
  const params = new Map<string, tf.Variable>();
  for (let i = 0; i < 60; i++) params.set(`l${i}.weight`, tf.variable(tf.fill([4, 10 + i], 0.1), true, `count/${i}/${Math.random()}`));
  const grads = new Map([...params].map(([k, v]) => [k, tf.onesLike(v)]));
  for (const [kind, opt] of [['lamb', new Lamb(buildParamGroups(params), { layout: 'flat' })], ['adamw', new AdamW(buildParamGroups(params), { maxGradNorm: 1, layout: 'flat' })]] as const) {
    const yes = tf.scalar(true, 'bool');
    const bytesBefore = tf.memory().numBytes;
    const prof = await tf.profile(() => {
      const u = opt.update(grads, { lr: 0.01, wd: 0.05 }, { applyIf: yes });
      u.gradNorm.dispose();
    });
    yes.dispose();
    // whole-group temporaries are freed as soon as they are used: the update's peak is a few copies of the group
    const flatBytes = 60 * 256 * 4; // each parameter fits one padded row here
    const peak = (prof.peakBytes - bytesBefore) / flatBytes;
    assert.ok(peak <= 10, `${kind}: the update's peak is ${peak.toFixed(1)} × the flat group (gradients, parameters, new moments, ~3 temporaries)`);
    const n = prof.kernels.length;
    assert.ok(n <= 3 * 60 + 50, `${kind}: ${n} kernel calls for 60 parameters`);
    const names = new Set(prof.kernels.map((k) => k.name));
    assert.ok(!names.has('Identity') && !names.has('Cast'), `${kind}: no Identity / Cast (${[...names].join(', ')})`);
    opt.dispose();
  }
  tf.dispose([...params.values(), ...grads.values()]);
});

test('groups larger than one flat block (FLAT_BLOCK elements) are split into blocks: same result as per parameter', async () => {
  await testBackend();
  const shapes: Record<string, number[]> = { 'a.weight': [3, 3, 64, 1000], 'a.bias': [1000], 'b.weight': [1000, 900], 'c.weight': [300, 100], 'b.bias': [900] };
  const total = Object.values(shapes).reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
  assert.ok(total > FLAT_BLOCK, `${total} elements: more than one block`);
  const make = (tag: string) => {
    const rng = Rng.from(9, 'big');
    return new Map(Object.entries(shapes).map(([k, s]) => [k, tf.variable(tf.tensor(values(rng, s.reduce((a, b) => a * b, 1), 0.1), s), true, `big/${tag}/${k}/${Math.random()}`)]));
  };
  const pa = make('flat');
  const pb = make('param');
  const a = new Lamb(buildParamGroups(pa), { betas: [0.9, 0.95], layout: 'flat' });
  const b = new Lamb(buildParamGroups(pb), { betas: [0.9, 0.95], layout: 'param' });
  for (let s = 0; s < 2; s++) {
    const rng = Rng.from(10, 'big-grads', s);
    const g = new Map(Object.entries(shapes).filter(([k]) => !(s === 1 && k === 'c.weight')).map(([k, sh]) => [k, tf.tensor(values(rng, sh.reduce((x, y) => x * y, 1), 0.01), sh)]));
    const na = a.apply(g, { lr: 0.01, wd: 0.05 });
    const nb = b.apply(g, { lr: 0.01, wd: 0.05 });
    assert.ok(Math.abs(na - nb) <= 1e-6 * nb, `grad norm ${na} vs ${nb}`);
    tf.dispose([...g.values()]);
  }
  assertClose(snapshot(pa), snapshot(pb), 1e-6, 'params');
  assertClose(stateArrays(a), stateArrays(b), 1e-6, 'moments');
  // state round trip through the blocks
  const pc = make('copy');
  const c = new Lamb(buildParamGroups(pc), { betas: [0.9, 0.95], layout: 'flat' });
  c.setState(a.getState());
  assert.deepEqual(stateArrays(c), stateArrays(a));
  for (const o of [a, b, c]) o.dispose();
  tf.dispose([...pa.values(), ...pb.values(), ...pc.values()]);
});

test('gradDivisor: summed gradients divided inside the update = dividing them first, bit for bit', async () => {
  await testBackend();
  for (const layout of ['flat', 'param'] as const) {
    for (const [what, make] of VARIANTS) {
      const pa = makeParams(11);
      const pb = makeParams(11);
      const a = make(pa, layout);
      const b = make(pb, layout);
      for (let s = 0; s < 2; s++) {
        const sums = makeGrads(12, s, 0.3, s === 1 ? ['head.weight'] : []);
        const divided = new Map([...sums].map(([k, g]) => [k, tf.div(g, 3)]));
        const ua = a.update(sums, { lr: 0.01, wd: 0.05 }, { gradDivisor: 3 });
        const nb = b.apply(divided, { lr: 0.01, wd: 0.05 });
        assert.equal(ua.gradNorm.dataSync()[0], nb, `${what} (${layout}): norm`);
        tf.dispose([ua.gradNorm, ...sums.values(), ...divided.values()]);
      }
      assert.deepEqual(snapshot(pa), snapshot(pb), `${what} (${layout}): params`);
      assert.deepEqual(stateArrays(a), stateArrays(b), `${what} (${layout}): moments`);
      a.dispose();
      b.dispose();
      tf.dispose([...pa.values(), ...pb.values()]);
    }
  }
});
