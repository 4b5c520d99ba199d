/**
 * `runExperiment`: the composition root of one pre-training run, new or resumed. It initialises the backend, builds
 * the SparK model, the data loader, the optimizer and the schedules, wires the subscribers (console, MLflow tracker,
 * the caller's) to the event bus and runs the loop. `spark run` and sweeps call it.
 */
import path from 'node:path';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import type { ExperimentConfig } from '../spec/types.js';
import { configToYaml, loadExperiment } from '../spec/index.js';
import { initBackend, runtimeBackendOptions, type BackendInfo } from '../backend/init.js';
import { buildSparK, type SparKModel } from '../models/spark.js';
import { describeEncoder } from '../models/registry.js';
import { checkDataReadable, createLoader, type Loader } from '../data/index.js';
import { UsageError } from '../util/errors.js';
import { EventBus, epochOfStep, type RunStartEvent, type RunStatus, type RunSubscriber } from './events.js';
import { buildParamGroups, createOptimizer, type SparkOptimizer } from './optimizers.js';
import { makeSchedule } from './schedule.js';
import { RunFolder, assignVariables, freshTrainState, loadCheckpoint, loadOptimizerState, resumeCommandFor, type TrainState } from './checkpoint.js';
import { runLoop, type BatchSource } from './loop.js';
import { createRunTracker, type RunTracker } from '../track/index.js';
import { createLivenessSubscriber, reconcileRunFolder, runIsAlive } from '../track/liveness.js';
import {
  checkMeasuredMicro,
  describeBatchPlan,
  estimateStepMemory,
  estimatedPeak,
  isOutOfMemory,
  memoryBudget,
  planBatch,
  stepDownAfterOom,
  type BatchPlan,
  type StepMemory,
} from '../models/memory.js';
import { probeMicroBatch } from './memory.js';

/** `accumulate: auto` measures the first micro-batch when its estimated peak is above this fraction of the budget. */
const PROBE_ABOVE = 0.5;

/** What run.json records of the batch split (resume reuses the micro-batch, so the run stays exact). */
export interface RunBatchInfo {
  size: number;
  micro: number;
  accumulate: number;
  mode: 'auto' | 'explicit';
  estimatedPeakBytes: number;
  limitBytes: number;
}

export interface RunOptions {
  /** The resolved configuration; optional when resuming (read from the run folder's config.yaml). */
  config?: ExperimentConfig;
  /** Spec file the run comes from (null when built in code). */
  specPath?: string | null;
  /** Resolved YAML written as config.yaml (default: the config serialised). */
  resolvedYaml?: string;
  /** Resume the run in this folder from its checkpoint (a folder without a checkpoint restarts at step 0). */
  resumeDir?: string;
  /** Use exactly this run folder (sweeps) instead of `<output.dir>/<name>/<run-id>/`. */
  runDir?: string;
  /** Extra subscribers. When given, no console subscriber is added unless `console: true`. */
  subscribers?: RunSubscriber[];
  /** Add the console subscriber (Ink / plain). Default: true unless `subscribers` is given. */
  console?: boolean;
  tracking?: { parentRunId?: string | null; tags?: Record<string, string> };
  /** Plain console lines instead of the Ink view. */
  plain?: boolean;
  /** Abort = stop after the current step, write a checkpoint, end KILLED. */
  signal?: AbortSignal;
  /** Sweep membership (shown in run-start). */
  sweep?: RunStartEvent['sweep'];
  /** Test hook: called after every completed step. */
  onStep?: (step: number, loss: number) => void | Promise<void>;
}

export interface RunResult {
  status: RunStatus;
  runDir: string;
  runId: string;
  step: number;
  epoch: number;
  finalLoss: number | null;
  mlflowRunId?: string;
  error?: string;
  /** `spark run --resume <dir>` when the run was interrupted. */
  resumeCommand?: string;
  /** Tracking calls the server did not take by the end (tracking.close_timeout): the `npx spark sync --run` line. */
  trackingReminder?: string;
}

/**
 * The micro-batches of iteration `it`: the loader's batch of global step `it` (train.batch_size images) split into
 * `batch_size / micro` equal micro-batches, in order. The split does not change which images a step sees, only
 * how many go through the model at once; `micro` may be lowered before the first step (memory check).
 */
