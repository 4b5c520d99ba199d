/**
 * RunTracker: a RunSubscriber bound to one MLflow run. onEvent() only buffers (it never blocks or throws into the
 * training loop); flushes run in the background, serialised, every `flushEvery` steps or `flushSeconds` seconds,
 * and on close(). When the server is unreachable the calls go to the offline journal in the run folder and are
 * replayed, in order and exactly once, when it answers again (checked on each flush) or by `spark sync --run`.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { atomicWriteFileSync } from '../util/atomic.js';
import type { RunEvent, RunSubscriber } from '../train/events.js';
import { chunkBatch, isUnreachable, UnreachableError } from './rest.js';
import { Journal, JOURNAL_FILE, executeOp, replayJournal, type TrackOp } from './journal.js';
import type { KeyValue, Metric, MlflowRunStatus, TrackingStore } from './types.js';

export const STATE_FILE = 'mlflow.json';

/** `<runDir>/mlflow.json`: what a resumed run needs to continue the same MLflow run. */
export interface TrackingState {
  uri: string;
  experimentId: string;
  runId: string;
  /** Highest step whose metrics were acknowledged by the store or journaled for replay. */
  lastLoggedStep: number;
  /** True while calls wait in the offline journal. */
  offline?: boolean;
}

export function readTrackingState(runDir: string): TrackingState | null {
  const f = path.join(runDir, STATE_FILE);
  if (!existsSync(f)) return null;
  try {
    const s = JSON.parse(readFileSync(f, 'utf8')) as TrackingState;
    return typeof s.runId === 'string' && typeof s.uri === 'string' ? s : null;
  } catch {
    return null;
  }
}

export interface RunTracker extends RunSubscriber {
  runId: string;
  experimentId: string;
  uri: string;
}

export interface TrackerOptions {
  store: TrackingStore;
  runDir: string;
  experimentId: string;
  runId: string;
  /** Steps at or below this are not logged again (resume). */
  lastLoggedStep: number;
  /** Flush after this many buffered steps (default 50). */
  flushEvery?: number;
  /** ...or this many seconds since the last flush (default 10). */
  flushSeconds?: number;
  /** From readJournal() of `<runDir>/mlflow-offline.jsonl` when it exists (resume). */
  journalLastSeq?: number;
  journalPending?: boolean;
  /** Receives 'tracking-offline' / 'tracking-online' / 'tracking-error' warnings. */
  emit?: (e: RunEvent) => void;
}

const STEP_METRICS: Array<[string, (e: Extract<RunEvent, { type: 'step' }>) => number]> = [
  ['loss', (e) => e.loss],
  ['lr', (e) => e.lr],
  ['wd', (e) => e.wd],
  ['grad_norm', (e) => e.gradNorm],
  ['img_per_sec', (e) => e.imgPerSec],
];

export class MlflowRunTracker implements RunTracker {
  readonly runId: string;
  readonly experimentId: string;
  readonly uri: string;
  private readonly store: TrackingStore;
  private readonly runDir: string;
  private readonly journal: Journal;
  private readonly flushEvery: number;
  private readonly flushMs: number;
  private readonly emit?: (e: RunEvent) => void;

  private metrics: Metric[] = [];
  private tags: KeyValue[] = [];
  private queue: Array<{ seq: number; op: TrackOp; maxStep: number }> = [];
  private extraOps: TrackOp[] = [];
  private bufferedSteps = 0;
  private bufferedMaxStep = 0;
  private lastFlush = Date.now();
  private seq = 0;
  private offline = false;
  private lastLoggedStep: number;
  private skipUpTo: number;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  private reportedErrors = new Set<string>();

  constructor(o: TrackerOptions) {
    this.store = o.store;
    this.runDir = o.runDir;
    this.runId = o.runId;
    this.experimentId = o.experimentId;
    this.uri = o.store.uri;
    this.journal = new Journal(path.join(o.runDir, JOURNAL_FILE));
    this.flushEvery = Math.max(1, o.flushEvery ?? 50);
    this.flushMs = Math.max(0, (o.flushSeconds ?? 10) * 1000);
    this.emit = o.emit;
    this.lastLoggedStep = o.lastLoggedStep;
    this.skipUpTo = o.lastLoggedStep;
    // continue the sequence of a journal left by an earlier process; its pending calls are replayed first
    this.seq = o.journalLastSeq ?? 0;
    this.offline = o.journalPending ?? false;
    this.writeState();
  }

