import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { Lamb, AdamW, buildParamGroups, isNoDecay } from '../src/train/optimizers.js';

function assertClose(actual: ArrayLike<number>, expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

test('param groups follow spec §6.4', () => {
  assert.equal(isNoDecay('layer1.0.conv1.weight', [1, 1, 64, 64]), false);
  assert.equal(isNoDecay('layer1.0.bn1.weight', [64]), true);
  assert.equal(isNoDecay('densify_projs.1.bias', [384]), true);
  assert.equal(isNoDecay('mask_tokens.0', [1, 1, 1, 2048]), true);
  assert.equal(isNoDecay('stages.0.0.gamma', [96]), true);
  assert.equal(isNoDecay('pwconv1.weight', [96, 384]), false);
});

test('O11: LAMB, two steps with global clipping', async () => {
  await testBackend();
  const W = tf.variable(tf.tensor2d([[1, 2], [3, 4]]), true, 'o11/W');
  const b = tf.variable(tf.tensor1d([0.5, -0.5]), true, 'o11/b');
  const params = new Map<string, tf.Variable>([['fc.weight', W], ['fc.bias', b]]);
  const groups = buildParamGroups(params);
  assert.deepEqual(groups.map((g) => [g.name, g.params.map((p) => p.name)]), [['decay', ['fc.weight']], ['no_decay', ['fc.bias']]]);
  const opt = new Lamb(groups, { betas: [0.9, 0.95], eps: 1e-6, maxGradNorm: 5 });
  const before = tf.memory().numTensors;

  const g1 = { 'fc.weight': tf.tensor2d([[0.1, -0.2], [0.3, -0.4]]), 'fc.bias': tf.tensor1d([0.05, 0.02]) };
  const n1 = opt.apply(g1, { lr: 0.01, wd: 0.04 });
  assert.ok(Math.abs(n1 - 0.5503635) < 1e-6, `grad norm 1: ${n1}`);
  assertClose(W.dataSync(), [0.97111124, 2.02555561, 2.96888876, 4.02333355], 1e-6, 'W after step 1');
  assertClose(b.dataSync(), [0.49000019, -0.50999951], 1e-6, 'b after step 1');

  const g2 = { 'fc.weight': tf.tensor2d([[3, -4], [0, 0]]), 'fc.bias': tf.tensor1d([1, 2]) };
  const n2 = opt.apply(g2, { lr: 0.01, wd: 0.04 });
  assert.ok(Math.abs(n2 - 5.4772258) < 1e-5, `grad norm 2: ${n2}`);
  assertClose(W.dataSync(), [0.94031334, 2.05216694, 2.9380939, 4.04332733], 1e-6, 'W after step 2');
  assertClose(b.dataSync(), [0.48229927, -0.51742113], 1e-6, 'b after step 2');
  assert.deepEqual(groups.map((g) => g.step), [2, 2]);
  // grads are the caller's; the optimizer leaks nothing
  tf.dispose([...Object.values(g1), ...Object.values(g2)]);
  assert.equal(tf.memory().numTensors, before);

  // state round trip into a fresh optimizer reproduces the next step exactly
  const st = opt.getState();
  assert.deepEqual(st.groupSteps, { decay: 2, no_decay: 2 });
  assert.equal(st.tensors.size, 4);
  const W2 = tf.variable(W.clone(), true, 'o11/W2');
  const b2 = tf.variable(b.clone(), true, 'o11/b2');
  const opt2 = new Lamb(buildParamGroups(new Map<string, tf.Variable>([['fc.weight', W2], ['fc.bias', b2]])), { betas: [0.9, 0.95], eps: 1e-6, maxGradNorm: 5 });
  opt2.setState(st);
  const g3 = { 'fc.weight': tf.tensor2d([[0.5, 0.1], [-0.2, 0.3]]), 'fc.bias': tf.tensor1d([-0.3, 0.1]) };
  opt.apply(g3, { lr: 0.02, wd: 0.05 });
  opt2.apply(g3, { lr: 0.02, wd: 0.05 });
  assert.deepEqual(Array.from(W2.dataSync()), Array.from(W.dataSync()));
  assert.deepEqual(Array.from(b2.dataSync()), Array.from(b.dataSync()));
  tf.dispose([...Object.values(g3), W, b, W2, b2]);
  opt.dispose();
  opt2.dispose();
});

/** Hand computation of timm AdamW in float64. */
function adamwRef(p: number[], grads: number[][], lr: number, wd: number, b1: number, b2: number, eps: number): number[] {
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  const x = p.slice();
  grads.forEach((g, k) => {
    const step = k + 1;
    const bc1 = 1 - b1 ** step;
    const bc2 = 1 - b2 ** step;
    for (let i = 0; i < x.length; i++) {
      x[i] = x[i]! * (1 - lr * wd);
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
      const denom = Math.sqrt(v[i]!) / Math.sqrt(bc2) + eps;
      x[i] = x[i]! - (lr / bc1) * (m[i]! / denom);
    }
  });
  return x;
}

test('AdamW matches a hand computation (decoupled decay, bias correction, no decay for biases)', async () => {
  await testBackend();
  const W = tf.variable(tf.tensor2d([[1, -2], [0.5, 4]]), true, 'adamw/W');
  const b = tf.variable(tf.tensor1d([0.25, -0.75]), true, 'adamw/b');
  const opt = new AdamW(buildParamGroups(new Map<string, tf.Variable>([['head.weight', W], ['head.bias', b]])), { betas: [0.9, 0.999] });
  assert.equal(opt.eps, 1e-8);
  const gW = [[0.3, -0.1, 0.2, 0.05], [-0.4, 0.2, 0.1, -0.3], [0.01, 0.02, -0.03, 0.5]];
  const gb = [[0.1, -0.2], [0.05, 0.4], [-0.3, 0.02]];
  for (let k = 0; k < 3; k++) {
    const g = new Map<string, tf.Tensor>([['head.weight', tf.tensor2d(gW[k]!, [2, 2])], ['head.bias', tf.tensor1d(gb[k]!)]]);
    opt.apply(g, { lr: 0.05, wd: 0.1 });
    tf.dispose([...g.values()]);
  }
  assertClose(W.dataSync(), adamwRef([1, -2, 0.5, 4], gW, 0.05, 0.1, 0.9, 0.999, 1e-8), 2e-6, 'W');
  assertClose(b.dataSync(), adamwRef([0.25, -0.75], gb, 0.05, 0, 0.9, 0.999, 1e-8), 2e-6, 'b');
  opt.dispose();
  tf.dispose([W, b]);
});

test('AdamW global clip scales gradients by max/(G+1e-6)', async () => {
  await testBackend();
  const W = tf.variable(tf.tensor2d([[1, 2], [3, 4]]), true, 'adamwc/W');
  const opt = new AdamW(buildParamGroups(new Map<string, tf.Variable>([['w.weight', W]])), { betas: [0.9, 0.999], maxGradNorm: 1 });
  const g = tf.tensor2d([[3, 0], [0, 4]]); // norm 5
  const n = opt.apply({ 'w.weight': g }, { lr: 0.1, wd: 0 });
  assert.ok(Math.abs(n - 5) < 1e-6);
  // step 1 of Adam: update = lr·sign-ish(m̂/sqrt(v̂)) = lr·g/|g| for nonzero g (clip cancels); zero grads leave values
  assertClose(W.dataSync(), [0.9, 2, 3, 3.9], 1e-6, 'W');
  const st = opt.getState();
  assertClose(Array.from(new Float32Array(st.tensors.get('w.weight.exp_avg')!.data.slice().buffer)), [0.06, 0, 0, 0.08], 1e-6, 'exp_avg holds clipped grads');
  tf.dispose([g, W]);
  opt.dispose();
});

test('LAMB fine-tuning variant: no bias correction, trust ratio on every group', async () => {
  await testBackend();
  const b = tf.variable(tf.tensor1d([3, 4]), true, 'lambft/b');
  const opt = new Lamb(buildParamGroups(new Map<string, tf.Variable>([['x.bias', b]])), { alwaysAdapt: true, biasCorrection: false, maxGradNorm: 1e7 });
  const g = tf.tensor1d([1, 0]);
  opt.apply({ 'x.bias': g }, { lr: 0.1, wd: 0.5 });
  // m = 0.1·g, v = 0.001·g², u = m/(sqrt(v)+1e-6) = [0.1/(0.0316228+1e-6), 0]; no decay (no_decay group);
  // trust = ||p||/||u|| = 5/|u0| → update = lr·5·[1, 0]
  assertClose(b.dataSync(), [3 - 0.5, 4], 1e-5, 'b');
  tf.dispose([g, b]);
  opt.dispose();
});
