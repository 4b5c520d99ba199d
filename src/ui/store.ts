/**
 * The UI's model of a run: a plain mutable state updated from events in O(1) per event (no allocation beyond a
 * bounded loss history), and a throttle that hands immutable snapshots to the views at most every `intervalMs`.
 * React never sees individual events, so a fast training loop pays only for `applyEvent`.
 */
import type { RunEndEvent, RunEvent } from '../train/events.js';

/** Number of recent step losses kept for the sparkline. */
export const LOSS_HISTORY = 120;
/** Smoothing of the displayed loss EMA (per step event), bias-corrected. */
export const EMA_BETA = 0.9;
/** Distinct warnings kept for display. */
export const MAX_WARNINGS = 4;
/** Recent warn/error log lines kept for display. */
export const MAX_LOGS = 3;

export interface WarningItem {
  code: string;
  message: string;
  count: number;
  time: number;
}

export interface RunState {
  started: boolean;
  /** MLflow experiment the run is tracked under (config.tracking.experiment), '' when unknown. */
  experiment: string;
  name: string;
  runId: string;
  runDir: string;
  encoder: string;
  backend: string;
  resumed: boolean;
  startStep: number;
  totalSteps: number;
  stepsPerEpoch: number;
  totalEpochs: number;
  logEvery: number;
  startTime: number | null;
  /** The batch split of the run (run-start): size = accumulate micro-batches of micro images. */
  batch: { size: number; micro: number; accumulate: number } | null;
  /** Seconds the run ran in earlier processes (resumed): elapsed time = elapsedBefore + now − startTime. */
  elapsedBefore: number;
  sweep: { trial: number; trialName: string; params: Record<string, unknown>; trials?: number } | null;

  step: number;
  epoch: number;
  epochStep: number;
  loss: number | null;
  ema: number | null;
  emaRaw: number;
  emaCount: number;
  minLoss: number | null;
  /** Ring of recent losses (oldest first after `lossHistoryView`). */
  lossRing: number[];
  lossRingPos: number;
  lr: number | null;
  wd: number | null;
  gradNorm: number | null;
  imgPerSec: number | null;
  etaSec: number | null;
  memory: { numTensors: number; numBytes: number; rssBytes: number } | null;
  lastStepTime: number | null;

  lastEpoch: { epoch: number; meanLoss: number; minLoss: number; seconds: number } | null;
  checkpoint: { path: string; step: number; epoch: number; time: number } | null;
  reconstruction: { path: string; step: number; epoch: number; loss: number; time: number } | null;
  /** Latest value of each named metric (`metrics` events: val_top1, probe_top1, ...) and where it was taken. */
  metrics: { step: number; epoch: number; values: Record<string, number> } | null;
  warnings: WarningItem[];
  tracking: { state: 'online' | 'offline'; message: string } | null;
  logs: Array<{ level: string; message: string; time: number }>;
  /** Set when the user asked to stop (first Ctrl-C). */
  stopping: boolean;
  end: RunEndEvent | null;
  events: number;
}

export function initialRunState(): RunState {
  return {
    started: false,
    experiment: '',
    name: '',
    runId: '',
    runDir: '',
    encoder: '',
    backend: '',
    resumed: false,
    startStep: 0,
    totalSteps: 0,
    stepsPerEpoch: 0,
    totalEpochs: 0,
    logEvery: 1,
    startTime: null,
    elapsedBefore: 0,
    batch: null,
    sweep: null,
    step: 0,
    epoch: 0,
    epochStep: 0,
    loss: null,
    ema: null,
    emaRaw: 0,
    emaCount: 0,
    minLoss: null,
    lossRing: [],
    lossRingPos: 0,
    lr: null,
    wd: null,
    gradNorm: null,
    imgPerSec: null,
    etaSec: null,
    memory: null,
    lastStepTime: null,
    lastEpoch: null,
    checkpoint: null,
    reconstruction: null,
    metrics: null,
    warnings: [],
    tracking: null,
    logs: [],
    stopping: false,
    end: null,
    events: 0,
  };
}

