/**
 * The training loop: runs iterations `state.step .. totalSteps-1`, emits step / epoch / checkpoint / warning events,
 * writes checkpoints every `output.checkpoint_every` steps, at the end and when interrupted (AbortSignal), and stops
 * with FAILED on a non-finite loss without overwriting the last good checkpoint.
 *
 * Each step is dispatched without a read (`trainStepAsync`), then the next iteration's batch is requested, so the
 * host prepares it while the device computes, and only then the step's one asynchronous read is awaited. Between
 * steps the loop holds one batch: the next one (or, after the last step, the last one); it frees it when it ends.
 */
import * as tf from '@tensorflow/tfjs';
import { epochOfStep, nextLossEma, type EventBus, type RunStatus } from './events.js';
import { EtaEstimator } from './eta.js';
import type { SparkOptimizer } from './optimizers.js';
import type { Schedule } from './schedule.js';
import type { RunFolder, TrainState } from './checkpoint.js';
import { trainStepAsync, type TrainableModel } from './step.js';

/** Where the micro-batches of each iteration come from (a pure function of (seed, iteration)). */
export interface BatchSource {
  stepsPerEpoch: number;
  /** The `accumulate` micro-batches of 0-based iteration `it`, normalised NHWC; the loop disposes them. */
  batches(it: number): Promise<tf.Tensor4D[]>;
}

export interface LoopOptions {
  model: TrainableModel;
  optimizer: SparkOptimizer;
  schedule: Schedule;
  source: BatchSource;
  bus: EventBus;
  folder: RunFolder;
  /** Mutable training state; `state.step` is the number of steps already done (0 for a new run). */
  state: TrainState;
  seed: number;
  checkpointEvery: number;
  logEvery: number;
  signal?: AbortSignal;
  /** Called (awaited) after each completed epoch, 1-based (reconstruction grids). */
  onEpochEnd?: (epoch: number, step: number) => Promise<void>;
  /** Called after each completed step (tests use it to interrupt at a chosen step). */
  onStep?: (step: number, loss: number) => void | Promise<void>;
  /** When this process's part of the run began (Date.now(); default: the loop's start), for `state.runSeconds`. */
  segmentStart?: number;
}

export interface LoopResult {
  status: RunStatus;
  step: number;
  epoch: number;
  finalLoss: number | null;
  error?: string;
  checkpointPath?: string;
}

const TAIL = 200;
const testDelayMs = Number(process.env['SPARK_TEST_STEP_DELAY_MS'] ?? 0) || 0;

/** Batches the loop holds between steps: the one requested ahead, and the last step's. */
interface Held {
  next: Promise<tf.Tensor4D[]> | null;
  last: tf.Tensor4D[] | null;
}

export async function runLoop(o: LoopOptions): Promise<LoopResult> {
  const held: Held = { next: null, last: null };
  try {
    return await loopSteps(o, held);
  } finally {
    if (held.last) tf.dispose(held.last);
    if (held.next) void held.next.then((b) => tf.dispose(b), () => undefined);
  }
}