export class LoaderSource implements BatchSource {
  private last: { step: number; images: Float32Array; size: number; batchSize: number } | null = null;
  constructor(
    private readonly loader: Loader,
    public micro: number,
  ) {}
  get stepsPerEpoch(): number {
    return this.loader.stepsPerEpoch;
  }
  private async batch(it: number): Promise<{ images: Float32Array; size: number; batchSize: number }> {
    if (this.last?.step === it) return this.last;
    let b = await this.loader.next();
    if (b.step !== it) {
      this.loader.seek(it);
      b = await this.loader.next();
    }
    this.last = { step: it, images: b.images, size: b.size, batchSize: b.batchSize };
    return this.last;
  }
  /** The first micro-batch of iteration `it` (the memory check measures it). */
  async firstMicro(it: number): Promise<tf.Tensor4D> {
    const b = await this.batch(it);
    const m = Math.min(this.micro, b.batchSize);
    return tf.tensor4d(b.images.subarray(0, m * b.size * b.size * 3), [m, b.size, b.size, 3]);
  }
  async batches(it: number): Promise<tf.Tensor4D[]> {
    const b = await this.batch(it);
    const per = b.size * b.size * 3;
    const out: tf.Tensor4D[] = [];
    for (let start = 0; start < b.batchSize; start += this.micro) {
      const m = Math.min(this.micro, b.batchSize - start);
      out.push(tf.tensor4d(b.images.subarray(start * per, (start + m) * per), [m, b.size, b.size, 3]));
    }
    this.last = null; // the tensors hold copies: do not keep a whole batch of images alive through the step
    return out;
  }
}

/**
 * The MLflow tracker (a no-op tracker when tracking is disabled). An unreachable server does not stop the run: it
 * starts offline and `tracker.runId` stays '' until the run is created on replay (the tracker then writes the id
 * into run.json itself).
 */
async function openTracker(
  config: ExperimentConfig,
  folder: RunFolder,
  opts: RunOptions,
  specPath: string | null,
  resolvedYaml: string,
  resume: boolean,
  bus: EventBus,
  extraParams: Record<string, string>,
): Promise<RunTracker> {
  return createRunTracker({
    config,
    extraParams,
    runDir: folder.dir,
    specPath,
    resolvedYaml,
    resume,
    ...(opts.tracking?.parentRunId ? { parentRunId: opts.tracking.parentRunId } : {}),
    ...(opts.tracking?.tags ? { extraTags: opts.tracking.tags } : {}),
    emit: (e) => bus.emit(e),
  });
}

async function consoleSubscriber(opts: RunOptions, config: ExperimentConfig, onInterrupt: () => void): Promise<RunSubscriber | null> {
  try {
    const ui = await import('../ui/index.js');
    return ui.createConsoleSubscriber({ plain: opts.plain, onInterrupt, logEvery: config.output.log_every });
  } catch {
    return null;
  }
}