  /** Queue tracking calls that are not step metrics (the factory uses it for params, tags, artifacts). */
  enqueue(op: TrackOp): void {
    this.extraOps.push(op);
  }

  onEvent(e: RunEvent): void {
    if (this.closed) return;
    switch (e.type) {
      case 'run-start':
        this.tags.push(
          { key: 'spark.run_dir', value: e.runDir },
          { key: 'spark.encoder', value: e.encoder },
          { key: 'spark.backend', value: e.backend },
          { key: 'spark.total_steps', value: String(e.totalSteps) },
        );
        if (e.sweep) {
          this.tags.push({ key: 'spark.sweep.dir', value: e.sweep.sweepDir }, { key: 'spark.sweep.trial', value: String(e.sweep.trial) });
        }
        if (e.resumed) this.tags.push({ key: 'spark.resumed_at_step', value: String(e.startStep) });
        this.scheduleFlush();
        return;
      case 'step': {
        if (e.step <= this.skipUpTo) return;
        for (const [key, get] of STEP_METRICS) {
          const v = get(e);
          if (typeof v === 'number') this.metrics.push({ key, value: v, timestamp: e.time, step: e.step });
        }
        this.bufferedSteps++;
        this.bufferedMaxStep = Math.max(this.bufferedMaxStep, e.step);
        if (this.bufferedSteps >= this.flushEvery || Date.now() - this.lastFlush >= this.flushMs) this.scheduleFlush();
        return;
      }
      case 'epoch':
        if (e.step <= this.skipUpTo) return;
        this.metrics.push(
          { key: 'epoch_loss', value: e.meanLoss, timestamp: e.time, step: e.step },
          { key: 'epoch_min_loss', value: e.minLoss, timestamp: e.time, step: e.step },
          { key: 'epoch_seconds', value: e.seconds, timestamp: e.time, step: e.step },
          { key: 'epoch', value: e.epoch, timestamp: e.time, step: e.step },
        );
        this.bufferedMaxStep = Math.max(this.bufferedMaxStep, e.step);
        this.scheduleFlush();
        return;
      case 'metrics':
        // evaluation results (fine-tuning val_top1/val_top5, probe_top1, ...): logged at once
        if (e.step <= this.skipUpTo) return;
        for (const [key, value] of Object.entries(e.metrics)) {
          if (typeof value === 'number') this.metrics.push({ key, value, timestamp: e.time, step: e.step });
        }
        this.bufferedMaxStep = Math.max(this.bufferedMaxStep, e.step);
        this.scheduleFlush();
        return;
      case 'checkpoint':
        this.tags.push({ key: 'spark.checkpoint', value: e.path }, { key: 'spark.checkpoint_step', value: String(e.step) });
        this.scheduleFlush();
        return;
      case 'reconstruction':
        if (e.step > this.skipUpTo) this.metrics.push({ key: 'recon_loss', value: e.loss, timestamp: e.time, step: e.step });
        this.flushBuffered();
        this.extraOps.push({ type: 'artifact', runId: this.runId, localPath: e.path, artifactPath: 'reconstructions' });
        this.scheduleFlush();
        return;
      case 'run-end': {
        const status: MlflowRunStatus = e.status;
        if (e.error) this.tags.push({ key: 'spark.error', value: e.error.slice(0, 4000) });
        if (e.resumeCommand) this.tags.push({ key: 'spark.resume_command', value: e.resumeCommand });
        this.flushBuffered();
        this.extraOps.push({ type: 'terminate', runId: this.runId, status, endTime: e.time });
        this.scheduleFlush();
        return;
      }
      default:
        return;
    }
  }

