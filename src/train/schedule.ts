/**
 * Per-iteration lr and weight-decay schedules of SparK pre-training (spec §6.3, `lr_wd_annealing`):
 *
 * - warmup (it < wp): lr = peak·(0.005 + 0.995·it/wp)
 * - cosine:           lr = peak·(0.001 + 0.999·½(1 + cos(π·(it − wp)/(max − 1 − wp))))
 * - weight decay:     wd = wde + (wd0 − wde)·½(1 + cos(π·it/(max − 1)))   (0.04 → 0.2 over the whole run)
 *
 * `it` is the 0-based global iteration (optimizer step s, 1-based, uses it = s − 1).
 */
import type { TrainConfig } from '../spec/types.js';

export interface ScheduleParams {
  peakLr: number;
  /** Warmup iterations (wp_it). */
  warmupIters: number;
  /** Total iterations of the run (max_it). */
  maxIters: number;
  wdStart: number;
  wdEnd: number;
}

export function lrAt(it: number, s: ScheduleParams): number {
  const wp = s.warmupIters;
  if (it < wp) return s.peakLr * (0.005 + (0.995 * it) / wp);
  const span = s.maxIters - 1 - wp;
  const ratio = span > 0 ? Math.min(1, Math.max(0, (it - wp) / span)) : 0;
  return s.peakLr * (0.001 + 0.999 * 0.5 * (1 + Math.cos(Math.PI * ratio)));
}

export function wdAt(it: number, s: ScheduleParams): number {
  const span = s.maxIters - 1;
  const ratio = span > 0 ? Math.min(1, Math.max(0, it / span)) : 0;
  return s.wdEnd + (s.wdStart - s.wdEnd) * 0.5 * (1 + Math.cos(Math.PI * ratio));
}

export interface Schedule extends ScheduleParams {
  /** Images per optimizer step (train.batch_size; the micro-batches of a step add up to it). */
  effectiveBatch: number;
  stepsPerEpoch: number;
  /** lr and wd for the 0-based iteration `it`. */
  at(it: number): { lr: number; wd: number };
}

/** peak lr = base_lr × batch per optimizer step / base_batch_size (spec §6.1). */
export function peakLr(train: Pick<TrainConfig, 'batch_size' | 'optimizer'>): number {
  return (train.optimizer.base_lr * train.batch_size) / train.optimizer.base_batch_size;
}

/** Total optimizer steps of a run: `train.steps`, or `train.epochs × stepsPerEpoch`. */
export function totalSteps(train: Pick<TrainConfig, 'steps' | 'epochs'>, stepsPerEpoch: number): number {
  if (train.steps != null) return train.steps;
  if (train.epochs != null) return Math.max(1, Math.round(train.epochs * stepsPerEpoch));
  throw new Error('train: neither steps nor epochs is set');
}

/** Warmup iterations: `warmup_steps` when set, else round(warmup_epochs × stepsPerEpoch). */
export function warmupSteps(train: Pick<TrainConfig, 'warmup_steps' | 'warmup_epochs'>, stepsPerEpoch: number): number {
  if (train.warmup_steps != null) return train.warmup_steps;
  return Math.max(0, Math.round(train.warmup_epochs * stepsPerEpoch));
}

export function makeSchedule(train: TrainConfig, stepsPerEpoch: number): Schedule {
  const params: ScheduleParams = {
    peakLr: peakLr(train),
    warmupIters: warmupSteps(train, stepsPerEpoch),
    maxIters: totalSteps(train, stepsPerEpoch),
    wdStart: train.optimizer.weight_decay,
    wdEnd: train.optimizer.weight_decay_end,
  };
  return {
    ...params,
    effectiveBatch: train.batch_size,
    stepsPerEpoch,
    at: (it: number) => ({ lr: lrAt(it, params), wd: wdAt(it, params) }),
  };
}