/** Run (or resume) one pre-training experiment. */
export async function runExperiment(opts: RunOptions): Promise<RunResult> {
  const segmentStart = Date.now();
  // ---- the run folder and the configuration
  let folder: RunFolder;
  let config: ExperimentConfig;
  let backend: BackendInfo | undefined;
  let resumeState: TrainState | null = null;
  let specPath = opts.specPath ?? null;
  let resolvedYaml: string;
  // a resumed run whose process the system killed is recorded as FAILED (with why) before it runs again
  let previousFailure: string | null = null;
  if (opts.resumeDir) {
    folder = await RunFolder.open(opts.resumeDir);
    const alive = runIsAlive(folder.dir);
    if (alive) throw new UsageError(`${opts.resumeDir}: the run is still running (pid ${alive.pid} on ${alive.host}); stop it before resuming`);
    previousFailure = (await reconcileRunFolder(folder.dir))?.reason ?? null;
    if (opts.config) config = opts.config;
    else config = (await loadExperiment(folder.path('config.yaml'))).config;
    if (folder.hasCheckpoint()) {
      const ck = await loadCheckpoint(folder.dir);
      resumeState = ck.state;
    }
    const info = folder.readRunInfo();
    specPath = opts.specPath ?? info?.specPath ?? null;
    resolvedYaml = readFileSync(folder.path('config.yaml'), 'utf8');
  } else {
    if (!opts.config) throw new UsageError('runExperiment: a config is required for a new run');
    config = opts.config;
    resolvedYaml = opts.resolvedYaml ?? configToYaml(config);
    if (config.task !== 'pretrain') {
      throw new UsageError(`task '${config.task}' is not run by \`spark run\`; use \`spark ${config.task}\``);
    }
    // bad data, or a backend that cannot run, is an error before anything exists (run folder, MLflow run)
    await checkDataReadable(config.data);
    backend = await initBackend(config.runtime.backend, runtimeBackendOptions(config.runtime));
    if (opts.runDir) {
      const dir = path.resolve(opts.runDir);
      mkdirSync(dir, { recursive: true });
      if (existsSync(path.join(dir, 'checkpoint'))) throw new UsageError(`${opts.runDir}: already holds a checkpoint; use --resume`);
      folder = await RunFolder.openOrCreate(dir);
    } else {
      folder = await RunFolder.create(config.output.dir, config.name);
    }
    await folder.writeConfig(resolvedYaml);
    await folder.updateRunInfo({
      runId: folder.runId,
      name: config.name,
      specPath,
      createdAt: new Date().toISOString(),
      ...(opts.sweep ? { sweep: opts.sweep } : {}),
    });
  }
  const seed = config.runtime.seed;

  // ---- compute (a resumed run's backend: from the config in its folder)
  backend ??= await initBackend(config.runtime.backend, runtimeBackendOptions(config.runtime));
  const info = describeEncoder(config.model.encoder);
  const batchPlan = resolveBatchPlan(config, backend.name, opts.resumeDir ? (folder.readRunInfo()?.['batch'] as RunBatchInfo | undefined) : undefined);
  const betas: [number, number] = config.train.optimizer.betas ?? [0.9, info.defaultBeta2];

  const bus = new EventBus();
  const pendingWarnings: Array<{ code: string; message: string }> = [];
  if (previousFailure) pendingWarnings.push({ code: 'previous-run-failed', message: `the previous run in this folder did not finish: ${previousFailure}` });
  let started = false;
  const warn = (code: string, message: string): void => {
    if (started) bus.emit({ type: 'warning', time: Date.now(), code, message });
    else pendingWarnings.push({ code, message });
  };

  let model: SparKModel | null = null;
  let loader: Loader | null = null;
  let optimizer: SparkOptimizer | null = null;
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  if (opts.signal) {
    if (opts.signal.aborted) stop.abort();
    else opts.signal.addEventListener('abort', onAbort, { once: true });
  }
  const cleanup = async (): Promise<void> => {
    opts.signal?.removeEventListener('abort', onAbort);
    if (loader) await loader.close().catch(() => undefined);
    optimizer?.dispose();
    model?.dispose();
  };

  let tracker: RunTracker | null = null;
  let state: TrainState;
  let startStep = 0;
  try {
    model = buildSparK(config.model, config.data.input_size, seed);
    startStep = resumeState?.step ?? 0;
    loader = await createLoader(config.data, {
      batchSize: config.train.batch_size,
      seed,
      augment: 'pretrain',
      startStep,
      runDir: folder.dir,
      onWarning: (code, message) => warn(code, message),
    });
    const source = new LoaderSource(loader, batchPlan.plan.micro);
    if (batchPlan.probe) {
      await checkFirstMicroBatch(model, source, batchPlan.plan, seed, startStep, warn);
      batchPlan.plan.estimatedPeakBytes = estimatedPeak(batchPlan.mem, batchPlan.plan.micro);
      batchPlan.plan.fits = batchPlan.plan.estimatedPeakBytes <= batchPlan.plan.limitBytes;
    }
    if (!batchPlan.plan.fits) {
      warn('batch-may-not-fit', `${describeBatchPlan(batchPlan.plan)}: the step may run out of memory${batchPlan.plan.mode === 'explicit' ? "; set train.accumulate: auto (or a larger accumulate)" : ''}`);
    }
    const batchInfo: RunBatchInfo = {
      size: batchPlan.plan.batch,
      micro: batchPlan.plan.micro,
      accumulate: batchPlan.plan.accumulate,
      mode: batchPlan.plan.mode,
      estimatedPeakBytes: Math.round(batchPlan.plan.estimatedPeakBytes),
      limitBytes: Math.round(batchPlan.plan.limitBytes),
    };
    await folder.updateRunInfo({ batch: batchInfo });
    const spe = source.stepsPerEpoch;
    const schedule = makeSchedule(config.train, spe);
    optimizer = createOptimizer(config.train.optimizer, buildParamGroups(model.params), betas);

    if (resumeState) {
      if (resumeState.seed !== seed) throw new UsageError(`${folder.dir}: checkpoint seed ${resumeState.seed} differs from config seed ${seed}`);
      const ck = await loadCheckpoint(folder.dir);
      assignVariables(model.params, ck.params, `${ck.file}`);
      assignVariables(model.buffers, ck.buffers, `${ck.file}`);
      const optTensors = await loadOptimizerState(folder.dir);
      try {
        optimizer.setState({ groupSteps: resumeState.optimizer.groupSteps, tensors: optTensors });
      } catch (e) {
        throw new UsageError(`${folder.dir}: ${(e as Error).message}`);
      }
      state = { ...resumeState, totalSteps: schedule.maxIters, stepsPerEpoch: spe, backend: backend.name };
    } else {
      state = freshTrainState({ seed: config.runtime.seed, totalSteps: schedule.maxIters, stepsPerEpoch: spe, optimizer: config.train.optimizer.name, backend: backend.name, encoder: model.encoderName });
    }

    // ---- subscribers
    const useConsole = opts.console ?? opts.subscribers === undefined;
    if (useConsole) {
      const c = await consoleSubscriber(opts, config, () => stop.abort());
      if (c) bus.subscribe(c);
    }
    for (const s of opts.subscribers ?? []) bus.subscribe(s);
    bus.subscribe(createLivenessSubscriber(folder.dir));
    tracker = await openTracker(config, folder, opts, specPath, resolvedYaml, opts.resumeDir !== undefined, bus, {
      'train.micro_batch': String(batchPlan.plan.micro),
      'train.accumulate_resolved': String(batchPlan.plan.accumulate),
    });
    bus.subscribe(tracker);
    if (tracker.runId) await folder.updateRunInfo({ mlflowRunId: tracker.runId, mlflowExperimentId: tracker.experimentId });

    bus.emit({
      type: 'run-start',
      time: Date.now(),
      runId: folder.runId,
      runDir: folder.dir,
      name: config.name,
      config,
      encoder: model.encoderName,
      backend: backend.name,
      totalSteps: schedule.maxIters,
      stepsPerEpoch: spe,
      totalEpochs: Math.ceil(schedule.maxIters / spe),
      startStep,
      resumed: resumeState !== null,
      ...(resumeState ? { elapsedBefore: resumeState.runSeconds ?? resumeState.trainSeconds } : {}),
      batch: { size: batchInfo.size, micro: batchInfo.micro, accumulate: batchInfo.accumulate, mode: batchInfo.mode },
      specPath,
      ...(opts.sweep ? { sweep: opts.sweep } : {}),
    });
    started = true;
    if (backend.name === 'torch') bus.emit({ type: 'log', time: Date.now(), level: 'info', message: `backend: ${backend.reason}` });
    bus.emit({ type: 'log', time: Date.now(), level: 'info', message: describeBatchPlan(batchPlan.plan) });
    for (const w of pendingWarnings) bus.emit({ type: 'warning', time: Date.now(), code: w.code, message: w.message });
    if (resumeState && startStep >= schedule.maxIters) {
      bus.emit({ type: 'log', time: Date.now(), level: 'info', message: `run already complete at step ${startStep}` });
    }

    // periodic reconstruction grids of a fixed batch (eval mode: no state changes, so resume stays exact)
    const reconEvery = config.output.reconstruct_every;
    let reconImages: Float32Array[] | null = null;
    const m = model;
    const reconstruct = async (label: string, epoch: number, step: number): Promise<void> => {
      try {
        const ui = await import('../ui/reconstruction.js');
        const skip = new Set(loader?.skipped().map((f) => f.path) ?? []);
        reconImages ??= await ui.fixedValidationBatch(config, Math.max(1, config.output.reconstruct_images), { skip });
        const file = folder.path('reconstructions', `${label}.png`);
        mkdirSync(path.dirname(file), { recursive: true });
        const r = await ui.renderReconstructionGrid(m, reconImages, null, config.data.input_size, file, { seed });
        bus.emit({ type: 'reconstruction', time: Date.now(), step, epoch, path: file, loss: r.loss });
      } catch (e) {
        warn('reconstruction-failed', `reconstruction grid not written: ${(e as Error).message}`);
      }
    };
    let lastReconStep = -1;
    const onEpochEnd = async (epoch: number, step: number): Promise<void> => {
      if (reconEvery > 0 && epoch % reconEvery === 0) {
        await reconstruct(`epoch-${String(epoch).padStart(4, '0')}`, epoch, step);
        lastReconStep = step;
      }
    };

    let res;
    try {
      const loopOptions = {
        onEpochEnd,
        model,
        optimizer,
        schedule,
        source,
        bus,
        folder,
        state,
        seed,
        checkpointEvery: config.output.checkpoint_every,
        logEvery: config.output.log_every,
        signal: stop.signal,
        onStep: opts.onStep,
        segmentStart,
      };
      res = await runWithOomStepDown(() => runLoop(loopOptions), { model, source, plan: batchPlan.plan, state, startStep, folder, warn });
      if (res.status === 'FINISHED') {
        await folder.writeEncoder(model.params, model.buffers, model.encoderName);
        if (reconEvery > 0 && lastReconStep !== res.step) await reconstruct('final', res.epoch, res.step);
      }
    } catch (e) {
      res = { status: 'FAILED' as const, step: state.step, epoch: epochOfStep(state.step, spe), finalLoss: state.lastLoss, error: (e as Error).message };
    }
    // a sweep trial is resumed through its sweep (which skips finished trials)
    const resumeCommand = res.status === 'KILLED' ? resumeCommandFor('run', opts.sweep ? opts.sweep.sweepDir : folder.dir) : undefined;
    bus.emit({
      type: 'run-end',
      time: Date.now(),
      status: res.status,
      step: res.step,
      epoch: res.epoch,
      finalLoss: res.finalLoss,
      ...(res.error ? { error: res.error } : {}),
      ...(resumeCommand ? { resumeCommand } : {}),
      // a resumed run's duration leaves out the time it was stopped (earlier processes' time is in the checkpoint)
      ...(resumeState ? { durationMs: Math.round(((resumeState.runSeconds ?? resumeState.trainSeconds) + (Date.now() - segmentStart) / 1000) * 1000) } : {}),
    });
    await bus.close();
    await cleanup();
    const trackingReminder = tracker?.pendingReminder ?? null;
    return {
      ...(trackingReminder ? { trackingReminder } : {}),
      status: res.status,
      runDir: folder.dir,
      runId: folder.runId,
      step: res.step,
      epoch: res.epoch,
      finalLoss: res.finalLoss,
      ...(tracker?.runId ? { mlflowRunId: tracker.runId } : {}),
      ...(res.error ? { error: res.error } : {}),
      ...(resumeCommand ? { resumeCommand } : {}),
    };
  } catch (e) {
    // a setup error (bad data folder, incompatible checkpoint, ...): nothing trained
    if (started) {
      bus.emit({ type: 'run-end', time: Date.now(), status: 'FAILED', step: startStep, epoch: epochOfStep(startStep, resumeState?.stepsPerEpoch ?? 1), finalLoss: null, error: (e as Error).message });
      await bus.close().catch(() => undefined);
    } else if (tracker) {
      await tracker.close?.().catch(() => undefined);
    }
    await cleanup();
    // a new run that failed before training leaves no folder behind (a resumed or sweep folder is kept)
    if (!opts.resumeDir && !opts.runDir && !started && !folder.hasCheckpoint()) {
      await rm(folder.dir, { recursive: true, force: true }).catch(() => undefined);
    }
    throw e;
  }
}

