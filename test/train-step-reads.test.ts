/**
 * The training step reads the device once, asynchronously (issue 12 item 3), and a non-finite loss skips the update
 * on the device with the same outcome as before: weights, moments and step counters untouched, `applied: false`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { Lamb, buildParamGroups } from '../src/train/optimizers.js';
import { trainStep, trainStepAsync } from '../src/train/step.js';
import { runLoop } from '../src/train/loop.js';
import { RunFolder, type TrainState } from '../src/train/checkpoint.js';
import { EventBus } from '../src/train/events.js';
import { makeSchedule } from '../src/train/schedule.js';
import { tmpDir } from './helpers/train.js';
import { buildSparK } from '../src/models/spark.js';
import { Rng } from '../src/util/rng.js';
import type { EncoderSpec } from '../src/spec/types.js';

/** Count the engine's reads (every Tensor.data / dataSync / array / buffer goes through these) while `f` runs. */
async function countReads<T>(f: () => Promise<T>): Promise<{ value: T; sync: number; async: number }> {
  const engine = tf.engine() as unknown as { readSync: (id: object) => unknown; read: (id: object) => Promise<unknown> };
  const readSync = engine.readSync;
  const read = engine.read;
  let sync = 0;
  let async = 0;
  engine.readSync = function (this: unknown, id: object) {
    sync++;
    return readSync.call(this, id);
  };
  engine.read = function (this: unknown, id: object) {
    async++;
    return read.call(this, id);
  };
  try {
    return { value: await f(), sync, async };
  } finally {
    delete (engine as Partial<typeof engine>).readSync;
    delete (engine as Partial<typeof engine>).read;
  }
}

function tinyModel(family: 'resnet' | 'convnext') {
  const encoder: EncoderSpec = family === 'convnext'
    ? { family: 'convnext', depths: [1, 1, 1, 1], dims: [8, 16, 32, 64] }
    : { family: 'resnet', layers: [1, 1, 1, 1], width: 4 };
  return buildSparK({ encoder, decoder: { type: 'light', width: 32 }, mask_ratio: 0.6, drop_path: 0.1, densify_norm: 'auto' }, 64, 3);
}

test('trainStepAsync makes one asynchronous read per step and no synchronous one', async () => {
  await testBackend();
  for (const family of ['resnet', 'convnext'] as const) {
    const model = tinyModel(family);
    const opt = new Lamb(buildParamGroups(model.params), { betas: [0.9, 0.999] });
    const r = Rng.from(5, 'reads');
    const x = tf.tensor4d(new Float32Array(2 * 64 * 64 * 3).map(() => r.normal()), [2, 64, 64, 3]);
    for (let it = 0; it < 2; it++) {
      const micro = it === 0 ? [x] : [x, x]; // also with accumulation
      const { value, sync, async } = await countReads(() => trainStepAsync(model, opt, micro, { seed: 1, it, hyper: { lr: 1e-3, wd: 0.04 } }));
      assert.ok(value.applied && Number.isFinite(value.loss) && value.gradNorm > 0, `${family} step ${it}: ${JSON.stringify(value)}`);
      assert.equal(sync, 0, `${family} step ${it}: synchronous reads`);
      assert.equal(async, 1, `${family} step ${it}: asynchronous reads`);
    }
    x.dispose();
    opt.dispose();
    model.dispose();
  }
});

