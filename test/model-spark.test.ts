/**
 * The SparK model: O2 (shapes), O5 (no leak of masked pixels), built variable counts = arithmetic, reconstruction
 * composite, determinism of init, the dense encoder with a head. Small variants at 64×64 on every backend.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { cfg, randn, countParams } from './helpers/model.js';
import { buildEncoder, buildSparK, patchify } from '../src/models/spark.js';
import { describeEncoder, sparkParamCount } from '../src/models/registry.js';
import { Rng } from '../src/util/rng.js';
import { exportState, importState } from '../src/models/weights.js';
import { DataError } from '../src/util/errors.js';

await testBackend();


/** The O6 mask at f = 2: image 0 [[1,0],[0,1]], image 1 [[0,1],[0,0]]. */
const o6Mask = () => tf.tensor4d([1, 0, 0, 1, 0, 1, 0, 0], [2, 2, 2, 1]);

for (const enc of ['resnet_mini', 'convnext_mini']) {
  test(`${enc}: O2 shapes, built counts = arithmetic, lenKeep, deterministic init`, () => {
    const m = buildSparK(cfg(enc), 64, 7);
    try {
      assert.equal(m.fmap, 2);
      assert.equal(m.lenKeep, 2); // round(4·0.4 = 1.6) = 2
      assert.equal(countParams(m), sparkParamCount(cfg(enc), 64));
      const info = describeEncoder(enc);
      const x = randn([2, 64, 64, 3], 1);
      const mask = o6Mask();
      const feats = m.encode(x, mask, { training: false });
      assert.deepEqual(feats.map((f) => f.shape), [16, 8, 4, 2].map((s, i) => [2, s, s, info.stageChannels[i]]));
      const dense = m.encode(x, null, { training: false });
      assert.deepEqual(dense.map((f) => f.shape), feats.map((f) => f.shape));
      const { loss, pred } = m.forward(x, mask, { training: false });
      assert.deepEqual(pred.shape, [2, 64, 64, 3]);
      assert.deepEqual(loss.shape, []);
      // same seed ⇒ same init; a different seed ⇒ different init
      const m2 = buildSparK(cfg(enc), 64, 7);
      const m3 = buildSparK(cfg(enc), 64, 8);
      const key = enc === 'resnet_mini' ? 'sparse_encoder.sp_cnn.conv1.weight' : 'sparse_encoder.sp_cnn.stages.0.0.pwconv1.weight';
      assert.deepEqual(Array.from(m2.params.get(key)!.dataSync()), Array.from(m.params.get(key)!.dataSync()));
      assert.notDeepEqual(Array.from(m3.params.get(key)!.dataSync()), Array.from(m.params.get(key)!.dataSync()));
      m2.dispose();
      m3.dispose();
      tf.dispose([x, mask, feats, dense, loss, pred]);
    } finally {
      m.dispose();
    }
  });

  test(`${enc}: O5 no leak — masked pixels do not change any encoder output; outputs are 0 at masked positions`, () => {
    const m = buildSparK(cfg(enc, 64, 0.3), 64, 3);
    try {
      const mask = o6Mask();
      const x1 = randn([2, 64, 64, 3], 10);
      const noise = randn([2, 64, 64, 3], 11);
      const up = tf.tidy(() => tf.tile(mask.reshape([2, 2, 1, 2, 1, 1]), [1, 1, 32, 1, 32, 1]).reshape([2, 64, 64, 1]));
      // x2 = x1 at visible pixels, different values (×100 noise) at masked pixels
      const x2 = tf.tidy(() => tf.add(tf.mul(x1, up), tf.mul(tf.mul(noise, 100), tf.sub(1, up))) as tf.Tensor4D);
      const f1 = m.encode(x1, mask, { training: true, rng: Rng.from(5, 'droppath', 0) });
      const f2 = m.encode(x2, mask, { training: true, rng: Rng.from(5, 'droppath', 0) });
      for (let i = 0; i < 4; i++) {
        const a = f1[i]!.dataSync();
        const b = f2[i]!.dataSync();
        assert.equal(a.length, b.length);
        let same = true;
        for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) same = false;
        assert.ok(same, `stage ${i} output is bit-identical`);
        const s = f1[i]!.shape[1];
        const mUp = tf.tidy(() => tf.tile(mask.reshape([2, 2, 1, 2, 1, 1]), [1, 1, s / 2, 1, s / 2, 1]).reshape([2, s, s, 1]));
        const leaked = tf.tidy(() => tf.max(tf.abs(tf.mul(f1[i]!, tf.sub(1, mUp)))).dataSync()[0]);
        assert.equal(leaked, 0, `stage ${i} is exactly 0 at masked positions`);
        const visible = tf.tidy(() => tf.max(tf.abs(tf.mul(f1[i]!, mUp))).dataSync()[0]!);
        assert.ok(visible > 0, `stage ${i} has non-zero visible outputs`);
        mUp.dispose();
      }
      // without masking (dense encoder), the same change does alter the outputs: the test can fail
      const d1 = m.encode(x1, null, { training: false });
      const d2 = m.encode(x2, null, { training: false });
      assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(d1[3]!, d2[3]!))).dataSync()[0]!) > 0);
      tf.dispose([mask, x1, noise, up, x2, f1, f2, d1, d2]);
    } finally {
      m.dispose();
    }
  });
}

