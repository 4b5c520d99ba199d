/**
 * The plain logger: one line per `logEvery` steps, per epoch, checkpoint, reconstruction, warning, warn/error log
 * and run end. Never writes ANSI codes, so `spark run … | cat` and CI logs stay clean.
 */
import type { RunEvent, RunStartEvent, StepEvent } from '../train/events.js';
import type { RunSubscriber } from '../train/events.js';
import {
  formatDuration,
  formatGradNorm,
  formatLoss,
  formatSci,
  formatWd,
  stripAnsi,
  formatParamValue,
  formatMetrics,
  formatRunLength,
} from './format.js';
import { applyEvent, initialRunState, type RunState } from './store.js';
import { trialLabel } from './trial-label.js';

export interface PlainLoggerOptions {
  /** Where lines go (default process.stdout). Anything with `write(string)`. */
  stream?: { write(s: string): unknown };
  /** Print a step line every N steps; default: the run's `output.log_every`. */
  logEvery?: number;
  /** Prefix for every line (sweeps use `[trial 3/4] `). */
  prefix?: string;
  /** Also print `info` log events (default true; `debug` is never printed). */
  info?: boolean;
  /** Print the resume command of an interrupted run (default true; a sweep prints its own, once). */
  resumeHint?: boolean;
}

/** `[step 120/400 ep 3/10] loss 0.8123 (ema 0.8301) lr 1.2e-3 wd 0.041 gn 0.53 12.4 img/s eta 0:05:12` */
export function formatStepLine(s: Pick<RunState, 'totalSteps' | 'totalEpochs' | 'ema'>, e: StepEvent): string {
  const total = s.totalSteps > 0 ? `/${s.totalSteps}` : '';
  const epochs = s.totalEpochs > 0 ? `/${s.totalEpochs}` : '';
  const ema = s.ema != null ? ` (ema ${formatLoss(s.ema)})` : '';
  return (
    `[step ${e.step}${total} ep ${e.epoch}${epochs}] loss ${formatLoss(e.loss)}${ema} ` +
    `lr ${formatSci(e.lr)} wd ${formatWd(e.wd)} gn ${formatGradNorm(e.gradNorm)} ` +
    `${Number.isFinite(e.imgPerSec) ? e.imgPerSec.toFixed(1) : '?'} img/s eta ${formatDuration(e.etaSec)}`
  );
}

export function formatStartLines(e: RunStartEvent): string[] {
  const lines = [
    `run ${e.name} (${e.runId}) encoder ${e.encoder}, backend ${e.backend}, ` +
      formatRunLength(e.totalSteps, e.stepsPerEpoch) +
      (e.resumed ? `, resumed at step ${e.startStep}` : ''),
    `run folder: ${e.runDir}`,
  ];
  if (e.sweep) {
    const p = Object.entries(e.sweep.params)
      .map(([k, v]) => `${k}=${formatParamValue(v)}`)
      .join(' ');
    lines.push(`sweep ${trialLabel(e.sweep.trial, e.sweep.trials)} (${e.sweep.trialName})${p ? ': ' + p : ''}`);
  }
  return lines;
}

export class PlainLogger implements RunSubscriber {
  readonly state: RunState = initialRunState();
  private readonly out: { write(s: string): unknown };
  private readonly prefix: string;
  private readonly info: boolean;
  private lastPrintedStep = -1;
  private lastStep: StepEvent | null = null;

  constructor(private readonly opts: PlainLoggerOptions = {}) {
    this.out = opts.stream ?? process.stdout;
    this.prefix = opts.prefix ?? '';
    this.info = opts.info ?? true;
  }

  private line(s: string): void {
    this.out.write(stripAnsi(this.prefix + s) + '\n');
  }

  get logEvery(): number {
    return Math.max(1, Math.floor(this.opts.logEvery ?? this.state.logEvery ?? 1));
  }

  onEvent(e: RunEvent): void {
    applyEvent(this.state, e);
    const s = this.state;
    switch (e.type) {
      case 'run-start':
        for (const l of formatStartLines(e)) this.line(l);
        break;
      case 'step':
        this.lastStep = e;
        if (e.step % this.logEvery === 0 || (s.totalSteps > 0 && e.step === s.totalSteps)) {
          this.line(formatStepLine(s, e));
          this.lastPrintedStep = e.step;
        }
        break;
      case 'epoch': {
        const epochs = s.totalEpochs > 0 ? `/${s.totalEpochs}` : '';
        this.line(
          `[epoch ${e.epoch}${epochs}${e.partial ? `, partial: its first ${e.steps} of ${s.stepsPerEpoch} steps` : ''}] step ${e.step} ` +
            `mean loss ${formatLoss(e.meanLoss)} min ${formatLoss(e.minLoss)} ` +
            `(${e.seconds.toFixed(1)} s)`,
        );
        break;
      }
      case 'checkpoint':
        this.line(`[checkpoint] step ${e.step} epoch ${e.epoch}: ${e.path}`);
        break;
      case 'reconstruction':
        this.line(`[reconstruction] epoch ${e.epoch} loss ${formatLoss(e.loss)}: ${e.path}`);
        break;
      case 'metrics':
        this.line(`[metrics] step ${e.step} epoch ${e.epoch}: ${formatMetrics(e.metrics)}`);
        break;
      case 'warning':
        this.line(`warning (${e.code}): ${e.message}`);
        break;
      case 'log':
        if (e.level === 'debug' || (e.level === 'info' && !this.info)) break;
        this.line(e.level === 'info' ? e.message : `${e.level}: ${e.message}`);
        break;
      case 'run-end': {
        // The last step is always shown, so the final numbers are in the log even between log_every lines.
        if (this.lastStep && this.lastStep.step !== this.lastPrintedStep) {
          this.line(formatStepLine(s, this.lastStep));
          this.lastPrintedStep = this.lastStep.step;
        }
        const loss = e.finalLoss != null ? `, final loss ${formatLoss(e.finalLoss)}` : '';
        this.line(`[run-end] ${e.status} at step ${e.step} (epoch ${e.epoch})${loss}`);
        if (e.error) this.line(`error: ${e.error}`);
        if (e.resumeCommand && this.opts.resumeHint !== false) this.line(`resume with: ${e.resumeCommand}`);
        break;
      }
    }
  }

  async close(): Promise<void> {
    /* lines are written synchronously; nothing to flush */
  }
}

export function createPlainLogger(opts: PlainLoggerOptions = {}): PlainLogger {
  return new PlainLogger(opts);
}
