/**
 * Gradient accumulation gives the update of the whole batch: the mean of the micro-batch gradients equals the
 * full-batch mean gradient (on a model without BatchNorm for any split, and with BatchNorm — SparK's decoder — when
 * the micro-batches are identical, so per-micro-batch statistics equal the full batch's). And `accumulate: auto`
 * in a run: the micro-batch it chose under a small memory budget is recorded and used.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { tinyConfig, tmpDir } from './helpers/train.js';
import { Rng } from '../src/util/rng.js';
import { buildSparK } from '../src/models/spark.js';
import { buildParamGroups, createOptimizer } from '../src/train/optimizers.js';
import { trainStep, type TrainableModel } from '../src/train/step.js';
import { runExperiment, runWithOomStepDown } from '../src/train/run.js';
import { estimateStepMemory, estimatedPeak } from '../src/models/memory.js';
import { openStore } from '../src/track/index.js';
import { probeMicroBatch } from '../src/train/memory.js';
import type { RunEvent } from '../src/train/events.js';

function randomImages(n: number, size: number, seed: number): tf.Tensor4D {
  const r = Rng.from(seed, 'test-images');
  const a = new Float32Array(n * size * size * 3);
  for (let i = 0; i < a.length; i++) a[i] = r.float() * 2 - 1;
  return tf.tensor4d(a, [n, size, size, 3]);
}

function snapshot(params: Map<string, tf.Variable>): Map<string, Float32Array> {
  return new Map([...params].map(([k, v]) => [k, v.dataSync() as Float32Array]));
}

function maxDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): { diff: number; moved: number } {
  let diff = 0;
  let moved = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(x[i]! - y[i]!));
  }
  return { diff, moved };
}

/** A small masked-reconstruction model without BatchNorm: conv → relu → conv, loss = mean over images of the masked MSE. */
function noBnModel(seed: number): TrainableModel {
  const r = Rng.from(seed, 'init');
  const w = (shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.variable(tf.tensor(Float32Array.from({ length: n }, () => (r.float() - 0.5) * 0.4), shape));
  };
  const params = new Map<string, tf.Variable>([
    ['c1', w([3, 3, 3, 8])],
    ['b1', w([8])],
    ['c2', w([3, 3, 8, 3])],
  ]);
  return {
    params,
    buffers: new Map(),
    makeMask: (batch: number, rng: Rng) => tf.tensor4d(Float32Array.from({ length: batch * 16 }, () => (rng.float() < 0.5 ? 1 : 0)), [batch, 4, 4, 1]),
    forward: (x, mask) => {
      const up = tf.image.resizeNearestNeighbor(mask, [x.shape[1], x.shape[2]]) as tf.Tensor4D;
      const h = tf.relu(tf.add(tf.conv2d(tf.mul(x, up) as tf.Tensor4D, params.get('c1') as unknown as tf.Tensor4D, 1, 'same'), params.get('b1')!)) as tf.Tensor4D;
      const pred = tf.conv2d(h, params.get('c2') as unknown as tf.Tensor4D, 1, 'same') as tf.Tensor4D;
      const err = tf.mul(tf.square(tf.sub(pred, x)), tf.sub(1, up));
      // per-image mean, then the mean over images (equal weights: micro-batch means average to the batch mean)
      const perImage = tf.mean(err, [1, 2, 3]);
      return { loss: tf.mean(perImage) as tf.Scalar, pred };
    },
  };
}

function masksFor(model: TrainableModel, n: number, seed: number): tf.Tensor4D {
  return model.makeMask(n, Rng.from(seed, 'test-mask'));
}

