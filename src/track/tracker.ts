/**
 * RunTracker: a RunSubscriber bound to one MLflow run. onEvent() only buffers (it never blocks or throws into the
 * training loop); one flush at a time runs in the background (a request for another while one is in flight is
 * folded into it), every `flushEvery` steps or `flushSeconds` seconds, and on close(). When the server is
 * unreachable the calls go to the offline journal in the run folder and are replayed, in order and exactly once,
 * when it answers again (on a server: the circuit breaker's probe, see rest.ts) or by `spark sync --run`.
 *
 * Durability: before a checkpoint is written (`beforeCheckpoint`, awaited by the training loop) and on the
 * `checkpoint` event, every call not yet acknowledged by the store is appended to the journal (marked "maybe
 * sent", so a replay reads the metric history back first) and fsynced, with `lastLoggedStep` in mlflow.json: a
 * run killed after a checkpoint and resumed loses no metric and logs none twice.
 *
 * close() waits at most `closeTimeout` seconds (tracking.close_timeout) for a server; what is still pending then
 * stays in the journal, and `pendingReminder` is the one line that says how to send it (`npx spark sync --run`).
 *
 * A run whose server was unreachable when it started runs offline from the start: its creation is the journal's
 * first op, under a client-side placeholder run id that every later op names (see journal.ts). Until a replay has
 * created it, `runId` is '' (no MLflow run id is known yet); once created, the real id is written to mlflow.json
 * (with the placeholder, for the ops still journaled) and to the run folder's run.json, and used from then on.
 */
import { commandHint } from '../util/hint.js';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { atomicWriteFileSync } from '../util/atomic.js';
import type { RunEvent, RunSubscriber } from '../train/events.js';
import { chunkBatch, isUnreachable, RestStore, UnreachableError, type CircuitBreaker } from './rest.js';
import { Journal, JOURNAL_FILE, executeOp, readJournal, replayJournal, substituteRunId, type CreatedRun, type CreateRunOp, type TrackOp } from './journal.js';
import type { KeyValue, Metric, MlflowRunStatus, TrackingStore } from './types.js';

export const STATE_FILE = 'mlflow.json';
/** The run folder's run-info (written by train/checkpoint.ts RunFolder); the tracker only patches its MLflow ids. */
export const RUN_INFO_FILE = 'run.json';

/** `<runDir>/mlflow.json`: what a resumed run needs to continue the same MLflow run. */
export interface TrackingState {
  uri: string;
  /** '' while the run's creation waits in the offline journal. */
  experimentId: string;
  /** The MLflow run id; the placeholder (= placeholderRunId) while the run's creation waits in the journal. */
  runId: string;
  /** Highest step whose metrics were acknowledged by the store or journaled for replay. */
  lastLoggedStep: number;
  /** True while calls wait in the offline journal. */
  offline?: boolean;
  /** Set when the run started offline: the placeholder id its journaled ops name (runId replaces it on replay). */
  placeholderRunId?: string;
}

/** True while the run of this state has not been created on its store (its creation waits in the journal). */
export function isPendingCreate(s: TrackingState): boolean {
  return s.placeholderRunId !== undefined && s.runId === s.placeholderRunId;
}

/** placeholder → MLflow run id, for a state whose run started offline and has been created since. */
export function placeholderIds(s: TrackingState | null): Map<string, string> {
  const m = new Map<string, string>();
  if (s?.placeholderRunId && s.runId !== s.placeholderRunId) m.set(s.placeholderRunId, s.runId);
  return m;
}

/**
 * Record the MLflow run id in the run folder's run-info (`<runDir>/run.json`, `mlflowRunId` / `mlflowExperimentId`)
 * when that file exists and does not hold it yet.
 */