test('a non-finite loss: the device skips the update; weights, moments and counters are as before', async () => {
  await testBackend();
  const model = tinyModel('resnet');
  const opt = new Lamb(buildParamGroups(model.params), { betas: [0.9, 0.95] });
  const r = Rng.from(6, 'nan');
  const x = tf.tensor4d(new Float32Array(2 * 64 * 64 * 3).map(() => r.normal()), [2, 64, 64, 3]);
  const good = await trainStepAsync(model, opt, [x], { seed: 2, it: 0, hyper: { lr: 1e-3, wd: 0.04 } });
  assert.ok(good.applied);
  const weights = new Map([...model.params].map(([k, v]) => [k, Array.from(v.dataSync())]));
  const state = opt.getState();
  const before = tf.memory().numTensors;
  const bad = tf.mul(x, NaN) as tf.Tensor4D;
  for (const run of [() => trainStepAsync(model, opt, [bad], { seed: 2, it: 1, hyper: { lr: 1e-3, wd: 0.04 } }), async () => trainStep(model, opt, [x, bad], { seed: 2, it: 1, hyper: { lr: 1e-3, wd: 0.04 } })]) {
    const res = await run();
    assert.equal(res.applied, false);
    assert.ok(Number.isNaN(res.loss) && Number.isNaN(res.gradNorm), JSON.stringify(res));
    for (const [k, v] of model.params) assert.deepEqual(Array.from(v.dataSync()), weights.get(k), `${k} untouched`);
    const st = opt.getState();
    assert.deepEqual(st.groupSteps, state.groupSteps);
    for (const [k, t] of st.tensors) assert.deepEqual(t.data, state.tensors.get(k)!.data, `${k} untouched`);
  }
  bad.dispose();
  assert.equal(tf.memory().numTensors, before);
  // and the next good step is the one an uninterrupted run would take
  const twin = tinyModel('resnet');
  const topt = new Lamb(buildParamGroups(twin.params), { betas: [0.9, 0.95] });
  await trainStepAsync(twin, topt, [x], { seed: 2, it: 0, hyper: { lr: 1e-3, wd: 0.04 } });
  const a = await trainStepAsync(model, opt, [x], { seed: 2, it: 1, hyper: { lr: 1e-3, wd: 0.04 } });
  const b = await trainStepAsync(twin, topt, [x], { seed: 2, it: 1, hyper: { lr: 1e-3, wd: 0.04 } });
  assert.deepEqual(a, b);
  for (const [k, v] of model.params) assert.deepEqual(Array.from(v.dataSync()), Array.from(twin.params.get(k)!.dataSync()), k);
  tf.dispose(x);
  opt.dispose();
  topt.dispose();
  model.dispose();
  twin.dispose();
});

test('the loop: no synchronous read at all (checkpoints included), and the next batch is requested before the step\'s read returns', async () => {
  await testBackend();
  const model = tinyModel('resnet');
  const opt = new Lamb(buildParamGroups(model.params), { betas: [0.9, 0.95] });
  const folder = await RunFolder.create(tmpDir(), 'reads');
  await folder.writeConfig('name: reads\n');
  const log: string[] = [];
  const source = {
    stepsPerEpoch: 2,
    batches: async (it: number) => {
      log.push(`batch ${it}`);
      const r = Rng.from(1, 'loop-data', it);
      return [tf.tensor4d(new Float32Array(2 * 64 * 64 * 3).map(() => r.normal()), [2, 64, 64, 3])];
    },
  };
  const engine = tf.engine() as unknown as { read: (id: object) => Promise<unknown> };
  const read = engine.read;
  engine.read = function (this: unknown, id: object) {
    log.push('read');
    return read.call(this, id).then((v) => (log.push('read done'), v));
  };
  const now = new Date().toISOString();
  const state: TrainState = {
    format: 'spark-checkpoint/1', step: 0, epoch: 0, totalSteps: 3, stepsPerEpoch: 2, seed: 1,
    dataPosition: { iteration: 0, epoch: 0, indexInEpoch: 0 }, optimizer: { kind: 'lamb', groupSteps: {} },
    epochLosses: [], lossTail: [], minLoss: null, lastLoss: null, startedAt: now, savedAt: now, trainSeconds: 0,
    backend: 'test', encoder: 'tiny',
  };
  const schedule = makeSchedule({ epochs: null, steps: 3, batch_size: 2, accumulate: 1, warmup_epochs: 0, warmup_steps: 1, optimizer: { name: 'lamb', base_lr: 1e-3, base_batch_size: 2, betas: null, eps: 1e-6, weight_decay: 0.04, weight_decay_end: 0.2, clip_grad: 5 } }, 2);
  const before = tf.memory().numTensors;
  let res;
  try {
    res = await countReads(() => runLoop({ model, optimizer: opt, schedule, source, bus: new EventBus(), folder, state, seed: 1, checkpointEvery: 0, logEvery: 1, onStep: (s) => void log.push(`step ${s}`) }));
  } finally {
    delete (engine as Partial<typeof engine>).read;
  }
  assert.equal(res.value.status, 'FINISHED');
  assert.equal(res.sync, 0, 'synchronous reads in a whole run');
  // each step: one read, the next batch requested before it returns; the final checkpoint reads afterwards
  assert.deepEqual(log.slice(0, 12), ['batch 0', 'read', 'batch 1', 'read done', 'step 1', 'read', 'batch 2', 'read done', 'step 2', 'read', 'read done', 'read']);
  assert.ok(log.indexOf('step 3') > 0 && !log.includes('batch 3'));
  assert.equal(tf.memory().numTensors, before, 'the loop frees the batches it holds');
  opt.dispose();
  model.dispose();
});
