/**
 * The offline journal: an append-only JSON-lines file (`<runDir>/mlflow-offline.jsonl`) of tracking calls that
 * could not reach the server, replayed in order when it is back (on the tracker's next flush, or `spark sync --run`).
 *
 *   {"seq":7,"op":{...},"maybeSent":false}   a call, at most one request's worth (chunked to the REST limits)
 *   {"ack":7}                                  the call was acknowledged by the server (never replayed again)
 *   {"ack":7,"error":"..."}                    the server rejected it (4xx): dropped, with the reason
 *   {"maybeSent":7}                            an attempt may have reached the server (timeout / 5xx)
 *
 * Idempotency: acknowledged calls are skipped; before replaying a metric batch that may have been received, the
 * metric history is read back and the points already present are dropped, so no metric is lost or duplicated.
 *
 * A run that started while its server was unreachable journals its own creation first: a `create-run` op (the
 * experiment lookup/creation and runs/create in one) under a client-side placeholder run id (`offline-<token>`),
 * and every later op names that placeholder. Replay carries out the create first, hands the real run id to
 * `onRunCreated` (the caller persists the mapping in mlflow.json) before acknowledging it, and substitutes it for
 * the placeholder in the remaining ops. The create is made idempotent by its client token (tag
 * spark.client_run_token): the experiment is searched for that tag before creating, so a create whose answer was
 * lost, or a replay interrupted between the create and its acknowledgement, never makes a second run.
 */
import { promises as fsp, existsSync, appendFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { TrackingError } from '../util/errors.js';
import { encodeMetricValue, decodeMetricValue, isUnreachable, UnreachableError } from './rest.js';
import {
  CLIENT_TOKEN_TAG,
  isPlaceholderRunId,
  metricPointKey,
  type LogBatch,
  type Metric,
  type MlflowRunStatus,
  type TrackingStore,
} from './types.js';

export const JOURNAL_FILE = 'mlflow-offline.jsonl';

export type TrackOp =
  | { type: 'batch'; runId: string; batch: LogBatch }
  | { type: 'terminate'; runId: string; status: MlflowRunStatus; endTime: number }
  | { type: 'artifact'; runId: string; localPath: string; artifactPath: string | null }
  | CreateRunOp;

/**
 * The creation of a run that started offline: get-or-create the experiment, then runs/create (unless a run with
 * the same client token, `tags[CLIENT_TOKEN_TAG]`, is already there). `runId` is the placeholder.
 */
export interface CreateRunOp {
  type: 'create-run';
  runId: string;
  experiment: string;
  runName: string;
  startTime: number;
  tags: Record<string, string>;
  userId?: string;
}

/** A run created (or found by its token) on replay: `placeholder` now stands for `runId`. */
export interface CreatedRun {
  placeholder: string;
  runId: string;
  experimentId: string;
  /** True when the run already existed (an earlier create whose answer was lost), found by its client token. */
  found: boolean;
}

export interface JournalEntry {
  seq: number;
  op: TrackOp;
  maybeSent: boolean;
}

/** JSON form of an op: metric values as protobuf strings for NaN/±Infinity (JSON has no NaN). */
function encodeOp(op: TrackOp): unknown {
  if (op.type !== 'batch' || !op.batch.metrics) return op;
  return { ...op, batch: { ...op.batch, metrics: op.batch.metrics.map((m) => ({ ...m, value: encodeMetricValue(m.value) })) } };
}

function decodeOp(o: TrackOp): TrackOp {
  if (o.type !== 'batch' || !o.batch.metrics) return o;
  return { ...o, batch: { ...o.batch, metrics: o.batch.metrics.map((m) => ({ ...m, value: decodeMetricValue(m.value) })) } };
}

export interface JournalState {
  /** Ops not yet acknowledged, in order. */
  pending: JournalEntry[];
  /** Highest seq seen. */
  lastSeq: number;
  acked: number;
  rejected: Array<{ seq: number; error: string }>;
}

export async function readJournal(file: string): Promise<JournalState> {
  const st: JournalState = { pending: [], lastSeq: 0, acked: 0, rejected: [] };
  if (!existsSync(file)) return st;
  const text = await fsp.readFile(file, 'utf8');
  const ops = new Map<number, JournalEntry>();
  const acked = new Set<number>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    let o: { seq?: number; op?: TrackOp; ack?: number; error?: string; maybeSent?: number | boolean };
    try {
      o = JSON.parse(line) as typeof o;
    } catch {
      if (i === lines.length - 1 || lines.slice(i + 1).every((l) => !l.trim())) continue; // torn last line (crash mid-append)
      throw new TrackingError(`${file}:${i + 1}: corrupt offline journal line`, 'INVALID_STATE');
    }
    if (typeof o.seq === 'number' && o.op) {
      ops.set(o.seq, { seq: o.seq, op: decodeOp(o.op), maybeSent: o.maybeSent === true });
      st.lastSeq = Math.max(st.lastSeq, o.seq);
    } else if (typeof o.ack === 'number') {
      acked.add(o.ack);
      if (o.error) st.rejected.push({ seq: o.ack, error: o.error });
    } else if (typeof o.maybeSent === 'number') {
      const e = ops.get(o.maybeSent);
      if (e) e.maybeSent = true;
    }
  }
  st.acked = acked.size;
  st.pending = [...ops.values()].filter((e) => !acked.has(e.seq)).sort((a, b) => a.seq - b.seq);
  return st;
}