export function recordRunInfo(runDir: string, runId: string, experimentId: string): void {
  const f = path.join(runDir, RUN_INFO_FILE);
  if (!existsSync(f)) return;
  const cur = JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>;
  if (cur['mlflowRunId'] === runId && cur['mlflowExperimentId'] === experimentId) return;
  atomicWriteFileSync(f, JSON.stringify({ ...cur, mlflowRunId: runId, mlflowExperimentId: experimentId }, null, 2) + '\n');
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
  /** After close(): one line naming the journaled calls and the `npx spark sync --run <dir>` that sends them; null when none. */
  readonly pendingReminder?: string | null;
}

export interface TrackerOptions {
  store: TrackingStore;
  runDir: string;
  /** '' while the run is not created (runId is the placeholder). */
  experimentId: string;
  /** The MLflow run id, or the placeholder (= placeholderRunId) while the run's creation is journaled. */
  runId: string;
  /** The placeholder of a run that started offline (its journaled ops name it). */
  placeholderRunId?: string;
  /** The create-run op of a run that starts offline now: queued before anything else. */
  createOp?: CreateRunOp;
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
  /** Seconds close() waits for a server (default 5); then what is pending stays journaled. */
  closeTimeout?: number;
  /** The MLflow run's start time (ms), when known: a resumed run ends at start + its duration without stopped time. */
  startTime?: number;
}

/** The one-line reminder of calls left in a run's journal. */
export function syncReminder(runDir: string, pending: number): string {
  return `MLflow: ${pending} tracking call(s) could not be sent and wait in ${path.join(runDir, JOURNAL_FILE)}; send them with: ${commandHint(['sync', '--run', { path: runDir }])}`;
}

