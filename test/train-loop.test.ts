/**
 * The loop and the run folder with small fakes (fast on every backend): events, checkpoints written as a whole,
 * divergence handling, no tensor leaks; plus the real SparK step's tensor count and falling loss.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, renameSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { tmpDir, tinyConfig } from './helpers/train.js';
import { EventBus, type RunEvent } from '../src/train/events.js';
import { Lamb, buildParamGroups } from '../src/train/optimizers.js';
import { makeSchedule } from '../src/train/schedule.js';
import { RunFolder, loadCheckpoint, newRunId, type TrainState } from '../src/train/checkpoint.js';
import { runLoop, type BatchSource } from '../src/train/loop.js';
import { trainStep, type TrainableModel } from '../src/train/step.js';
import { runExperiment, LoaderSource } from '../src/train/run.js';
import { buildSparK } from '../src/models/spark.js';
import { Rng } from '../src/util/rng.js';
import { toFloat32 } from '../src/util/safetensors.js';
import type { TrainConfig } from '../src/spec/types.js';

let fakeCount = 0;

/** pred = x·w + b per channel; loss = mean((pred − 0.5·x)² · masked); a BN-like running mean buffer. */
function fakeModel(opts: { nanFromStep?: number } = {}): TrainableModel & { calls: number; dispose(): void } {
  const id = ++fakeCount;
  const w = tf.tidy(() => tf.variable(tf.fill([1, 1, 3, 3], 0.3), true, `fake${id}/proj.weight`));
  const b = tf.tidy(() => tf.variable(tf.zeros([3]), true, `fake${id}/proj.bias`));
  const rm = tf.tidy(() => tf.variable(tf.zeros([3]), false, `fake${id}/bn.running_mean`));
  const m = {
    calls: 0,
    params: new Map<string, tf.Variable>([['proj.weight', w], ['proj.bias', b]]),
    buffers: new Map<string, tf.Variable>([['bn.running_mean', rm]]),
    makeMask(batch: number, rng: Rng): tf.Tensor4D {
      const v = new Float32Array(batch * 4).map(() => (rng.float() < 0.5 ? 1 : 0));
      return tf.tensor4d(v, [batch, 2, 2, 1]);
    },
    forward(x: tf.Tensor4D, mask: tf.Tensor4D, o: { training: boolean }) {
      m.calls++;
      const step = m.calls;
      return tf.tidy(() => {
        if (o.training) rm.assign(tf.add(tf.mul(rm, 0.9), tf.mul(tf.mean(x, [0, 1, 2]), 0.1)));
        const pred = tf.add(tf.conv2d(x, w as tf.Tensor4D, 1, 'same'), b) as tf.Tensor4D;
        const up = tf.image.resizeNearestNeighbor(tf.sub(1, mask) as tf.Tensor4D, [x.shape[1], x.shape[2]]);
        let loss = tf.mean(tf.mul(tf.square(tf.sub(pred, tf.mul(x, 0.5))), up)) as tf.Scalar;
        if (opts.nanFromStep !== undefined && step >= opts.nanFromStep) loss = tf.mul(loss, NaN) as tf.Scalar;
        return { loss, pred };
      });
    },
    dispose() {
      tf.dispose([w, b, rm]);
    },
  };
  return m;
}

/** Batches are a pure function of the iteration. */
function fakeSource(stepsPerEpoch: number): BatchSource {
  return {
    stepsPerEpoch,
    batches: async (it: number) => {
      const r = Rng.from(1, 'fake-data', it);
      const v = new Float32Array(2 * 8 * 8 * 3).map(() => r.normal());
      return [tf.tensor4d(v, [2, 8, 8, 3])];
    },
  };
}

const TRAIN: TrainConfig = {
  epochs: null,
  steps: 12,
  batch_size: 2,
  accumulate: 1,
  warmup_epochs: 0,
  warmup_steps: 2,
  optimizer: { name: 'lamb', base_lr: 0.01, base_batch_size: 2, betas: null, eps: 1e-6, weight_decay: 0.04, weight_decay_end: 0.2, clip_grad: 5 },
};