export class Journal {
  constructor(readonly file: string) {}

  append(entry: JournalEntry): void {
    appendFileSync(this.file, JSON.stringify({ seq: entry.seq, op: encodeOp(entry.op), maybeSent: entry.maybeSent }) + '\n');
  }
  ack(seq: number, error?: string): void {
    appendFileSync(this.file, JSON.stringify(error ? { ack: seq, error } : { ack: seq }) + '\n');
  }
  markMaybeSent(seq: number): void {
    appendFileSync(this.file, JSON.stringify({ maybeSent: seq }) + '\n');
  }
  /** fsync the journal: what was appended survives a crash of the machine too. */
  sync(): void {
    if (!existsSync(this.file)) return;
    const fd = openSync(this.file, 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/** The op with its run id replaced when `ids` maps it (placeholder → MLflow run id). */
export function substituteRunId<T extends TrackOp>(op: T, ids: ReadonlyMap<string, string>): T {
  const real = ids.get(op.runId);
  return real === undefined ? op : { ...op, runId: real };
}

/**
 * The run of a create-run op, created at most once: the experiment is looked up (or created), then searched for
 * the op's client token; only when no run carries it is runs/create sent (a token-tagged create is never re-sent
 * blindly by the REST client, see RestStore.createRun).
 */
export async function createRunOnce(store: TrackingStore, op: CreateRunOp): Promise<Omit<CreatedRun, 'placeholder'>> {
  const experimentId = await store.getOrCreateExperiment(op.experiment);
  const token = op.tags[CLIENT_TOKEN_TAG];
  if (token && /^[\w.-]+$/.test(token)) {
    const r = await store.searchRuns([experimentId], `tags.${CLIENT_TOKEN_TAG} = '${token}'`, ['attributes.start_time ASC'], 10);
    const hit = r.runs[0];
    if (hit) return { runId: hit.info.runId, experimentId: hit.info.experimentId || experimentId, found: true };
  }
  const info = await store.createRun({ experimentId, runName: op.runName, startTime: op.startTime, tags: op.tags, ...(op.userId !== undefined ? { userId: op.userId } : {}) });
  return { runId: info.runId, experimentId: info.experimentId || experimentId, found: false };
}

/** Execute one op against a store. When `maybeSent`, metric points already stored are dropped first. */
export async function executeOp(store: TrackingStore, op: TrackOp, maybeSent: boolean): Promise<void> {
  switch (op.type) {
    case 'create-run':
      throw new TrackingError(`internal: a create-run op (${op.runId}) is carried out by replayJournal, not executeOp`, 'INVALID_STATE');
    case 'batch': {
      let batch = op.batch;
      if (maybeSent && batch.metrics?.length) {
        const keep: Metric[] = [];
        const stored = new Set<string>();
        for (const key of new Set(batch.metrics.map((m) => m.key))) {
          for (const h of await store.getMetricHistory(op.runId, key)) stored.add(metricPointKey(h));
        }
        for (const m of batch.metrics) if (!stored.has(metricPointKey(m))) keep.push(m);
        batch = { ...batch, metrics: keep };
      }
      if (!batch.metrics?.length && !batch.params?.length && !batch.tags?.length) return;
      const rest = store as TrackingStore & { logBatchRequest?: (runId: string, b: LogBatch) => Promise<void> };
      if (rest.logBatchRequest) await rest.logBatchRequest(op.runId, batch);
      else await store.logBatch(op.runId, batch);
      return;
    }
    case 'terminate':
      await store.setTerminated(op.runId, op.status, op.endTime);
      return;
    case 'artifact':
      if (!existsSync(op.localPath)) return; // the file is gone: nothing to upload
      await store.logArtifact(op.runId, op.localPath, op.artifactPath);
      return;
  }
}

export interface ReplayResult {
  replayed: number;
  rejected: Array<{ seq: number; error: string }>;
  /** Ops still pending (the server went away again). */
  remaining: number;
  /** Set when replay stopped because the server is unreachable. */
  unreachable?: TrackingError;
  /** Runs created (or found by their token) by this replay. */
  created?: CreatedRun[];
  /**
   * Set when replay stopped at a call it must not drop: a run creation the server refused (a deleted experiment,
   * no permission...) or a call of a run that was never created. Nothing after it was sent; fix the cause and
   * replay again.
   */
  blocked?: TrackingError;
}

export interface ReplayOptions {
  /** Placeholder run ids whose runs were created earlier → their MLflow run ids (from mlflow.json). */
  runIds?: ReadonlyMap<string, string>;
  /**
   * Called when a create-run op has created (or found) its run, before the op is acknowledged and before any
   * later op is sent: persist the mapping here (synchronously). If it throws, replay stops (`blocked`) and the
   * next replay finds the run by its token.
   */
  onRunCreated?: (c: CreatedRun) => void;
}

/**
 * Replay the pending ops of a journal file in order. Stops (without error) at the first unreachable failure;
 * a call the server rejects (4xx) is acknowledged with its error and skipped, except a run creation (`blocked`).
 */
export async function replayJournal(file: string, store: TrackingStore, opts: ReplayOptions = {}): Promise<ReplayResult> {
  const st = await readJournal(file);
  const j = new Journal(file);
  const ids = new Map(opts.runIds ?? []);
  const res: ReplayResult = { replayed: 0, rejected: [], remaining: st.pending.length };
  for (const e of st.pending) {
    try {
      if (e.op.type === 'create-run') {
        // already created by an earlier replay that stopped before acknowledging it: nothing to send
        if (!ids.has(e.op.runId)) {
          const c: CreatedRun = { placeholder: e.op.runId, ...(await createRunOnce(store, e.op)) };
          try {
            opts.onRunCreated?.(c);
          } catch (err) {
            res.blocked = new TrackingError(`MLflow run ${c.runId} created for ${c.placeholder} but its id could not be recorded: ${(err as Error).message}`, 'INVALID_STATE');
            return res;
          }
          ids.set(c.placeholder, c.runId);
          (res.created ??= []).push(c);
        }
      } else {
        const op = substituteRunId(e.op, ids);
        if (isPlaceholderRunId(op.runId)) {
          res.blocked = new TrackingError(`call #${e.seq} belongs to run ${op.runId}, whose creation is not in the journal nor recorded in mlflow.json`, 'INVALID_STATE');
          return res;
        }
        await executeOp(store, op, e.maybeSent);
      }
      j.ack(e.seq);
      res.replayed++;
      res.remaining--;
    } catch (err) {
      if (isUnreachable(err)) {
        if (err instanceof UnreachableError && err.maybeSent && !e.maybeSent) j.markMaybeSent(e.seq);
        res.unreachable = err as TrackingError;
        return res;
      }
      const msg = err instanceof Error ? err.message : String(err);
      if (e.op.type === 'create-run') {
        res.blocked = new TrackingError(`the MLflow run of this run folder cannot be created: ${msg}`, err instanceof TrackingError ? err.errorCode : undefined);
        return res;
      }
      j.ack(e.seq, msg);
      res.rejected.push({ seq: e.seq, error: msg });
      res.remaining--;
    }
  }
  return res;
}