/** Fold one event into the state (mutates; O(1)). */
export function applyEvent(s: RunState, e: RunEvent): void {
  s.events++;
  switch (e.type) {
    case 'run-start':
      s.started = true;
      s.name = e.name;
      s.experiment = e.config?.tracking?.experiment ?? '';
      s.runId = e.runId;
      s.runDir = e.runDir;
      s.encoder = e.encoder;
      s.backend = e.backend;
      s.resumed = e.resumed;
      s.startStep = e.startStep;
      s.totalSteps = e.totalSteps;
      s.stepsPerEpoch = e.stepsPerEpoch;
      s.totalEpochs = e.totalEpochs;
      s.logEvery = Math.max(1, e.config?.output?.log_every ?? 1);
      s.startTime = e.time;
      s.elapsedBefore = e.elapsedBefore ?? 0;
      s.batch = e.batch ? { size: e.batch.size, micro: e.batch.micro, accumulate: e.batch.accumulate } : null;
      s.step = e.startStep;
      s.epoch = e.stepsPerEpoch > 0 ? Math.min(Math.max(1, e.totalEpochs), Math.floor(e.startStep / e.stepsPerEpoch) + 1) : 0;
      s.epochStep = e.stepsPerEpoch > 0 ? e.startStep % e.stepsPerEpoch : 0;
      s.sweep = e.sweep ? { trial: e.sweep.trial, trialName: e.sweep.trialName, params: e.sweep.params, trials: e.sweep.trials } : null;
      break;
    case 'step': {
      s.step = e.step;
      s.epoch = e.epoch;
      s.epochStep = e.epochStep;
      s.loss = e.loss;
      if (Number.isFinite(e.loss)) {
        s.emaRaw = EMA_BETA * s.emaRaw + (1 - EMA_BETA) * e.loss;
        s.emaCount++;
        // the run's own EMA (continued across resumes) when the emitter keeps one
        s.ema = e.lossEma ?? s.emaRaw / (1 - Math.pow(EMA_BETA, s.emaCount));
        if (s.minLoss == null || e.loss < s.minLoss) s.minLoss = e.loss;
      }
      if (s.lossRing.length < LOSS_HISTORY) s.lossRing.push(e.loss);
      else {
        s.lossRing[s.lossRingPos] = e.loss;
        s.lossRingPos = (s.lossRingPos + 1) % LOSS_HISTORY;
      }
      s.lr = e.lr;
      s.wd = e.wd;
      s.gradNorm = e.gradNorm;
      s.imgPerSec = e.imgPerSec;
      s.etaSec = e.etaSec;
      if (e.memory) s.memory = e.memory;
      s.lastStepTime = e.time;
      break;
    }
    case 'epoch':
      s.lastEpoch = { epoch: e.epoch, meanLoss: e.meanLoss, minLoss: e.minLoss, seconds: e.seconds };
      s.epoch = e.epoch;
      s.step = Math.max(s.step, e.step);
      break;
    case 'checkpoint':
      s.checkpoint = { path: e.path, step: e.step, epoch: e.epoch, time: e.time };
      break;
    case 'reconstruction':
      s.reconstruction = { path: e.path, step: e.step, epoch: e.epoch, loss: e.loss, time: e.time };
      break;
    case 'metrics':
      s.metrics = { step: e.step, epoch: e.epoch, values: { ...(s.metrics?.values ?? {}), ...e.metrics } };
      break;
    case 'warning':
      if (e.code === 'tracking-offline' || e.code === 'tracking-online') {
        s.tracking = { state: e.code === 'tracking-offline' ? 'offline' : 'online', message: e.message };
        break;
      }
      addWarning(s, e.code, e.message, e.time);
      break;
    case 'log':
      if (e.level === 'warn' || e.level === 'error') {
        s.logs.push({ level: e.level, message: e.message, time: e.time });
        if (s.logs.length > MAX_LOGS) s.logs.shift();
      }
      break;
    case 'run-end':
      s.end = e;
      if (e.step > s.step) {
        // steps run after the last step event (the trainer may report every log_every steps only)
        s.step = e.step;
        if (s.stepsPerEpoch > 0 && e.step > 0) {
          s.epoch = Math.floor((e.step - 1) / s.stepsPerEpoch) + 1;
          s.epochStep = ((e.step - 1) % s.stepsPerEpoch) + 1;
        }
      }
      break;
  }
}

function addWarning(s: RunState, code: string, message: string, time: number): void {
  const same = s.warnings.find((w) => w.code === code && w.message === message);
  if (same) {
    same.count++;
    same.time = time;
    return;
  }
  s.warnings.push({ code, message, count: 1, time });
  if (s.warnings.length > MAX_WARNINGS) s.warnings.shift();
}

/** The recent losses, oldest first. */
export function lossHistoryView(s: RunState): number[] {
  if (s.lossRing.length < LOSS_HISTORY) return s.lossRing.slice();
  return s.lossRing.slice(s.lossRingPos).concat(s.lossRing.slice(0, s.lossRingPos));
}

/** An immutable view of a run for rendering, taken at time `now`. */
export interface RunSnapshot extends Readonly<Omit<RunState, 'lossRing' | 'lossRingPos' | 'emaRaw' | 'emaCount'>> {
  now: number;
  lossHistory: readonly number[];
}

export function takeSnapshot(s: RunState, now: number): RunSnapshot {
  const { lossRing: _r, lossRingPos: _p, emaRaw: _e, emaCount: _c, ...rest } = s;
  return {
    ...rest,
    warnings: s.warnings.map((w) => ({ ...w })),
    metrics: s.metrics ? { ...s.metrics, values: { ...s.metrics.values } } : null,
    logs: s.logs.slice(),
    now,
    lossHistory: lossHistoryView(s),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Throttled publication

/** Injectable time source (tests drive a fake one). */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/**
 * Calls `fn` at most once per `intervalMs`: immediately when the interval has passed since the last call (so a
 * loop that rarely yields still gets frames), otherwise once at the end of the interval (trailing), via an unref'd
 * timer that never keeps the process alive.
 */
export class Throttle {
  private last = -Infinity;
  private timer: unknown = null;
  private pending = false;
  private stopped = false;
  calls = 0;

  constructor(
    private readonly fn: () => void,
    readonly intervalMs: number,
    private readonly clock: Clock = realClock,
  ) {}

  poke(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    if (now - this.last >= this.intervalMs) {
      this.run(now);
      return;
    }
    this.pending = true;
    if (this.timer == null) {
      this.timer = this.clock.setTimeout(() => {
        this.timer = null;
        if (this.pending && !this.stopped) this.run(this.clock.now());
      }, Math.max(1, this.intervalMs - (now - this.last)));
    }
  }

  /** Run now if something is pending (or `force`). */
  flush(force = false): void {
    if (this.stopped) return;
    if (this.pending || force) this.run(this.clock.now());
  }

  stop(): void {
    this.stopped = true;
    if (this.timer != null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private run(now: number): void {
    this.last = now;
    this.pending = false;
    if (this.timer != null) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
    this.calls++;
    this.fn();
  }
}
