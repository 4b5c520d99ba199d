/**
 * The one typed event stream of a run. The training loop emits; the terminal UI, the plain logger and the MLflow
 * tracker subscribe. The loop knows nothing of Ink or MLflow.
 */
import type { ExperimentConfig } from '../spec/types.js';

export type RunStatus = 'FINISHED' | 'FAILED' | 'KILLED';

/**
 * Epoch numbers people read are 1-based everywhere (events, console, MLflow's `epoch` metric): epoch k holds the
 * optimizer steps (k−1)·spe + 1 … k·spe, so the epoch of step s is ceil(s / spe) (epoch 1 before the first step).
 * Only checkpoint/state.json keeps counts of completed epochs (`epoch`, `dataPosition.epoch` 0-based positions).
 */
export function epochOfStep(step: number, stepsPerEpoch: number): number {
  return Math.max(1, Math.ceil(step / Math.max(1, stepsPerEpoch)));
}

/** Decay of the displayed loss EMA (bias-corrected, like Adam's moments). */
export const LOSS_EMA_BETA = 0.9;

/** The loss EMA after one more loss: `raw` is the uncorrected average, `count` the losses folded in. */
export function nextLossEma(prev: { raw: number; count: number } | null | undefined, loss: number): { raw: number; count: number; value: number } {
  const raw = LOSS_EMA_BETA * (prev?.raw ?? 0) + (1 - LOSS_EMA_BETA) * loss;
  const count = (prev?.count ?? 0) + 1;
  return { raw, count, value: raw / (1 - Math.pow(LOSS_EMA_BETA, count)) };
}

export interface RunStartEvent {
  type: 'run-start';
  time: number;
  runId: string;
  runDir: string;
  name: string;
  config: ExperimentConfig;
  /** Resolved encoder name, e.g. 'resnet50' or 'convnext(depths=[3,3,9,3],dims=[96,192,384,768])'. */
  encoder: string;
  /** Backend actually in use, e.g. 'tensorflow', 'cpu'. */
  backend: string;
  totalSteps: number;
  stepsPerEpoch: number;
  totalEpochs: number;
  /** First step this process will run (> 0 when resumed). */
  startStep: number;
  /** Wall seconds the run already ran before this process (resumed runs; stopped time excluded). */
  elapsedBefore?: number;
  /** How train.batch_size is split: `accumulate` micro-batches of `micro` images ('auto' = chosen for this machine). */
  batch?: { size: number; micro: number; accumulate: number; mode: 'auto' | 'explicit' };
  resumed: boolean;
  /** Path of the spec file the run came from (null when built in code). */
  specPath: string | null;
  /** Sweep membership, when the run is a sweep trial (`trial` 0-based; `trials` = how many the sweep has). */
  sweep?: { sweepDir: string; trial: number; trialName: string; params: Record<string, unknown>; trials?: number };
}

export interface StepEvent {
  type: 'step';
  time: number;
  /** Optimizer step just completed, 1-based (step 1 = first update). */
  step: number;
  epoch: number;
  /** Step within the epoch, 1-based. */
  epochStep: number;
  loss: number;
  lr: number;
  wd: number;
  gradNorm: number;
  imgPerSec: number;
  /** Seconds left at the recent step rate; NaN while unknown (the first step of a process is warm-up). */
  etaSec: number;
  /** Bias-corrected EMA of the loss over the whole run (continued across resumes: it is in the checkpoint). */
  lossEma?: number;
  memory?: { numTensors: number; numBytes: number; rssBytes: number };
}

export interface EpochEvent {
  type: 'epoch';
  time: number;
  /** Epoch just completed, 1-based. */
  epoch: number;
  step: number;
  meanLoss: number;
  minLoss: number;
  /** Wall seconds of the epoch's steps, over resumes (stopped time excluded). */
  seconds: number;
  /** The run ended inside this epoch: the numbers cover its first `steps` steps only. */
  partial?: boolean;
  /** Steps the numbers cover (stepsPerEpoch unless partial). */
  steps?: number;
}

export interface CheckpointEvent {
  type: 'checkpoint';
  time: number;
  step: number;
  epoch: number;
  path: string;
}

export interface ReconstructionEvent {
  type: 'reconstruction';
  time: number;
  step: number;
  epoch: number;
  /** PNG written in the run folder. */
  path: string;
  loss: number;
}

/** Named scalar metrics at a step (evaluation results such as `val_top1`, `val_top5`, `probe_top1`). */
export interface MetricsEvent {
  type: 'metrics';
  time: number;
  step: number;
  epoch: number;
  metrics: Record<string, number>;
}

export interface WarningEvent {
  type: 'warning';
  time: number;
  /** Stable code, e.g. 'skipped-files', 'tracking-offline', 'tracking-online'. */
  code: string;
  message: string;
}

export interface LogEvent {
  type: 'log';
  time: number;
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
}

export interface RunEndEvent {
  type: 'run-end';
  time: number;
  status: RunStatus;
  step: number;
  epoch: number;
  finalLoss: number | null;
  error?: string;
  /** Command that resumes the run, when it was interrupted. */
  resumeCommand?: string;
  /** A resumed run: its wall time over all its processes, stopped time excluded (the MLflow run's duration). */
  durationMs?: number;
}

export type RunEvent =
  | RunStartEvent
  | StepEvent
  | EpochEvent
  | CheckpointEvent
  | ReconstructionEvent
  | MetricsEvent
  | WarningEvent
  | LogEvent
  | RunEndEvent;

export type RunEventType = RunEvent['type'];

/** A subscriber: gets every event synchronously; `close()` is awaited when the run ends (flush buffers). */
export interface RunSubscriber {
  onEvent(e: RunEvent): void;
  close?(): Promise<void>;
  /** Awaited before a checkpoint at `step` is written (the tracker makes what was logged so far durable). */
  beforeCheckpoint?(step: number): void | Promise<void>;
}

/** Synchronous fan-out. A subscriber that throws is reported once as a `log` error and does not stop the run. */
export class EventBus {
  private subs: RunSubscriber[] = [];
  private failed = new Set<RunSubscriber>();

  subscribe(sub: RunSubscriber | ((e: RunEvent) => void)): () => void {
    const s: RunSubscriber = typeof sub === 'function' ? { onEvent: sub } : sub;
    this.subs.push(s);
    return () => {
      this.subs = this.subs.filter((x) => x !== s);
    };
  }

  emit(e: RunEvent): void {
    for (const s of this.subs) {
      try {
        s.onEvent(e);
      } catch (err) {
        if (!this.failed.has(s)) {
          this.failed.add(s);
          const msg = err instanceof Error ? err.message : String(err);
          for (const o of this.subs) if (o !== s) o.onEvent({ type: 'log', time: Date.now(), level: 'error', message: `event subscriber failed: ${msg}` });
        }
      }
    }
  }

  /** Await every subscriber's beforeCheckpoint(step), in order (one that throws is reported like in emit). */
  async beforeCheckpoint(step: number): Promise<void> {
    for (const s of this.subs) {
      if (!s.beforeCheckpoint) continue;
      try {
        await s.beforeCheckpoint(step);
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        for (const o of this.subs) if (o !== s) o.onEvent({ type: 'log', time: Date.now(), level: 'error', message: `event subscriber failed before the checkpoint: ${msg}` });
      }
    }
  }

  /** Await every subscriber's close(), in order. */
  async close(): Promise<void> {
    for (const s of this.subs) {
      if (s.close) await s.close();
    }
  }
}
