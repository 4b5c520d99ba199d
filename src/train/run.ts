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
import { initBackend } from '../backend/init.js';
import { buildSparK, type SparKModel } from '../models/spark.js';
import { describeEncoder } from '../models/registry.js';
import { createLoader, type Loader } from '../data/index.js';
import { UsageError } from '../util/errors.js';
import { EventBus, type RunStartEvent, type RunStatus, type RunSubscriber } from './events.js';
import { buildParamGroups, createOptimizer, type SparkOptimizer } from './optimizers.js';
import { makeSchedule } from './schedule.js';
import { RunFolder, assignVariables, freshTrainState, loadCheckpoint, loadOptimizerState, resumeCommandFor, type TrainState } from './checkpoint.js';
import { runLoop, type BatchSource } from './loop.js';
import { createRunTracker, type RunTracker } from '../track/index.js';
import { createLivenessSubscriber, reconcileRunFolder, runIsAlive } from '../track/liveness.js';

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

/** Optimizer steps per epoch for a loader of `loaderSteps` batches and `accumulate` micro-batches per step. */
export function optimizerStepsPerEpoch(loaderSteps: number, accumulate: number): number {
  return Math.max(1, Math.ceil(loaderSteps / Math.max(1, accumulate)));
}

/** Micro-batch `k` of iteration `it` is the loader's global batch `it·accumulate + k`. */
export class LoaderSource implements BatchSource {
  constructor(
    private readonly loader: Loader,
    private readonly accumulate: number,
  ) {}
  get stepsPerEpoch(): number {
    return optimizerStepsPerEpoch(this.loader.stepsPerEpoch, this.accumulate);
  }
  async batches(it: number): Promise<tf.Tensor4D[]> {
    const out: tf.Tensor4D[] = [];
    for (let k = 0; k < this.accumulate; k++) {
      const want = it * this.accumulate + k;
      let b = await this.loader.next();
      if (b.step !== want) {
        this.loader.seek(want);
        b = await this.loader.next();
      }
      out.push(tf.tensor4d(b.images, [b.batchSize, b.size, b.size, 3]));
    }
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
): Promise<RunTracker> {
  return createRunTracker({
    config,
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
  // ---- the run folder and the configuration
  let folder: RunFolder;
  let config: ExperimentConfig;
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
  const accumulate = Math.max(1, config.train.accumulate);

  // ---- compute
  const backend = await initBackend(config.runtime.backend, { threads: config.runtime.threads });
  const info = describeEncoder(config.model.encoder);
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
      startStep: startStep * accumulate,
      runDir: folder.dir,
      onWarning: (code, message) => warn(code, message),
    });
    const source = new LoaderSource(loader, accumulate);
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
    tracker = await openTracker(config, folder, opts, specPath, resolvedYaml, opts.resumeDir !== undefined, bus);
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
      specPath,
      ...(opts.sweep ? { sweep: opts.sweep } : {}),
    });
    started = true;
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
        reconImages ??= await ui.fixedValidationBatch(config, Math.max(1, config.output.reconstruct_images));
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
      res = await runLoop({
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
      });
      if (res.status === 'FINISHED') {
        await folder.writeEncoder(model.params, model.buffers, model.encoderName);
        if (reconEvery > 0 && lastReconStep !== res.step) await reconstruct('final', res.epoch, res.step);
      }
    } catch (e) {
      res = { status: 'FAILED' as const, step: state.step, epoch: Math.floor(state.step / spe), finalLoss: state.lastLoss, error: (e as Error).message };
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
      bus.emit({ type: 'run-end', time: Date.now(), status: 'FAILED', step: startStep, epoch: 0, finalLoss: null, error: (e as Error).message });
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