test('reconstruct: masked input, composite = input at visible pixels and de-normalised prediction elsewhere', () => {
  const m = buildSparK(cfg('convnext_mini'), 64, 2);
  try {
    const x = randn([2, 64, 64, 3], 30);
    const mask = o6Mask();
    const nbtBefore = m.buffers.size ? [...m.buffers.values()].map((b) => b.dataSync()[0]) : [];
    const { masked, composite, loss, pred } = m.reconstruct(x, mask);
    assert.deepEqual(composite.shape, [2, 64, 64, 3]);
    const xp = patchify(x).arraySync() as number[][][];
    const mp = patchify(masked).arraySync() as number[][][];
    const cp = patchify(composite).arraySync() as number[][][];
    const pp = patchify(pred).arraySync() as number[][][];
    const mv = mask.dataSync();
    for (let b = 0; b < 2; b++)
      for (let l = 0; l < 4; l++) {
        if (mv[b * 4 + l]) {
          assert.deepEqual(mp[b]![l], xp[b]![l]);
          assert.deepEqual(cp[b]![l], xp[b]![l]);
        } else {
          assert.ok(mp[b]![l]!.every((v) => v === 0));
          const n = 3072;
          const mean = xp[b]![l]!.reduce((s, v) => s + v, 0) / n;
          const std = Math.sqrt(xp[b]![l]!.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1) + 1e-6);
          for (const j of [0, 1, 100, 3071]) assert.ok(Math.abs(cp[b]![l]![j]! - (pp[b]![l]![j]! * std + mean)) < 1e-4);
        }
      }
    assert.ok(Number.isFinite(loss.dataSync()[0]!));
    // eval mode: no buffer changed
    assert.deepEqual([...m.buffers.values()].map((b) => b.dataSync()[0]), nbtBefore);
    tf.dispose([x, mask, masked, composite, loss, pred]);
  } finally {
    m.dispose();
  }
});

test('buildEncoder: dense encoder with a classification head (timm / official keys)', () => {
  for (const enc of ['resnet_mini', 'convnext_mini']) {
    const e = buildEncoder(enc, { seed: 1, numClasses: 5 });
    try {
      const info = describeEncoder(enc);
      assert.equal(countParams(e), info.encoderParams + info.headParams(5));
      assert.ok(e.params.has(enc.startsWith('resnet') ? 'fc.weight' : 'head.weight'));
      assert.ok(e.params.has(enc.startsWith('resnet') ? 'conv1.weight' : 'downsample_layers.0.0.weight'));
      const x = randn([2, 64, 64, 3], 40);
      const logits = e.classify(x, { training: false });
      assert.deepEqual(logits.shape, [2, 5]);
      const feats = e.encode(x, null, { training: false });
      assert.equal(feats.length, 4);
      tf.dispose([x, logits, feats]);
    } finally {
      e.dispose();
    }
  }
});

