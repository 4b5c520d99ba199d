/**
 * Training-mode forward+backward of SparK: O12 (loss ≈ 1 at init), gradients reach every trainable tensor (except
 * those the zero-initialised bn3 γ blocks, see below), no tensor leak, BN buffers update. Small variants at 64×64
 * always; full-size ResNet-50 / ConvNeXt-S at 224 only on the native backend (timings reported as diagnostics).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { requireNative, testBackend } from './helpers/backend.js';
import { cfg, randn, countParams } from './helpers/model.js';
import { buildSparK, type SparKModel } from '../src/models/spark.js';
import { describeEncoder, sparkParamCount } from '../src/models/registry.js';
import { Rng } from '../src/util/rng.js';

await testBackend();



/** Keys whose gradient is legitimately zero at init in a ResNet: everything in a residual branch upstream of bn3 (γ = 0). */
const ZERO_AT_INIT = /^sparse_encoder\.sp_cnn\.layer\d\.\d+\.(conv1\.weight|bn1\.(weight|bias)|conv2\.weight|bn2\.(weight|bias)|conv3\.weight)$/;

function gradStep(m: SparKModel, x: tf.Tensor4D, mask: tf.Tensor4D): { loss: number; maxAbs: Map<string, number>; leaked: number } {
  const keys = [...m.params.keys()];
  const vars = keys.map((k) => m.params.get(k)!);
  const before = tf.memory().numTensors;
  const maxAbs = new Map<string, number>();
  let loss = NaN;
  tf.tidy(() => {
    const { value, grads } = tf.variableGrads(() => m.forward(x, mask, { training: true, rng: Rng.from(9, 'droppath', 0) }).loss, vars);
    for (const [i, k] of keys.entries()) {
      const g = grads[vars[i]!.name]!;
      assert.deepEqual(g.shape, vars[i]!.shape, k);
      maxAbs.set(k, tf.max(tf.abs(g)).dataSync()[0]!);
    }
    loss = value.dataSync()[0]!;
  });
  return { loss, maxAbs, leaked: tf.memory().numTensors - before };
}

test('resnet_mini: O12 loss ≈ 1 at init; gradients reach every tensor except the bn3-blocked ones; no tensor leak; BN buffers update', () => {
  const m = buildSparK(cfg('resnet_mini'), 64, 1);
  try {
    const x = randn([2, 64, 64, 3], 20);
    const mask = m.makeMask(2, Rng.from(1, 'mask', 0));
    const nbt = m.buffers.get('sparse_encoder.sp_cnn.bn1.num_batches_tracked')!;
    const rm = m.buffers.get('densify_norms.0.running_mean')!;
    const r = gradStep(m, x, mask);
    assert.equal(r.leaked, 0, 'numTensors equal before/after forward+backward');
    assert.ok(r.loss > 0.95 && r.loss < 1.05, `loss at init ${r.loss}`);
    const zero = [...r.maxAbs].filter(([, v]) => v === 0).map(([k]) => k);
    const expectedZero = [...m.params.keys()].filter((k) => ZERO_AT_INIT.test(k));
    assert.equal(expectedZero.length, 4 * 7);
    assert.deepEqual(zero.sort(), expectedZero.sort());
    for (const [k, v] of r.maxAbs) if (!ZERO_AT_INIT.test(k)) assert.ok(Number.isFinite(v) && v > 0, `${k} has a gradient`);
    // running stats and the batch counter were updated
    assert.equal(nbt.dataSync()[0], 1);
    assert.ok(tf.tidy(() => tf.max(tf.abs(rm)).dataSync()[0]!) > 0);
    // with bn3 γ ≠ 0 every tensor gets a gradient
    for (const [k, v] of m.params) if (/\.bn3\.weight$/.test(k)) v.assign(tf.fill(v.shape, 0.5));
    const r2 = gradStep(m, x, mask);
    assert.equal(r2.leaked, 0);
    for (const [k, v] of r2.maxAbs) assert.ok(v > 0, `${k} has a gradient once bn3 γ ≠ 0`);
    assert.equal(nbt.dataSync()[0], 2);
    tf.dispose([x, mask]);
  } finally {
    m.dispose();
  }
});

test('convnext_mini: O12 loss ≈ 1 at init; every trainable tensor gets a gradient; no tensor leak', () => {
  const m = buildSparK(cfg('convnext_mini'), 64, 1);
  try {
    const x = randn([2, 64, 64, 3], 21);
    const mask = m.makeMask(2, Rng.from(1, 'mask', 0));
    const r = gradStep(m, x, mask);
    assert.equal(r.leaked, 0);
    assert.ok(r.loss > 0.95 && r.loss < 1.05, `loss at init ${r.loss}`);
    for (const [k, v] of r.maxAbs) assert.ok(Number.isFinite(v) && v > 0, `${k} has a gradient`);
    tf.dispose([x, mask]);
  } finally {
    m.dispose();
  }
});

for (const enc of ['resnet50', 'convnext_small']) {
  test(`${enc} at 224, batch 2: counts, O2 shapes, O12 loss ≈ 1.0066, forward+backward (native only)`, async (t) => {
    if (!(await requireNative(t, `${enc} at 224`))) return;
    const t0 = Date.now();
    const m = buildSparK(cfg(enc, 768, null), 224, 0);
    const tBuild = Date.now() - t0;
    try {
      assert.equal(countParams(m), sparkParamCount(cfg(enc, 768), 224));
      const x = randn([2, 224, 224, 3], 50);
      const mask = m.makeMask(2, Rng.from(0, 'mask', 0));
      const feats = m.encode(x, mask, { training: false });
      const ch = describeEncoder(enc).stageChannels;
      assert.deepEqual(feats.map((f) => f.shape), [56, 28, 14, 7].map((s, i) => [2, s, s, ch[i]]));
      tf.dispose(feats);
      const vars = [...m.params.values()];
      const run = () => {
        const r = { loss: NaN, gn: NaN };
        tf.tidy(() => {
          const { value, grads } = tf.variableGrads(() => m.forward(x, mask, { training: true, rng: Rng.from(0, 'droppath', 0) }).loss, vars);
          r.gn = tf.sqrt(tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g))))).dataSync()[0]!;
          r.loss = value.dataSync()[0]!;
        });
        return r;
      };
      const t1 = Date.now();
      const r = run();
      const tFirst = Date.now() - t1;
      const before = tf.memory().numTensors;
      const t2 = Date.now();
      run();
      const tSecond = Date.now() - t2;
      assert.equal(tf.memory().numTensors, before);
      t.diagnostic(`${enc}: build ${tBuild} ms, forward+backward batch 2 @224: first ${tFirst} ms, second ${tSecond} ms, loss ${r.loss.toFixed(5)}, grad norm ${r.gn.toFixed(4)}`);
      assert.ok(Math.abs(r.loss - 1.0066) < 0.03, `loss at init ${r.loss}`);
      assert.ok(Number.isFinite(r.gn) && r.gn > 0);
      tf.dispose([x, mask]);
    } finally {
      m.dispose();
    }
  });
}