function state0(total: number, spe: number): TrainState {
  const now = new Date().toISOString();
  return {
    format: 'spark-checkpoint/1', step: 0, epoch: 0, totalSteps: total, stepsPerEpoch: spe, seed: 1,
    dataPosition: { iteration: 0, epoch: 0, indexInEpoch: 0 }, optimizer: { kind: 'lamb', groupSteps: {} },
    epochLosses: [], lossTail: [], minLoss: null, lastLoss: null, startedAt: now, savedAt: now, trainSeconds: 0,
    backend: 'test', encoder: 'fake',
  };
}

async function loopWith(model: TrainableModel, train: TrainConfig, spe: number, checkpointEvery: number, extra: { onStep?: (s: number) => void } = {}) {
  const folder = await RunFolder.create(tmpDir(), 'fake');
  await folder.writeConfig('name: fake\n');
  const bus = new EventBus();
  const events: RunEvent[] = [];
  bus.subscribe((e) => events.push(e));
  const opt = new Lamb(buildParamGroups(model.params), { betas: [0.9, 0.95] });
  const schedule = makeSchedule(train, spe);
  const res = await runLoop({
    model, optimizer: opt, schedule, source: fakeSource(spe), bus, folder, state: state0(schedule.maxIters, spe), seed: 1,
    checkpointEvery, logEvery: 1, ...(extra.onStep ? { onStep: extra.onStep } : {}),
  });
  opt.dispose();
  return { res, events, folder };
}

