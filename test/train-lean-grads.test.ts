/**
 * `leanVariableGrads` (src/train/lean-grads.ts, issue 12 item 4): the same loss and bit-identical gradients as
 * `tf.variableGrads` on SparK models of both families (with DropPath, masked and densify ops), no tensor left
 * behind, and a lower peak of live tensor bytes (tfjs's own accounting, `tf.profile`), because activation gradients
 * and saved tensors are released during the backward pass instead of at its end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { buildSparK } from '../src/models/spark.js';
import { leanVariableGrads } from '../src/train/lean-grads.js';
import { Rng } from '../src/util/rng.js';

await testBackend();

function input(seed: number): tf.Tensor4D {
  const r = Rng.from(seed, 'lean-grads-input');
  const d = new Float32Array(2 * 64 * 64 * 3);
  for (let i = 0; i < d.length; i++) d[i] = r.normal();
  return tf.tensor4d(d, [2, 64, 64, 3]);
}

for (const encoder of ['resnet_mini', 'convnext_mini']) {
  test(`${encoder}: the same loss and bit-identical gradients as tf.variableGrads, nothing left behind, a lower peak`, async () => {
    const m = buildSparK({ encoder, decoder: { type: 'light', width: 64 }, mask_ratio: 0.6, drop_path: 0.3, densify_norm: 'auto' }, 64, 3);
    const x = input(1);
    const mask = m.makeMask(2, Rng.from(0, 'mask', 0, 0));
    const vars = [...m.params.values()];
    // the same DropPath draws both times; BatchNorm in training mode uses batch statistics, so the running
    // statistics that the first pass updates do not change the second pass
    const loss = () => m.forward(x, mask, { training: true, rng: Rng.from(0, 'droppath', 0, 0) }).loss;
    const before = tf.memory().numTensors;
    const baseBytes = tf.memory().numBytes;
    let ref!: { value: tf.Scalar; grads: tf.NamedTensorMap };
    let lean!: { value: tf.Scalar; grads: tf.NamedTensorMap };
    const pRef = await tf.profile(() => {
      ref = tf.variableGrads(loss, vars);
    });
    const peakRef = Math.max(...pRef.kernels.map((k) => k.totalBytesSnapshot)) - baseBytes;
    const pLean = await tf.profile(() => {
      lean = leanVariableGrads(loss, vars);
    });
    const peakLean = Math.max(...pLean.kernels.map((k) => k.totalBytesSnapshot)) - baseBytes;
    assert.equal(lean.value.dataSync()[0], ref.value.dataSync()[0], 'loss');
    assert.deepEqual(Object.keys(lean.grads).sort(), Object.keys(ref.grads).sort(), 'the same parameters get gradients');
    assert.ok(Object.keys(ref.grads).length > 20);
    for (const [name, g] of Object.entries(ref.grads)) {
      const l = lean.grads[name]!;
      assert.deepEqual(l.shape, g.shape, name);
      assert.deepEqual(Array.from(l.dataSync()), Array.from(g.dataSync()), `gradient of ${name}`);
    }
    tf.dispose([ref.value, ...Object.values(ref.grads), lean.value, ...Object.values(lean.grads)]);
    assert.equal(tf.memory().numTensors, before, 'every tensor of the backward pass is released');
    assert.ok(peakLean < 0.8 * peakRef, `peak live tensor bytes above the weights: lean ${peakLean} should be well below tfjs's ${peakRef}`);
    tf.dispose([x, mask]);
    m.dispose();
  });
}

test('leanVariableGrads: a variable the loss does not reach gets no gradient; a non-scalar result is an error', () => {
  const a = tf.variable(tf.tensor1d([1, 2, 3]));
  const b = tf.variable(tf.tensor1d([4, 5]));
  const before = tf.memory().numTensors;
  const r = leanVariableGrads(() => tf.sum(tf.mul(a, a)), [a, b]);
  assert.deepEqual(Object.keys(r.grads), [a.name]);
  assert.deepEqual(Array.from(r.grads[a.name]!.dataSync()), [2, 4, 6]);
  tf.dispose([r.value, ...Object.values(r.grads)]);
  assert.equal(tf.memory().numTensors, before);
  assert.throws(() => leanVariableGrads(() => tf.mul(a, 2) as unknown as tf.Scalar, [a]), /scalar/);
  assert.equal(tf.memory().numTensors, before, 'nothing left behind after the error either');
  tf.dispose([a, b]);
});
