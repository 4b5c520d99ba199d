/**
 * spark's own TensorFlow ops (native/tf/spark_tf_ops.cc via src/backend/tf-native-ops.ts): on the tensorflow backend
 * with the ops addon built (`npm run setup:native` builds it), the addon loads, its kernels are the ones registered
 * for the optimizer / GELU / LayerNorm contracts, and each op agrees with the portable composite (the optimizer and
 * norm ops are also compared in train-fused-optim and model-fused). Skips, saying why, elsewhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { loadTfOps, tfOpsBuilt } from '../src/backend/tf-native-ops.js';
import { geluGradPortable, geluPortable, layerNormGradPortable, layerNormPortable } from '../src/models/fused.js';
import { Rng } from '../src/util/rng.js';

const info = await testBackend();

function randn(shape: number[], seed: number, scale = 1): tf.Tensor {
  const r = Rng.from(seed, 'tf-ops-test');
  const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < d.length; i++) d[i] = r.normal() * scale;
  return tf.tensor(d, shape);
}

function relErr(a: tf.Tensor, ref: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, ref))).dataSync()[0]! / Math.max(tf.max(tf.abs(ref)).dataSync()[0]!, 1e-30));
}

test('tensorflow backend: spark ops load and run GELU and LayerNorm like the portable composites', (t) => {
  if (info.name !== 'tensorflow') {
    t.skip(`backend '${info.name}': spark's TensorFlow ops are for the tensorflow backend`);
    return;
  }
  const built = tfOpsBuilt();
  if (!built.built) {
    t.skip(`spark's TensorFlow ops are ${built.reason}`);
    return;
  }
  const s = loadTfOps();
  assert.ok(s.loaded, `the ops addon is built but does not load: ${s.reason}`);
  for (const op of ['SparkTfLamb', 'SparkTfAdamW', 'SparkTfGlobalNorm', 'SparkTfGelu', 'SparkTfGeluGrad', 'SparkTfLayerNorm', 'SparkTfLayerNormGrad', 'SparkTfMaskedBatchNorm', 'SparkTfMaskedBatchNormGrad']) {
    assert.ok(s.ops.includes(op), `${op} registered`);
  }
  for (const k of ['SparkLambUpdate', 'SparkAdamWUpdate', 'SparkGlobalNorm']) assert.ok(tf.getKernel(k, 'tensorflow'), `${k} kernel registered`);
  const before = tf.memory().numTensors;
  // values over (−8, 8): GELU's tails and its erf approximation's clamp at |x/√2| = 4
  const x = randn([3, 5, 7, 96], 1, 3);
  const dy = randn([3, 5, 7, 96], 2);
  const g = randn([96], 3, 0.5);
  const b = randn([96], 4, 0.2);
  const run = (name: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, number> = {}) => {
    const out = tf.engine().runKernel(name, inputs as unknown as tf.NamedTensorMap, attrs) as tf.Tensor | tf.Tensor[];
    return Array.isArray(out) ? out : [out];
  };
  const checks: Array<[string, tf.Tensor, tf.Tensor]> = [];
  const [y] = run('SparkGelu', { x });
  checks.push(['GELU', y!, geluPortable(x)]);
  const [dx] = run('SparkGeluGrad', { dy, x });
  checks.push(['GELU gradient', dx!, geluGradPortable(dy, x)]);
  const ln = run('SparkLayerNorm', { x, gamma: g, beta: b }, { epsilon: 1e-6 });
  const lnRef = layerNormPortable(x, g, b, 1e-6);
  ln.forEach((o, i) => checks.push([`LayerNorm output ${i}`, o, lnRef[i]!]));
  const lng = run('SparkLayerNormGrad', { dy, x, gamma: g, mean: ln[1]!, invStd: ln[2]! });
  const lngRef = layerNormGradPortable(dy, x, g, ln[1]!, ln[2]!);
  lng.forEach((o, i) => checks.push([`LayerNorm gradient ${i}`, o, lngRef[i]!]));
  for (const [what, got, want] of checks) {
    assert.deepEqual(got.shape, want.shape, what);
    const e = relErr(got, want);
    assert.ok(e <= 1e-5, `${what}: relative error ${e}`);
  }
  tf.dispose([x, dy, g, b, ...checks.flatMap(([, a, c]) => [a, c])]);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
});
