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
 */
import { promises as fsp, existsSync, appendFileSync } from 'node:fs';
import { TrackingError } from '../util/errors.js';
import { encodeMetricValue, decodeMetricValue, isUnreachable, UnreachableError } from './rest.js';
import { metricPointKey, type LogBatch, type Metric, type MlflowRunStatus, type TrackingStore } from './types.js';

export const JOURNAL_FILE = 'mlflow-offline.jsonl';

export type TrackOp =
  | { type: 'batch'; runId: string; batch: LogBatch }
  | { type: 'terminate'; runId: string; status: MlflowRunStatus; endTime: number }
  | { type: 'artifact'; runId: string; localPath: string; artifactPath: string | null };

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
}

/** Execute one op against a store. When `maybeSent`, metric points already stored are dropped first. */
export async function executeOp(store: TrackingStore, op: TrackOp, maybeSent: boolean): Promise<void> {
  switch (op.type) {
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
}

/**
 * Replay the pending ops of a journal file in order. Stops (without error) at the first unreachable failure;
 * a call the server rejects (4xx) is acknowledged with its error and skipped.
 */
export async function replayJournal(file: string, store: TrackingStore): Promise<ReplayResult> {
  const st = await readJournal(file);
  const j = new Journal(file);
  const res: ReplayResult = { replayed: 0, rejected: [], remaining: st.pending.length };
  for (const e of st.pending) {
    try {
      await executeOp(store, e.op, e.maybeSent);
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
      j.ack(e.seq, msg);
      res.rejected.push({ seq: e.seq, error: msg });
      res.remaining--;
    }
  }
  return res;
}