  /** Move buffered metrics and tags into request-sized ops (in event order). */
  private flushBuffered(): void {
    if (this.metrics.length || this.tags.length) {
      const maxStep = this.bufferedMaxStep;
      for (const chunk of chunkBatch({ metrics: this.metrics, tags: this.tags })) {
        this.queue.push({ seq: ++this.seq, op: { type: 'batch', runId: this.runId, batch: chunk }, maxStep });
      }
      this.metrics = [];
      this.tags = [];
    }
    for (const op of this.extraOps) this.queue.push({ seq: ++this.seq, op, maxStep: 0 });
    this.extraOps = [];
    this.bufferedSteps = 0;
    this.lastFlush = Date.now();
  }

  private scheduleFlush(): void {
    this.chain = this.chain.then(() => this.flush()).catch((err) => this.report('flush', err));
  }

  private report(what: string, err: unknown): void {
    const msg = `MLflow tracking ${what} failed: ${err instanceof Error ? err.message : String(err)}`;
    if (this.reportedErrors.has(msg)) return;
    this.reportedErrors.add(msg);
    this.emit?.({ type: 'warning', time: Date.now(), code: 'tracking-error', message: msg });
  }

  private setOffline(offline: boolean, why?: string): void {
    if (offline === this.offline) return;
    this.offline = offline;
    this.emit?.({
      type: 'warning',
      time: Date.now(),
      code: offline ? 'tracking-offline' : 'tracking-online',
      message: offline
        ? `MLflow server unreachable (${why ?? 'network error'}); buffering to ${this.journal.file} and retrying on each flush`
        : `MLflow server reachable again; offline journal replayed`,
    });
    this.writeState();
  }

  /** One flush: buffered events → ops → store (or journal). Never throws for unreachable servers. */
  private async flush(): Promise<void> {
    this.flushBuffered();
    if (this.offline) {
      // journal first (order), then try to replay everything
      for (const q of this.queue) {
        this.journal.append({ seq: q.seq, op: q.op, maybeSent: false });
        this.lastLoggedStep = Math.max(this.lastLoggedStep, q.maxStep);
      }
      this.queue = [];
      const r = await replayJournal(this.journal.file, this.store);
      for (const rej of r.rejected) this.report(`call #${rej.seq}`, new Error(rej.error));
      if (!r.unreachable) this.setOffline(false);
      this.writeState();
      return;
    }
    while (this.queue.length) {
      const q = this.queue[0]!;
      try {
        await executeOp(this.store, q.op, false);
      } catch (err) {
        if (isUnreachable(err)) {
          const maybeSent = err instanceof UnreachableError && err.maybeSent;
          for (let i = 0; i < this.queue.length; i++) {
            const x = this.queue[i]!;
            this.journal.append({ seq: x.seq, op: x.op, maybeSent: i === 0 && maybeSent });
            this.lastLoggedStep = Math.max(this.lastLoggedStep, x.maxStep);
          }
          this.queue = [];
          this.setOffline(true, (err as Error).message);
          this.writeState();
          return;
        }
        this.report(q.op.type === 'batch' ? 'logging' : q.op.type, err);
      }
      this.queue.shift();
      this.lastLoggedStep = Math.max(this.lastLoggedStep, q.maxStep);
    }
    this.writeState();
  }

  private lastStateJson = '';
  private writeState(): void {
    const st: TrackingState = { uri: this.uri, experimentId: this.experimentId, runId: this.runId, lastLoggedStep: this.lastLoggedStep };
    if (this.offline) st.offline = true;
    const json = JSON.stringify(st, null, 2) + '\n';
    if (json === this.lastStateJson) return;
    try {
      atomicWriteFileSync(path.join(this.runDir, STATE_FILE), json);
      this.lastStateJson = json;
    } catch (err) {
      this.report('state write', err);
    }
  }

  /** Wait for everything queued so far to be stored or journaled. */
  async flushNow(): Promise<void> {
    this.scheduleFlush();
    await this.chain;
  }

  async close(): Promise<void> {
    if (this.closed) return this.chain;
    await this.flushNow();
    this.closed = true;
  }

  /** True while calls wait in the offline journal. */
  get isOffline(): boolean {
    return this.offline;
  }
}

export class NoopTracker implements RunTracker {
  readonly runId = '';
  readonly experimentId = '';
  readonly uri = '';
  onEvent(): void {}
  async close(): Promise<void> {}
}