/**
 * The batch split of a run: a resumed run keeps the micro-batch it recorded (the same split = the same BatchNorm
 * statistics and masks), unless that no longer fits this machine; otherwise `planBatch` over the memory estimate.
 */
function resolveBatchPlan(config: ExperimentConfig, backend: string, recorded: RunBatchInfo | undefined): { plan: BatchPlan; probe: boolean; mem: StepMemory } {
  const mem = estimateStepMemory(config, backend);
  const budget = memoryBudget(process.env, process.memoryUsage().rss, backend);
  const batch = config.train.batch_size;
  const fresh = planBatch(batch, config.train.accumulate, mem, budget);
  if (recorded && recorded.size === batch && batch % recorded.micro === 0 && (config.train.accumulate === 'auto' || recorded.micro === fresh.micro)) {
    const peak = estimatedPeak(mem, recorded.micro);
    if (peak <= budget.limitBytes || !fresh.fits || config.train.accumulate !== 'auto') {
      return { plan: { ...fresh, micro: recorded.micro, accumulate: batch / recorded.micro, estimatedPeakBytes: peak, fits: peak <= budget.limitBytes }, probe: false, mem };
    }
  }
  return { plan: fresh, probe: fresh.mode === 'auto' && fresh.estimatedPeakBytes > PROBE_ABOVE * budget.limitBytes, mem };
}