/** Resolves true when `p` settles within `ms`, false otherwise (p keeps running). */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<boolean>((r) => {
    timer = setTimeout(() => r(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([p.then(() => true, () => true), t]);
  } finally {
    clearTimeout(timer);
  }
}

interface QueuedOp {
  seq: number;
  op: TrackOp;
  maxStep: number;
  /** Appended to the journal (at a checkpoint): acknowledged there once the store took it. */
  journaled: boolean;
}

const STEP_METRICS: Array<[string, (e: Extract<RunEvent, { type: 'step' }>) => number]> = [
  ['loss', (e) => e.loss],
  ['lr', (e) => e.lr],
  ['wd', (e) => e.wd],
  ['grad_norm', (e) => e.gradNorm],
  ['img_per_sec', (e) => e.imgPerSec],
];

export class MlflowRunTracker implements RunTracker {
  readonly uri: string;
  private readonly startTime: number | undefined;
  /** The placeholder of a run that started offline (undefined otherwise). */
  readonly placeholderRunId: string | undefined;
  /** The MLflow run id, or the placeholder while the run is not created. */
  private currentRunId: string;
  private currentExperimentId: string;
  /** placeholder → MLflow run id once created. */
  private readonly runIds = new Map<string, string>();
  private readonly store: TrackingStore;
  private readonly runDir: string;
  private readonly journal: Journal;
  private readonly flushEvery: number;
  private readonly flushMs: number;
  private readonly emit?: (e: RunEvent) => void;

  private metrics: Metric[] = [];
  private tags: KeyValue[] = [];
  private queue: QueuedOp[] = [];
  private extraOps: TrackOp[] = [];
  private bufferedSteps = 0;
  private bufferedMaxStep = 0;
  private lastFlush = Date.now();
  private seq = 0;
  private offline = false;
  private lastLoggedStep: number;
  private skipUpTo: number;
  /** The flush in flight (one at a time); `flushWanted` asks it to go round once more. */
  private pump: Promise<void> | null = null;
  private flushWanted = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly closeTimeoutMs: number;
  private readonly breaker: CircuitBreaker | null;
  private unsubscribeBreaker: (() => void) | null = null;
  private reminder: string | null = null;
  private reportedErrors = new Set<string>();

  constructor(o: TrackerOptions) {
    this.store = o.store;
    this.runDir = o.runDir;
    this.currentRunId = o.runId;
    this.currentExperimentId = o.experimentId;
    this.placeholderRunId = o.placeholderRunId;
    this.startTime = o.startTime;
    if (o.placeholderRunId && o.runId !== o.placeholderRunId) this.runIds.set(o.placeholderRunId, o.runId);
    this.uri = o.store.uri;
    this.journal = new Journal(path.join(o.runDir, JOURNAL_FILE));
    this.flushEvery = Math.max(1, o.flushEvery ?? 50);
    this.flushMs = Math.max(0, (o.flushSeconds ?? 10) * 1000);
    this.emit = o.emit;
    this.closeTimeoutMs = Math.max(0, (o.closeTimeout ?? 5) * 1000);
    this.breaker = o.store instanceof RestStore ? o.store.breaker : null;
    // the server answers again (a probe of the circuit breaker): replay the journal now
    this.unsubscribeBreaker =
      this.breaker?.onReachable(() => {
        if (this.offline && !this.closed) this.scheduleFlush();
      }) ?? null;
    this.lastLoggedStep = o.lastLoggedStep;
    this.skipUpTo = o.lastLoggedStep;
    // continue the sequence of a journal left by an earlier process; its pending calls are replayed first
    this.seq = o.journalLastSeq ?? 0;
    this.offline = o.journalPending ?? false;
    if (o.createOp) {
      // a run starting offline: its creation is the first call journaled, nothing is sent before it
      this.offline = true;
      this.queue.push({ seq: ++this.seq, op: o.createOp, maxStep: 0, journaled: false });
    }
    this.writeState();
  }

  /** The MLflow run id; '' while the run's creation waits in the offline journal. */
  get runId(): string {
    return this.pendingCreate ? '' : this.currentRunId;
  }

  /** The MLflow experiment id; '' while the run's creation waits in the offline journal. */
  get experimentId(): string {
    return this.pendingCreate ? '' : this.currentExperimentId;
  }

  /** True while the MLflow run of a run that started offline has not been created. */
  get pendingCreate(): boolean {
    return this.placeholderRunId !== undefined && this.currentRunId === this.placeholderRunId;
  }

  /** Replay created (or found) a run: persist the mapping before anything else is sent under the real id. */
  private runCreated(c: CreatedRun): void {
    this.runIds.set(c.placeholder, c.runId);
    if (c.placeholder !== this.currentRunId) return;
    this.currentRunId = c.runId;
    this.currentExperimentId = c.experimentId;
    this.writeState(true);
    try {
      recordRunInfo(this.runDir, c.runId, c.experimentId);
    } catch (err) {
      this.report('run-info write', err);
    }
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
        // a run that ends inside an epoch logs that epoch's numbers too, marked partial (epoch_steps < steps per epoch)
        if (e.steps !== undefined) this.metrics.push({ key: 'epoch_steps', value: e.steps, timestamp: e.time, step: e.step });
        if (e.partial) this.metrics.push({ key: 'epoch_partial', value: 1, timestamp: e.time, step: e.step });
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
        this.makeDurable();
        this.scheduleFlush();
        return;
      case 'reconstruction':
        if (e.step > this.skipUpTo) this.metrics.push({ key: 'recon_loss', value: e.loss, timestamp: e.time, step: e.step });
        this.flushBuffered();
        this.extraOps.push({ type: 'artifact', runId: this.currentRunId, localPath: e.path, artifactPath: 'reconstructions' });
        this.scheduleFlush();
        return;
      case 'run-end': {
        const status: MlflowRunStatus = e.status;
        if (e.error) this.tags.push({ key: 'spark.error', value: e.error.slice(0, 4000) });
        if (e.resumeCommand) this.tags.push({ key: 'spark.resume_command', value: e.resumeCommand });
        this.flushBuffered();
        // MLflow's duration is end − start: a resumed run's end leaves out the time it was stopped
        const endTime = e.durationMs !== undefined && this.startTime !== undefined ? this.startTime + e.durationMs : e.time;
        this.extraOps.push({ type: 'terminate', runId: this.currentRunId, status, endTime });
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
        this.queue.push({ seq: ++this.seq, op: { type: 'batch', runId: this.currentRunId, batch: chunk }, maxStep, journaled: false });
      }
      this.metrics = [];
      this.tags = [];
    }
    for (const op of this.extraOps) this.queue.push({ seq: ++this.seq, op, maxStep: 0, journaled: false });
    this.extraOps = [];
    this.bufferedSteps = 0;
    this.lastFlush = Date.now();
  }

  /** Ask for a flush: starts one unless one is in flight (which then goes round once more). */
  private scheduleFlush(): void {
    this.flushWanted = true;
    if (!this.pump) this.pump = this.runPump();
  }

  private async runPump(): Promise<void> {
    try {
      while (this.flushWanted) {
        this.flushWanted = false;
        try {
          await this.flush();
        } catch (err) {
          this.report('flush', err);
        }
      }
    } finally {
      this.pump = null;
    }
  }

  /** Resolves when no flush is in flight. */
  private async idle(): Promise<void> {
    while (this.pump) await this.pump;
  }

  /**
   * Make everything logged so far durable: buffered events become ops, and every op the store has not
   * acknowledged is appended to the journal (online: maybe sent, so a replay reads the history back first) and
   * fsynced; mlflow.json records the step they reach. Synchronous: on return, a kill loses nothing.
   */
  makeDurable(): void {
    if (this.closed) return;
    this.flushBuffered();
    let appended = false;
    // online, any queued op may be sent (the first may be in flight) before its acknowledgement is written; offline,
    // queued ops are only ever sent from the journal
    const maybeSent = !this.offline;
    for (const q of this.queue) {
      if (q.journaled) continue;
      this.journal.append({ seq: q.seq, op: q.op, maybeSent });
      q.journaled = true;
      appended = true;
      this.lastLoggedStep = Math.max(this.lastLoggedStep, q.maxStep);
    }
    if (!appended) return;
    try {
      this.journal.sync();
    } catch (err) {
      this.report('journal sync', err);
    }
    this.writeState();
  }

  /** Called (awaited) by the training loop before a checkpoint is written: what was logged up to it is durable first. */
  beforeCheckpoint(): void {
    this.makeDurable();
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
        : `MLflow server reachable again; offline journal replayed${this.placeholderRunId ? ` (MLflow run ${this.currentRunId})` : ''}`,
    });
    this.writeState();
  }

  /** Journal the queued ops not journaled yet (the first one `maybeSent` when its attempt may have arrived). */
  private journalQueue(firstMaybeSent: boolean): void {
    this.queue.forEach((q, i) => {
      if (!q.journaled) this.journal.append({ seq: q.seq, op: q.op, maybeSent: i === 0 && firstMaybeSent });
      this.lastLoggedStep = Math.max(this.lastLoggedStep, q.maxStep);
    });
    this.queue = [];
  }

  /** One flush: buffered events → ops → store (or journal). Never throws for unreachable servers. */
  private async flush(): Promise<void> {
    this.flushBuffered();
    if (this.offline) {
      // journal first (order), then try to replay everything (on a server whose circuit is open this fails at
      // once, without a request; the breaker's probe tells when to try again)
      this.journalQueue(false);
      const r = await replayJournal(this.journal.file, this.store, { runIds: this.runIds, onRunCreated: (c) => this.runCreated(c) });
      for (const rej of r.rejected) this.report(`call #${rej.seq}`, new Error(rej.error));
      if (r.blocked) this.report('replay', r.blocked);
      if (!r.unreachable && !r.blocked) this.setOffline(false);
      this.writeState();
      return;
    }
    while (this.queue.length) {
      const q = this.queue[0]!;
      try {
        await executeOp(this.store, substituteRunId(q.op, this.runIds), false);
        if (q.journaled) this.journal.ack(q.seq);
      } catch (err) {
        if (isUnreachable(err)) {
          this.journalQueue(err instanceof UnreachableError && err.maybeSent);
          this.setOffline(true, (err as Error).message);
          this.writeState();
          return;
        }
        this.report(q.op.type === 'batch' ? 'logging' : q.op.type, err);
        if (q.journaled) this.journal.ack(q.seq, err instanceof Error ? err.message : String(err));
      }
      this.queue.shift();
      this.lastLoggedStep = Math.max(this.lastLoggedStep, q.maxStep);
    }
    this.writeState();
  }

  private lastStateJson = '';
  /** Write mlflow.json when it changed. `strict`: a failed write throws (the run-id mapping must be on disk). */
  private writeState(strict = false): void {
    const st: TrackingState = { uri: this.uri, experimentId: this.currentExperimentId, runId: this.currentRunId, lastLoggedStep: this.lastLoggedStep };
    if (this.offline) st.offline = true;
    if (this.placeholderRunId) st.placeholderRunId = this.placeholderRunId;
    const json = JSON.stringify(st, null, 2) + '\n';
    if (json === this.lastStateJson) return;
    try {
      atomicWriteFileSync(path.join(this.runDir, STATE_FILE), json);
      this.lastStateJson = json;
    } catch (err) {
      if (strict) throw err;
      this.report('state write', err);
    }
  }

  /** Wait for everything queued so far to be stored or journaled. */
  async flushNow(): Promise<void> {
    this.scheduleFlush();
    await this.idle();
  }

  /** After close(): the reminder line when calls wait in the journal (see syncReminder), else null. */
  get pendingReminder(): string | null {
    return this.reminder;
  }

  /**
   * Flush and finish, waiting at most closeTimeout for a server: then its circuit is opened (the request in
   * flight is abandoned and journaled as maybe sent) and what is pending stays in the journal (pendingReminder).
   */
  close(): Promise<void> {
    this.closing ??= this.finish();
    return this.closing;
  }

  private async finish(): Promise<void> {
    const deadline = Date.now() + this.closeTimeoutMs;
    const left = () => deadline - Date.now();
    const giveUp = `no answer within tracking.close_timeout (${this.closeTimeoutMs / 1000}s)`;
    this.scheduleFlush();
    const b = this.breaker;
    if (!b) await this.idle();
    else {
      if (!(await within(this.idle(), left()))) b.trip(giveUp);
      await this.idle();
      // still offline: one last probe (bounded) unless the server is known to take requests without answering
      // them (then waiting is pointless); when it answers, the journal is replayed now
      if (this.offline && b.isOpen && !b.noAnswer && left() > 0) {
        const probe = b.probe(true);
        const answered = (await within(probe, left())) && (await probe);
        if (answered) {
          this.scheduleFlush();
          if (!(await within(this.idle(), left()))) b.trip(giveUp);
          await this.idle();
        }
      }
      // a probe still waiting for a silent server would hold the process: abandon it
      if (b.isOpen && b.probeInFlight) b.trip(giveUp);
    }
    this.closed = true;
    this.unsubscribeBreaker?.();
    this.unsubscribeBreaker = null;
    // a run that started offline: its run-info gets the MLflow run id even if a concurrent run.json update
    // (the run's own bookkeeping) overwrote the one written when the run was created
    if (this.placeholderRunId && !this.pendingCreate) {
      try {
        recordRunInfo(this.runDir, this.currentRunId, this.currentExperimentId);
      } catch (err) {
        this.report('run-info write', err);
      }
    }
    try {
      const pending = (await readJournal(this.journal.file)).pending.length;
      if (pending > 0) this.reminder = syncReminder(this.runDir, pending);
    } catch (err) {
      this.report('journal read', err);
    }
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