test('accumulation without BatchNorm: 4 micro-batches of 2 = 1 batch of 8 = 2 of 4 (the same update)', async () => {
  await testBackend();
  const x = randomImages(8, 16, 1);
  const results: Map<string, Float32Array>[] = [];
  const losses: number[] = [];
  const norms: number[] = [];
  for (const micro of [8, 4, 2]) {
    const model = noBnModel(3);
    const before = snapshot(model.params);
    const opt = createOptimizer({ name: 'adamw', eps: null, clip_grad: 0 }, buildParamGroups(model.params), [0.9, 0.999]);
    const mask = masksFor(model, 8, 5);
    const parts = tf.split(x, 8 / micro, 0) as tf.Tensor4D[];
    const maskParts = tf.split(mask, 8 / micro, 0) as tf.Tensor4D[];
    const r = trainStep(model, opt, parts, { seed: 1, it: 0, hyper: { lr: 1e-2, wd: 0 }, masks: maskParts });
    assert.ok(r.applied);
    losses.push(r.loss);
    norms.push(r.gradNorm);
    const after = snapshot(model.params);
    assert.ok(maxDiff(before, after).diff > 1e-4, 'the step moved the weights');
    results.push(after);
    tf.dispose([mask, ...parts, ...maskParts]);
    opt.dispose();
    tf.dispose([...model.params.values()]);
  }
  for (let i = 1; i < results.length; i++) {
    const d = maxDiff(results[0]!, results[i]!).diff;
    assert.ok(d < 1e-6, `update of ${[8, 4, 2][i]}-image micro-batches differs from the full batch by ${d}`);
    assert.ok(Math.abs(losses[i]! - losses[0]!) < 1e-6, `mean loss ${losses[i]} vs ${losses[0]}`);
    // the averaged gradient itself (Adam's first update hardly depends on the gradient's scale)
    assert.ok(Math.abs(norms[i]! - norms[0]!) < 1e-5 * norms[0]!, `gradient norm ${norms[i]} vs ${norms[0]}`);
  }
  x.dispose();
});

test('accumulation with BatchNorm (SparK, BN in the decoder): identical micro-batches give the full-batch update', async () => {
  await testBackend();
  const modelCfg = { encoder: { family: 'convnext' as const, depths: [1, 1, 1, 1] as [number, number, number, number], dims: [8, 16, 32, 64] as [number, number, number, number] }, decoder: { type: 'light' as const, width: 32 }, mask_ratio: 0.5, drop_path: 0, densify_norm: 'bn' as const };
  const micro = randomImages(2, 64, 2);
  const results: Map<string, Float32Array>[] = [];
  const norms: number[] = [];
  for (const split of [1, 3]) {
    const model = buildSparK(modelCfg, 64, 11);
    const opt = createOptimizer({ name: 'lamb', eps: null, clip_grad: 5 }, buildParamGroups(model.params), [0.9, 0.95]);
    const m = model.makeMask(2, Rng.from(4, 'test-mask'));
    // the batch: the same 2 images (and masks) three times
    const parts = split === 1 ? [tf.concat([micro, micro, micro], 0) as tf.Tensor4D] : [micro, micro, micro];
    const maskParts = split === 1 ? [tf.concat([m, m, m], 0) as tf.Tensor4D] : [m, m, m];
    const r = trainStep(model, opt, parts, { seed: 1, it: 0, hyper: { lr: 1e-3, wd: 0.04 }, masks: maskParts });
    assert.ok(r.applied);
    norms.push(r.gradNorm);
    results.push(snapshot(model.params));
    if (split === 1) tf.dispose([...parts, ...maskParts]);
    m.dispose();
    opt.dispose();
    model.dispose();
  }
  const d = maxDiff(results[0]!, results[1]!).diff;
  assert.ok(d < 2e-6, `3 identical micro-batches vs one batch of them: max weight difference ${d}`);
  assert.ok(Math.abs(norms[1]! - norms[0]!) < 1e-4 * norms[0]!, `gradient norm ${norms[1]} vs ${norms[0]}`);
  micro.dispose();
});