test('initialisation follows the reference (spec §2.4, §2.5, §3.2, §3.3, §10.11)', () => {
  const stats = (v: tf.Variable) => {
    const d = v.dataSync();
    let s = 0, s2 = 0, mx = 0;
    for (const x of d) {
      s += x;
      s2 += x * x;
      mx = Math.max(mx, Math.abs(x));
    }
    return { mean: s / d.length, std: Math.sqrt(s2 / d.length - (s / d.length) ** 2), max: mx, n: d.length };
  };
  const r = buildSparK(cfg('resnet_mini', 64), 64, 11);
  const c = buildSparK(cfg('convnext_mini', 64), 64, 11);
  try {
    const P = (m: typeof r, k: string) => {
      const v = m.params.get(k) ?? m.buffers.get(k);
      assert.ok(v, `missing ${k}`);
      return v;
    };
    // ResNet: kaiming normal fan_out (relu): std √(2/(O·k·k)); every bn3 γ = 0; other BN γ = 1, β = 0
    const l3 = stats(P(r, 'sparse_encoder.sp_cnn.layer3.0.conv2.weight')); // 3x3, O = 64
    assert.ok(Math.abs(l3.std - Math.sqrt(2 / (64 * 9))) < 0.1 * Math.sqrt(2 / (64 * 9)), `kaiming std ${l3.std}`);
    for (const [k, v] of r.params) if (/\.bn3\.weight$/.test(k)) assert.equal(stats(v).max, 0, k);
    assert.equal(stats(P(r, 'sparse_encoder.sp_cnn.layer1.0.bn1.weight')).mean, 1);
    assert.deepEqual(Array.from(P(r, 'sparse_encoder.sp_cnn.bn1.running_var').dataSync()), new Array(16).fill(1));
    // mask tokens: trunc normal(0, .02) within ±.02
    const tok = stats(P(r, 'mask_tokens.0'));
    assert.ok(tok.max <= 0.02 && tok.max > 0.01 && tok.std > 0.007 && tok.std < 0.015, JSON.stringify(tok));
    // densify projections: PyTorch default U(±1/√fan_in), fan_in = e·k·k
    const pj = stats(P(r, 'densify_projs.1.weight')); // 256 → 32, 3x3
    const bound = 1 / Math.sqrt(256 * 9);
    assert.ok(pj.max <= bound && pj.max > 0.95 * bound && Math.abs(pj.std - bound / Math.sqrt(3)) < 0.05 * bound, JSON.stringify(pj));
    // decoder: conv trunc normal .02, transposed conv kaiming normal fan_out = cin·16, biases 0
    const dc = stats(P(r, 'dense_decoder.dec.0.conv.0.weight'));
    assert.ok(Math.abs(dc.std - 0.02) < 0.002, `decoder conv std ${dc.std}`);
    const up = stats(P(r, 'dense_decoder.dec.0.up_sample.weight'));
    assert.ok(Math.abs(up.std - Math.sqrt(2 / (64 * 16))) < 0.05 * Math.sqrt(2 / (64 * 16)), `up_sample std ${up.std}`);
    assert.equal(stats(P(r, 'dense_decoder.dec.0.up_sample.bias')).max, 0);
    // ConvNeXt: trunc normal .02 weights, zero biases, γ = 1e-6, LN 1/0
    const pw = stats(P(c, 'sparse_encoder.sp_cnn.stages.2.1.pwconv1.weight'));
    assert.ok(Math.abs(pw.std - 0.02) < 0.001 && Math.abs(pw.mean) < 0.001, JSON.stringify(pw));
    assert.equal(stats(P(c, 'sparse_encoder.sp_cnn.stages.2.1.pwconv1.bias')).max, 0);
    const g = P(c, 'sparse_encoder.sp_cnn.stages.0.0.gamma').dataSync();
    assert.ok(g.every((v) => Math.abs(v - 1e-6) < 1e-12));
    assert.equal(stats(P(c, 'densify_norms.0.weight')).mean, 1);
    assert.ok(c.params.has('densify_projs.0.weight'), 'convnext_mini (256 → 64): densify_projs.0 is a conv');
  } finally {
    r.dispose();
    c.dispose();
  }
});