/**
 * `accumulate: auto`, first step: measure the RSS growth of the first micro-batch's forward + backward and step down
 * (largest smaller divisor of the batch) while the projected step exceeds the budget or the backend runs out of
 * memory. The probe leaves the model unchanged (BN statistics restored), so the run is the same as without it.
 */
async function checkFirstMicroBatch(
  model: SparKModel,
  source: LoaderSource,
  plan: BatchPlan,
  seed: number,
  it: number,
  warn: (code: string, message: string) => void,
): Promise<void> {
  let params = 0;
  for (const v of model.params.values()) params += v.size;
  const inputBytes = plan.batch * model.inputSize * model.inputSize * 3 * 4;
  for (;;) {
    const micro = source.micro;
    const x = await source.firstMicro(it);
    let next: number | null;
    let why: string;
    try {
      const r = probeMicroBatch(model, x, seed, it);
      // the accumulated gradient and the step's other micro-batch tensors live beside the measured one
      next = checkMeasuredMicro({ batch: plan.batch, micro, rssBefore: r.rssBefore, peakAfter: r.peakAfter, extraBytes: params * 4 + inputBytes, limitBytes: plan.limitBytes });
      why = `a micro-batch of ${micro} grew the memory by ${Math.round((r.peakAfter - r.rssBefore) / 2 ** 20)} MiB`;
    } catch (e) {
      if (!isOutOfMemory(e)) throw e;
      next = stepDownAfterOom(plan.batch, micro);
      if (next === null) throw e;
      why = `a micro-batch of ${micro} ran out of memory (${(e as Error).message.split('\n')[0]})`;
    } finally {
      x.dispose();
    }
    if (next === micro) return;
    warn('micro-batch-stepped-down', `${why}: micro-batch ${micro} → ${next}`);
    source.micro = next;
    plan.micro = next;
    plan.accumulate = plan.batch / next;
  }
}