test('accumulate auto under a small memory budget: picks a divisor of the batch, records it, trains the same number of images', async () => {
  await testBackend();
  const out = tmpDir();
  const { config, specPath } = await tinyConfig({ outDir: out, steps: 3, checkpointEvery: 0 });
  config.train.batch_size = 8;
  config.train.accumulate = 'auto';
  const mlruns = path.join(out, 'mlruns');
  config.tracking = { ...config.tracking, enabled: true, uri: mlruns, experiment: 'accumulate' };
  const backend = (await testBackend()).name;
  const mem = estimateStepMemory(config, backend);
  // room for 2.5 images beyond the fixed part: the largest divisor of 8 that fits is 2
  process.env['SPARK_MEMORY_BUDGET'] = String(Math.floor(estimatedPeak(mem, 2.5)));
  const events: RunEvent[] = [];
  try {
    const res = await runExperiment({ config, specPath, subscribers: [{ onEvent: (e) => events.push(e) }] });
    assert.equal(res.status, 'FINISHED');
    const info = JSON.parse(readFileSync(path.join(res.runDir, 'run.json'), 'utf8'));
    // the first-step check may step down further (measured growth), never up
    assert.ok([1, 2].includes(info.batch.micro), `micro-batch ${info.batch.micro}`);
    assert.equal(info.batch.size, 8);
    assert.equal(info.batch.accumulate * info.batch.micro, 8);
    assert.equal(info.batch.mode, 'auto');
    // recorded in MLflow: the config's 'auto' and what it resolved to
    const run = await openStore(mlruns).getRun(res.mlflowRunId!);
    assert.equal(run.data.params['train.accumulate'], 'auto');
    assert.equal(run.data.params['train.micro_batch'], String(info.batch.micro));
    assert.equal(run.data.params['train.accumulate_resolved'], String(info.batch.accumulate));
    const line = events.find((e) => e.type === 'log' && /^batch 8 = \d+ micro-batches of \d+ \(accumulate auto/.test(e.message));
    assert.ok(line, `the run prints the micro-batch it chose: ${JSON.stringify(events.filter((e) => e.type === 'log'))}`);
  } finally {
    delete process.env['SPARK_MEMORY_BUDGET'];
  }
});

test('accumulate auto: out of memory before the first optimizer step steps the micro-batch down and retries from the same state', async () => {
  await testBackend();
  const bn = tf.variable(tf.tensor1d([1, 2, 3]));
  const model = { buffers: new Map<string, tf.Variable>([['bn.running_mean', bn]]) };
  const source = { micro: 16 };
  const plan = { batch: 64, micro: 16, accumulate: 4, mode: 'auto' as const, estimatedPeakBytes: 0, limitBytes: 0, budgetSource: 'test', fits: true };
  let info: Record<string, unknown> = { batch: { size: 64, micro: 16, accumulate: 4, mode: 'auto' } };
  const folder = { readRunInfo: () => info as never, updateRunInfo: async (p: Record<string, unknown>) => (info = { ...info, ...p }) as never };
  const warnings: string[] = [];
  const state = { step: 0 };
  const tried: number[] = [];
  const before = tf.memory().numTensors;
  const r = await runWithOomStepDown(
    async () => {
      tried.push(source.micro);
      if (source.micro > 4) {
        tf.tidy(() => bn.assign(tf.tensor1d([9, 9, 9]))); // the failed attempt's forward passes updated BN statistics
        throw new Error('OOM when allocating tensor with shape[16,256,56,56]');
      }
      assert.deepEqual([...bn.dataSync()], [1, 2, 3], 'BN statistics restored before the retry');
      return 'done';
    },
    { model, source, plan, state, startStep: 0, folder, warn: (_c, m) => warnings.push(m) },
  );
  assert.equal(r, 'done');
  assert.deepEqual(tried, [16, 8, 4]);
  assert.equal(plan.micro, 4);
  assert.equal(plan.accumulate, 16);
  assert.deepEqual((info['batch'] as { micro: number }).micro, 4, 'run.json records the new split');
  assert.equal(warnings.length, 2);
  assert.equal(tf.memory().numTensors, before, 'the saved statistics are released');
  // after the first step, or for another error, nothing is retried
  state.step = 1;
  await assert.rejects(runWithOomStepDown(async () => Promise.reject(new Error('OOM when allocating')), { model, source, plan, state, startStep: 0, folder, warn: () => undefined }), /OOM/);
  state.step = 0;
  await assert.rejects(runWithOomStepDown(async () => Promise.reject(new Error('shapes do not match')), { model, source, plan, state, startStep: 0, folder, warn: () => undefined }), /shapes/);
  bn.dispose();
});

test('the first-step memory probe leaves the model as it was (BN statistics restored) and releases its tensors', async () => {
  await testBackend();
  const modelCfg = { encoder: 'resnet_mini', decoder: { type: 'light' as const, width: 32 }, mask_ratio: 0.6, drop_path: 0, densify_norm: 'auto' as const };
  const model = buildSparK(modelCfg, 64, 3);
  const x = randomImages(2, 64, 9);
  const params = snapshot(model.params);
  const buffers = snapshot(model.buffers);
  const before = tf.memory().numTensors;
  const r = probeMicroBatch(model, x, 1, 0);
  assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
  assert.ok(r.peakAfter >= r.rssBefore * 0.5 && r.rssBefore > 0, JSON.stringify(r));
  assert.equal(maxDiff(params, snapshot(model.params)).diff, 0, 'weights untouched');
  assert.equal(maxDiff(buffers, snapshot(model.buffers)).diff, 0, 'BN running statistics restored');
  // and a training-mode forward does change them (so the restore is what kept them)
  tf.tidy(() => void model.forward(x, model.makeMask(2, Rng.from(1, 'm')), { training: true, rng: Rng.from(1, 'd') }));
  assert.ok(maxDiff(buffers, snapshot(model.buffers)).diff > 0);
  x.dispose();
  model.dispose();
});