async function loopSteps(o: LoopOptions, held: Held): Promise<LoopResult> {
  const { model, optimizer, schedule, source, bus, folder, state } = o;
  const total = schedule.maxIters;
  const spe = Math.max(1, source.stepsPerEpoch);
  const effBatch = schedule.effectiveBatch;
  let lastCkptStep = folder.hasCheckpoint() ? state.step : -1;
  let checkpointPath: string | undefined;
  const segmentStart = Date.now();
  const trainSecondsBefore = state.trainSeconds;
  const runSegmentStart = o.segmentStart ?? segmentStart;
  const runSecondsBefore = state.runSeconds ?? state.trainSeconds;
  // the current epoch's seconds: what earlier processes spent in it (checkpoint) + this one's
  let epochStart = Date.now();
  let epochSecondsBefore = state.epochSeconds ?? 0;
  const epochSeconds = (): number => epochSecondsBefore + (Date.now() - epochStart) / 1000;
  const eta = new EtaEstimator();
  let logWindow = { t: Date.now(), steps: 0 };
  let lastRate: number | null = null;

  const saveCheckpoint = async (): Promise<void> => {
    state.epoch = Math.floor(state.step / spe);
    state.dataPosition = { iteration: state.step, epoch: Math.floor(state.step / spe), indexInEpoch: state.step % spe };
    const opt = await optimizer.getStateAsync();
    state.optimizer = { kind: optimizer.kind, groupSteps: opt.groupSteps };
    state.savedAt = new Date().toISOString();
    state.trainSeconds = trainSecondsBefore + (Date.now() - segmentStart) / 1000;
    state.runSeconds = runSecondsBefore + (Date.now() - runSegmentStart) / 1000;
    state.epochSeconds = epochSeconds();
    await bus.beforeCheckpoint(state.step); // what was logged up to this step is durable before the checkpoint counts
    checkpointPath = await folder.writeCheckpoint({ params: model.params, buffers: model.buffers, optimizer: { tensors: opt.tensors }, state });
    lastCkptStep = state.step;
    bus.emit({ type: 'checkpoint', time: Date.now(), step: state.step, epoch: epochOfStep(state.step, spe), path: checkpointPath });
  };

  const result = (status: RunStatus, error?: string): LoopResult => ({
    status,
    step: state.step,
    epoch: epochOfStep(state.step, spe),
    finalLoss: state.lastLoss,
    ...(error ? { error } : {}),
    ...(checkpointPath ? { checkpointPath } : {}),
  });

  while (state.step < total) {
    if (o.signal?.aborted) {
      if (lastCkptStep !== state.step) await saveCheckpoint();
      return result('KILLED');
    }
    const it = state.step;
    const t0 = Date.now();
    const micro = await (held.next ?? source.batches(it));
    held.next = null;
    let r;
    try {
      const pending = trainStepAsync(model, optimizer, micro, { seed: o.seed, it, hyper: schedule.at(it) });
      if (it + 1 < total) {
        held.next = source.batches(it + 1);
        held.next.catch(() => undefined); // a failure surfaces when the next iteration awaits it
      }
      r = await pending;
    } finally {
      if (held.next) tf.dispose(micro);
      else held.last = micro;
    }
    const step = it + 1;
    if (!r.applied || !Number.isFinite(r.gradNorm)) {
      const what = !r.applied ? `loss is ${r.loss}` : `gradient norm is ${r.gradNorm} (loss ${r.loss})`;
      const kept = lastCkptStep >= 0 ? `the last good checkpoint (step ${lastCkptStep}) is kept` : 'no checkpoint was written';
      const msg = `training diverged at step ${step}: ${what}; ${kept}`;
      bus.emit({ type: 'warning', time: Date.now(), code: 'non-finite-loss', message: msg });
      state.lastLoss = Number.isFinite(r.loss) ? r.loss : state.lastLoss;
      return { ...result('FAILED', msg), step: it };
    }
    state.step = step;
    state.lastLoss = r.loss;
    state.minLoss = state.minLoss === null ? r.loss : Math.min(state.minLoss, r.loss);
    state.epochLosses.push(r.loss);
    const ema = nextLossEma(state.lossEma, r.loss);
    state.lossEma = { raw: ema.raw, count: ema.count };
    state.lossTail.push([step, r.loss]);
    if (state.lossTail.length > TAIL) state.lossTail.splice(0, state.lossTail.length - TAIL);

    eta.observe((Date.now() - t0) / 1000);
    // one event per step: the tracker logs every step (batched), the plain logger prints every `logEvery`-th,
    // the Ink view re-renders at its own pace
    logWindow.steps++;
    {
      const now = Date.now();
      const secs = Math.max(1e-6, (now - logWindow.t) / 1000);
      // img/s over the last ~second of steps (single fast steps would make it jumpy)
      const rate = (effBatch * logWindow.steps) / secs;
      if (secs >= 1 || step === 1 || step === total) {
        lastRate = rate;
        logWindow = { t: now, steps: 0 };
      }
      const { lr, wd } = schedule.at(it);
      const mem = tf.memory();
      bus.emit({
        type: 'step',
        time: now,
        step,
        epoch: Math.floor(it / spe) + 1,
        epochStep: (it % spe) + 1,
        loss: r.loss,
        lr,
        wd,
        gradNorm: r.gradNorm,
        imgPerSec: lastRate ?? rate,
        etaSec: eta.eta(total - step),
        lossEma: ema.value,
        memory: { numTensors: mem.numTensors, numBytes: mem.numBytes, rssBytes: process.memoryUsage().rss },
      });
    }
    // an epoch's summary at its end; the run's last epoch when it ends early is summarised as partial
    if (step % spe === 0 || step === total) {
      const losses = state.epochLosses;
      const mean = losses.reduce((a, b) => a + b, 0) / Math.max(1, losses.length);
      const partial = step % spe !== 0;
      bus.emit({
        type: 'epoch',
        time: Date.now(),
        epoch: epochOfStep(step, spe),
        step,
        meanLoss: mean,
        minLoss: Math.min(...losses),
        seconds: epochSeconds(),
        steps: partial ? step % spe : spe,
        ...(partial ? { partial: true } : {}),
      });
      state.epochLosses = [];
      if (o.onEpochEnd && !partial) await o.onEpochEnd(step / spe, step);
      epochStart = Date.now();
      epochSecondsBefore = 0;
    }
    if ((o.checkpointEvery > 0 && step % o.checkpointEvery === 0) || step === total) await saveCheckpoint();
    if (o.onStep) await o.onStep(step, r.loss);
    // let signal handlers and I/O run between steps ($SPARK_TEST_STEP_DELAY_MS slows steps down for signal tests)
    if (testDelayMs > 0) await new Promise<void>((res) => setTimeout(res, testDelayMs));
    else await new Promise<void>((res) => setImmediate(res));
  }
  if (lastCkptStep !== state.step) await saveCheckpoint();
  return result('FINISHED');
}