/**
 * `accumulate: auto`: an out-of-memory error before the first optimizer step of this process steps the micro-batch
 * down (largest divisor of the batch ≤ half) and runs the loop again from the same state; BatchNorm running
 * statistics the failed attempt updated are restored first (the weights change only after all micro-batches).
 */
export async function runWithOomStepDown<T>(
  run: () => Promise<T>,
  o: {
    model: Pick<SparKModel, 'buffers'>;
    source: { micro: number };
    plan: BatchPlan;
    state: Pick<TrainState, 'step'>;
    startStep: number;
    folder: Pick<RunFolder, 'readRunInfo' | 'updateRunInfo'>;
    warn: (code: string, message: string) => void;
  },
): Promise<T> {
  if (o.plan.mode !== 'auto') return run();
  const saved = new Map<string, tf.Tensor>();
  for (const [k, v] of o.model.buffers) saved.set(k, v.clone());
  try {
    for (;;) {
      try {
        return await run();
      } catch (e) {
        const next = o.state.step === o.startStep && isOutOfMemory(e) ? stepDownAfterOom(o.plan.batch, o.source.micro) : null;
        if (next === null) throw e;
        o.warn('micro-batch-stepped-down', `micro-batch ${o.source.micro} ran out of memory before the first step (${(e as Error).message.split('\n')[0]}): micro-batch → ${next}`);
        for (const [k, v] of o.model.buffers) v.assign(saved.get(k)!);
        o.source.micro = next;
        o.plan.micro = next;
        o.plan.accumulate = o.plan.batch / next;
        const prev = o.folder.readRunInfo()?.['batch'] as RunBatchInfo | undefined;
        if (prev) await o.folder.updateRunInfo({ batch: { ...prev, micro: next, accumulate: o.plan.accumulate } });
      }
    }
  } finally {
    tf.dispose([...saved.values()]);
  }
}