test('exportState / importState: torch-layout round trip, encoder from a SparK state, strict errors', () => {
  const a = buildSparK(cfg('resnet_mini'), 64, 1);
  const b = buildSparK(cfg('resnet_mini'), 64, 2);
  const e = buildEncoder('resnet_mini', { seed: 3 });
  try {
    a.buffers.get('sparse_encoder.sp_cnn.bn1.num_batches_tracked')!.assign(tf.scalar(7, 'int32'));
    const st = exportState(a, 'torch');
    assert.deepEqual(st.get('sparse_encoder.sp_cnn.conv1.weight')!.shape, [16, 3, 7, 7]);
    assert.deepEqual(st.get('mask_tokens.0')!.shape, [1, 512, 1, 1]);
    const r = importState(b, st, { layout: 'torch' });
    assert.equal(r.loaded.length, a.params.size + a.buffers.size);
    for (const [k, v] of [...a.params, ...a.buffers]) {
      const w = b.params.get(k) ?? b.buffers.get(k)!;
      assert.deepEqual(Array.from(w.dataSync()), Array.from(v.dataSync()), k);
    }
    // the encoder part of a SparK state loads into a dense encoder (timm keys)
    const re = importState(e, exportState(a, 'tf'), { prefix: 'sparse_encoder.sp_cnn.' });
    assert.equal(re.loaded.length, e.params.size + e.buffers.size);
    assert.deepEqual(Array.from(e.params.get('layer2.0.conv2.weight')!.dataSync()), Array.from(a.params.get('sparse_encoder.sp_cnn.layer2.0.conv2.weight')!.dataSync()));
    // strict: a missing key, a shape mismatch
    const partial = new Map(st);
    partial.delete('dense_decoder.proj.bias');
    assert.throws(() => importState(b, partial, { layout: 'torch', source: 'x.pth' }), (err: unknown) => err instanceof DataError && /x\.pth: .*missing 1 key\(s\) \(dense_decoder\.proj\.bias\)/.test(err.message));
    assert.deepEqual(importState(b, partial, { layout: 'torch', strict: false }).missing, ['dense_decoder.proj.bias']);
    const bad = new Map(st);
    bad.set('mask_tokens.1', { shape: [1, 3, 1, 1], dtype: 'float32', data: new Float32Array(3) });
    assert.throws(() => importState(b, bad, { layout: 'torch' }), (err: unknown) => err instanceof DataError && /mask_tokens\.1: shape \[1,3,1,1\]/.test(err.message));
  } finally {
    a.dispose();
    b.dispose();
    e.dispose();
  }
});

test('dense twin (buildSparK { dense: true }): same parameters; its prediction is the sparse model with every cell visible, whatever the mask', () => {
  for (const enc of ['resnet_mini', 'convnext_mini']) {
    const sparse = buildSparK(cfg(enc, 64, 0), 64, 5);
    const dense = buildSparK(cfg(enc, 64, 0), 64, 5, { dense: true });
    try {
      assert.deepEqual([...dense.params.keys()], [...sparse.params.keys()]);
      assert.deepEqual([...dense.buffers.keys()], [...sparse.buffers.keys()]);
      tf.tidy(() => {
        const x = randn([2, 64, 64, 3], 11);
        const ones = tf.ones([2, 2, 2, 1]) as tf.Tensor4D;
        const mask = sparse.makeMask(2, Rng.from(3, 'mask'));
        const ref = sparse.forward(x, ones, { training: true }).pred;
        const got = dense.forward(x, mask, { training: true }).pred;
        const diff = tf.max(tf.abs(tf.sub(ref, got))).dataSync()[0]!;
        assert.ok(diff < 1e-4, `${enc}: dense twin vs all-visible sparse differ by ${diff}`);
        // the sparse model's prediction does depend on the mask; the twin's loss is still the masked-patch loss
        const sp = sparse.forward(x, mask, { training: true }).pred;
        const dep = tf.max(tf.abs(tf.sub(sp, ref))).dataSync()[0]!;
        assert.ok(dep > 100 * Math.max(diff, 1e-6), `${enc}: the sparse prediction depends on the mask (${dep} vs ${diff})`);
        assert.ok(dense.forward(x, mask, { training: true }).loss.dataSync()[0]! > 0);
      });
    } finally {
      sparse.dispose();
      dense.dispose();
    }
  }
});