test('run ids and the loop: step/epoch/checkpoint events, checkpoint folder complete, no leftovers', async () => {
  await testBackend();
  assert.match(newRunId(new Date(Date.UTC(2026, 10, 26, 12, 15, 0))), /^20261126-121500-[0-9a-f]{4}$/);
  const model = fakeModel();
  const { res, events, folder } = await loopWith(model, TRAIN, 4, 5);
  assert.equal(res.status, 'FINISHED');
  assert.equal(res.step, 12);
  const steps = events.filter((e) => e.type === 'step');
  assert.deepEqual(steps.map((e) => e.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const s5 = steps[4]!;
  assert.ok(s5.type === 'step' && s5.epoch === 2 && s5.epochStep === 1 && s5.lr > 0 && s5.gradNorm > 0 && s5.imgPerSec > 0 && s5.memory!.numTensors > 0);
  assert.deepEqual(events.filter((e) => e.type === 'epoch').map((e) => e.type === 'epoch' && [e.epoch, e.step]), [[1, 4], [2, 8], [3, 12]]);
  assert.deepEqual(events.filter((e) => e.type === 'checkpoint').map((e) => e.type === 'checkpoint' && e.step), [5, 10, 12]);
  assert.deepEqual(readdirSync(folder.dir).sort(), ['checkpoint', 'config.yaml']);
  assert.deepEqual(readdirSync(folder.checkpointDir).sort(), ['model.safetensors', 'optimizer.safetensors', 'state.json']);
  const ck = await loadCheckpoint(folder.dir);
  assert.equal(ck.step, 12);
  assert.deepEqual([...ck.params.keys()].sort(), ['proj.bias', 'proj.weight']);
  assert.deepEqual([...ck.buffers.keys()], ['bn.running_mean']);
  assert.deepEqual(Array.from(toFloat32(ck.params.get('proj.weight')!)), Array.from(model.params.get('proj.weight')!.dataSync()));
  assert.equal(ck.state!.lossTail.length, 12);
  assert.deepEqual(ck.state!.optimizer.groupSteps, { decay: 12, no_decay: 12 });
  model.dispose();
});

test('a non-finite loss stops the run FAILED at that step and keeps the last good checkpoint', async () => {
  await testBackend();
  const model = fakeModel({ nanFromStep: 4 });
  const { res, events, folder } = await loopWith(model, TRAIN, 4, 1);
  assert.equal(res.status, 'FAILED');
  assert.match(res.error ?? '', /step 4: loss is NaN; the last good checkpoint \(step 3\) is kept/);
  assert.ok(events.some((e) => e.type === 'warning' && e.code === 'non-finite-loss'));
  const ck = await loadCheckpoint(folder.dir);
  assert.equal(ck.step, 3);
  for (const t of ck.params.values()) assert.ok(toFloat32(t).every(Number.isFinite), 'checkpoint holds finite weights');
  // the weights in memory were not updated with the NaN step either
  assert.ok(model.params.get('proj.weight')!.dataSync().every(Number.isFinite));
  model.dispose();
});

test('a checkpoint interrupted mid-swap is recovered; incomplete temp folders are discarded', async () => {
  await testBackend();
  const model = fakeModel();
  const { folder } = await loopWith(model, { ...TRAIN, steps: 3 }, 4, 0);
  // simulate a crash between "rename old aside" and "rename new in"
  renameSync(folder.checkpointDir, folder.path('checkpoint.old-abc123'));
  mkdirSync(folder.path('checkpoint.tmp-def456'));
  writeFileSync(folder.path('checkpoint.tmp-def456', 'model.safetensors'), 'partial');
  const reopened = await RunFolder.open(folder.dir);
  assert.ok(reopened.hasCheckpoint());
  assert.deepEqual(readdirSync(folder.dir).sort(), ['checkpoint', 'config.yaml']);
  assert.equal((await loadCheckpoint(folder.dir)).step, 3);
  assert.equal(JSON.parse(readFileSync(path.join(folder.checkpointDir, 'state.json'), 'utf8')).step, 3);
  model.dispose();
});

test('the loop leaks no tensors: numTensors after step 10 equals that after step 50', async () => {
  await testBackend();
  const model = fakeModel();
  const counts = new Map<number, number>();
  const { res } = await loopWith(model, { ...TRAIN, steps: 50 }, 7, 20, { onStep: (s) => void counts.set(s, tf.memory().numTensors) });
  assert.equal(res.status, 'FINISHED');
  assert.equal(counts.get(50), counts.get(10));
  model.dispose();
});

test('the real SparK step leaks no tensors and accumulation averages gradients', async () => {
  const info = await testBackend();
  const model = buildSparK({ encoder: { family: 'convnext', depths: [1, 1, 1, 1], dims: [8, 16, 32, 64] }, decoder: { type: 'light', width: 32 }, mask_ratio: 0.5, drop_path: 0.1, densify_norm: 'auto' }, 64, 3);
  const opt = new Lamb(buildParamGroups(model.params), { betas: [0.9, 0.999] });
  const r = Rng.from(3, 'test-data');
  const x = tf.tensor4d(new Float32Array(2 * 64 * 64 * 3).map(() => r.normal()), [2, 64, 64, 3]);
  const [early, late] = info.native ? [10, 50] : [3, 8];
  let atEarly = -1;
  for (let s = 1; s <= late; s++) {
    const res = trainStep(model, opt, [x], { seed: 3, it: s - 1, hyper: { lr: 1e-3, wd: 0.04 } });
    assert.ok(res.applied && Number.isFinite(res.loss));
    if (s === early) atEarly = tf.memory().numTensors;
  }
  assert.equal(tf.memory().numTensors, atEarly, `tensors after step ${early} and ${late}`);
  // two micro-batches of the same images give the mean of two differently masked losses
  const res2 = trainStep(model, opt, [x, x], { seed: 3, it: late, hyper: { lr: 1e-3, wd: 0.04 } });
  assert.ok(res2.applied && Number.isFinite(res2.loss));
  assert.equal(tf.memory().numTensors, atEarly);
  x.dispose();
  opt.dispose();
  model.dispose();
});

test('the loss falls on a short synthetic run', async () => {
  await testBackend();
  const out = tmpDir();
  const steps = 15;
  const c = await tinyConfig({ outDir: out, name: 'falls', steps, checkpointEvery: 0 });
  // two fixed images (no crop / flip), so only the masks vary: a small model fits them quickly
  c.config.data.synthetic_size = 2;
  c.config.data.crop_scale = [1, 1];
  c.config.data.hflip = 0;
  c.config.train.optimizer.base_lr = 2e-2;
  c.config.model.drop_path = 0;
  // one step per epoch here: a reconstruction grid after epoch 10 and at the end
  c.config.output.reconstruct_every = 10;
  c.config.output.reconstruct_images = 2;
  const losses: number[] = [];
  const recon: RunEvent[] = [];
  const res = await runExperiment({
    config: c.config,
    specPath: c.specPath,
    subscribers: [{ onEvent: (e: RunEvent) => void (e.type === 'step' ? losses.push(e.loss) : e.type === 'reconstruction' && recon.push(e)) }],
  });
  assert.deepEqual(recon.map((e) => e.type === 'reconstruction' && [path.basename(e.path), e.step]), [['epoch-0010.png', 10], ['final.png', 15]]);
  for (const e of recon) assert.ok(e.type === 'reconstruction' && existsSync(e.path) && e.loss > 0);
  assert.equal(res.status, 'FINISHED');
  assert.equal(losses.length, steps);
  const head = (losses[0]! + losses[1]!) / 2;
  const tail = losses.slice(-3).reduce((a, b) => a + b, 0) / 3;
  assert.ok(head > 0.9 && head < 1.1, `initial loss near 1 (spec §4.4): ${head}`);
  assert.ok(tail < head - 0.1, `loss falls: first ${head.toFixed(4)}, last ${tail.toFixed(4)} (${losses.map((l) => l.toFixed(3)).join(' ')})`);
  assert.ok(existsSync(path.join(res.runDir, 'encoder.safetensors')));
});

test('LoaderSource: iteration it is the loader batch of step it, split in order into micro-batches (seeks when out of step)', async () => {
  await testBackend();
  const served: number[] = [];
  let pos = 0;
  // batches of 4 one-pixel images; image j of step s holds the value 10·s + j
  const loader = {
    numImages: 20, stepsPerEpoch: 5, classes: null, batchSize: 4, inputSize: 1,
    next: async () => {
      const step = pos++;
      served.push(step);
      const images = new Float32Array(12);
      for (let j = 0; j < 4; j++) images.fill(10 * step + j, 3 * j, 3 * j + 3);
      return { step, epoch: 0, images, batchSize: 4, size: 1, indices: [0, 1, 2, 3], labels: null, fresh: 4 };
    },
    seek: (s: number) => void (pos = s),
    close: async () => undefined,
    skipped: () => [],
  };
  const src = new LoaderSource(loader, 2);
  assert.equal(src.stepsPerEpoch, 5, 'one loader batch per optimizer step');
  const first = await src.firstMicro(0);
  const a = await src.batches(0); // the batch the check read is reused
  const b = await src.batches(3); // out of order: seeks to 3
  assert.deepEqual(a.map((t) => t.shape[0]), [2, 2]);
  const vals = async (t: tf.Tensor) => [...(await t.data())].filter((_, i) => i % 3 === 0);
  assert.deepEqual(await vals(first), [0, 1]);
  assert.deepEqual(await Promise.all(a.map(vals)), [[0, 1], [2, 3]]);
  assert.deepEqual(await Promise.all(b.map(vals)), [[30, 31], [32, 33]]);
  assert.deepEqual(served, [0, 1, 3]);
  src.micro = 4;
  const c = await src.batches(4);
  assert.deepEqual(await Promise.all(c.map(vals)), [[40, 41, 42, 43]]);
  tf.dispose([first, ...a, ...b, ...c]);
});
