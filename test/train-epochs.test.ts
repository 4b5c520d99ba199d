/**
 * One epoch numbering (1-based wherever a person reads it), the partial last epoch, the ETA, and what a resumed run
 * continues: the loss EMA, the epoch's seconds and the MLflow run's duration without the time it was stopped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { testBackend } from './helpers/backend.js';
import { tinyConfig, tmpDir } from './helpers/train.js';
import { runExperiment } from '../src/train/run.js';
import { epochOfStep, nextLossEma, type RunEvent } from '../src/train/events.js';
import { EtaEstimator } from '../src/train/eta.js';
import { formatRunLength } from '../src/ui/format.js';
import { PlainLogger } from '../src/ui/plain.js';
import { openStore } from '../src/track/index.js';

type Ev<T extends RunEvent['type']> = Extract<RunEvent, { type: T }>;
const of = <T extends RunEvent['type']>(events: RunEvent[], t: T): Ev<T>[] => events.filter((e): e is Ev<T> => e.type === t);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

test('epochOfStep: epoch k holds steps (k−1)·spe+1 … k·spe, 1-based', () => {
  assert.equal(epochOfStep(0, 4), 1);
  assert.equal(epochOfStep(1, 4), 1);
  assert.equal(epochOfStep(4, 4), 1);
  assert.equal(epochOfStep(5, 4), 2);
  assert.equal(epochOfStep(8, 4), 2);
});

test('run length: plural and partial epochs said as they are', () => {
  assert.equal(formatRunLength(5, 32), '5 steps of a 32-step epoch');
  assert.equal(formatRunLength(1, 32), '1 step of a 32-step epoch');
  assert.equal(formatRunLength(32, 32), '32 steps = 1 epoch × 32 steps');
  assert.equal(formatRunLength(64, 32), '64 steps = 2 epochs × 32 steps');
  assert.equal(formatRunLength(80, 32), '80 steps = 2 epochs × 32 steps + 16 steps of epoch 3');
});

test('ETA: the warm-up step is left out, so the first ETA is not inflated by it', () => {
  const e = new EtaEstimator();
  e.observe(2.0); // the first step of a process: kernels, allocations, first batches
  assert.ok(Number.isNaN(e.eta(100)), 'unknown after the warm-up step alone');
  e.observe(1.0);
  assert.equal(e.eta(100), 100);
  e.observe(1.0);
  assert.ok(Math.abs(e.eta(100) - 100) < 1e-9);
  e.observe(2.0);
  assert.ok(e.eta(100) > 100 && e.eta(100) < 200);
  assert.equal(e.eta(0), 0);
});

test('numbering: step, epoch, checkpoint, run-end use the same 1-based epoch; a partial last epoch is summarised, marked', async () => {
  await testBackend();
  const out = tmpDir();
  // 8 images, batch 2: 4 steps per epoch; 6 steps = epoch 1 + 2 steps of epoch 2
  const c = await tinyConfig({ outDir: out, steps: 6, checkpointEvery: 2 });
  const mlruns = path.join(out, 'mlruns');
  c.config.tracking = { ...c.config.tracking, enabled: true, uri: mlruns, experiment: 'epochs' };
  const events: RunEvent[] = [];
  const lines: string[] = [];
  const plain = new PlainLogger({ stream: { write: (s: string) => lines.push(s) } });
  const res = await runExperiment({ config: c.config, specPath: c.specPath, subscribers: [{ onEvent: (e) => events.push(e) }, plain] });
  assert.equal(res.status, 'FINISHED');
  const stepEpoch = new Map(of(events, 'step').map((e) => [e.step, e.epoch]));
  assert.deepEqual([...stepEpoch.values()], [1, 1, 1, 1, 2, 2]);
  for (const e of of(events, 'checkpoint')) assert.equal(e.epoch, stepEpoch.get(e.step), `checkpoint at step ${e.step}`);
  const end = of(events, 'run-end')[0]!;
  assert.equal(end.epoch, 2);
  assert.equal(res.epoch, 2);
  const epochs = of(events, 'epoch');
  assert.deepEqual(
    epochs.map((e) => [e.epoch, e.step, e.steps, e.partial ?? false]),
    [
      [1, 4, 4, false],
      [2, 6, 2, true],
    ],
  );
  const losses = of(events, 'step').map((e) => e.loss);
  assert.ok(Math.abs(epochs[1]!.meanLoss - (losses[4]! + losses[5]!) / 2) < 1e-12, 'the partial epoch covers its own steps');
  const text = lines.join('');
  assert.match(text, /6 steps = 1 epoch × 4 steps \+ 2 steps of epoch 2/);
  assert.match(text, /\[epoch 2\/2, partial: its first 2 of 4 steps\] step 6/);
  assert.match(text, /\[checkpoint\] step 4 epoch 1:/);
  assert.match(text, /\[run-end\] FINISHED at step 6 \(epoch 2\)/);
  assert.doesNotMatch(text, /epoch 0\b/);
  // MLflow: the partial epoch's metrics are logged at its last step, marked
  const store = openStore(mlruns);
  const partialMark = await store.getMetricHistory(res.mlflowRunId!, 'epoch_partial');
  assert.deepEqual(partialMark.map((m) => [m.step, m.value]), [[6, 1]]);
  const epochSteps = await store.getMetricHistory(res.mlflowRunId!, 'epoch_steps');
  assert.deepEqual(epochSteps.map((m) => [m.step, m.value]), [[4, 4], [6, 2]]);
  const epochMetric = await store.getMetricHistory(res.mlflowRunId!, 'epoch');
  assert.deepEqual(epochMetric.map((m) => [m.step, m.value]), [[4, 1], [6, 2]]);
});

test('resume: the loss EMA continues, the epoch and the MLflow run durations leave out the stopped time', async () => {
  await testBackend();
  const out = tmpDir();
  const mlruns = path.join(out, 'mlruns');
  const c = await tinyConfig({ outDir: out, steps: 6, checkpointEvery: 100 });
  c.config.tracking = { ...c.config.tracking, enabled: true, uri: mlruns, experiment: 'epochs' };
  const DELAY = 300; // every step takes at least this long (onStep)
  const STOPPED = 2500;
  const events: RunEvent[] = [];
  const stop = new AbortController();
  const t0 = Date.now();
  const first = await runExperiment({
    config: c.config, // config.yaml is written from it (tracking on), and the resume reads that
    specPath: c.specPath,
    signal: stop.signal,
    subscribers: [{ onEvent: (e) => events.push(e) }],
    onStep: async (step) => {
      await sleep(DELAY);
      if (step === 3) stop.abort();
    },
  });
  assert.equal(first.status, 'KILLED');
  assert.equal(first.step, 3);
  await sleep(STOPPED);
  const second = await runExperiment({ resumeDir: first.runDir, subscribers: [{ onEvent: (e) => events.push(e) }], onStep: () => sleep(DELAY) });
  const wall = Date.now() - t0;
  assert.equal(second.status, 'FINISHED');
  const steps = of(events, 'step');
  assert.deepEqual(steps.map((e) => e.step), [1, 2, 3, 4, 5, 6]);
  // the EMA over the whole run, as an uninterrupted run computes it
  let ema: ReturnType<typeof nextLossEma> | null = null;
  for (const e of steps) {
    ema = nextLossEma(ema, e.loss);
    assert.ok(Math.abs(e.lossEma! - ema.value) < 1e-12, `step ${e.step}: EMA ${e.lossEma} vs ${ema.value}`);
  }
  // epoch 1 = steps 1–3 before the stop + step 4 after it
  const ep1 = of(events, 'epoch').find((e) => e.epoch === 1)!;
  assert.ok(ep1.seconds >= (3 * DELAY) / 1000, `epoch 1 counts the steps before the stop: ${ep1.seconds} s`);
  assert.ok(ep1.seconds * 1000 < wall - STOPPED, `epoch 1 leaves out the ${STOPPED} ms stopped: ${ep1.seconds} s of ${wall} ms`);
  const start = of(events, 'run-start');
  assert.equal(start.length, 2);
  assert.ok((start[1]!.elapsedBefore ?? 0) >= (3 * DELAY) / 1000, 'the resumed view starts from the time already run');
  // MLflow: end − start is the run's time without the stop
  const run = await openStore(mlruns).getRun(second.mlflowRunId!);
  assert.equal(run.info.status, 'FINISHED');
  const duration = run.info.endTime! - run.info.startTime;
  assert.ok(duration >= 6 * DELAY, `duration ${duration} ms covers the 6 steps`);
  assert.ok(duration < wall - STOPPED, `duration ${duration} ms leaves out the ${STOPPED} ms stopped (wall ${wall} ms)`);
});
