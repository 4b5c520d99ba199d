/**
 * Liveness of a run: a run that the system kills (the OOM killer, `kill -9`, a lost node) cannot say so itself, so
 * while it runs its folder holds `alive.json` (pid, host, process start, heartbeat every 30 s and at steps) and
 * run.json says `status: RUNNING`. Whoever opens that folder later (resume, `spark sync --run`, `spark compare`,
 * sweep status) calls `reconcileRunFolder`: a RUNNING run whose process is gone is marked FAILED, with the reason,
 * in run.json (`status`, `statusReason`, `endedAt`) and in its MLflow run (status FAILED, tag `spark.status_reason`;
 * sent through the run's offline journal, so an unreachable server gets it later).
 *
 * "Gone": on the same host, no process with that pid, or one started at another time (pid reuse; Linux
 * /proc/<pid>/stat); on another host, no heartbeat for 15 minutes.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { atomicWriteFileSync } from '../util/atomic.js';
import type { RunEvent, RunSubscriber } from '../train/events.js';
import { Journal, JOURNAL_FILE, readJournal } from './journal.js';
import { readTrackingState, RUN_INFO_FILE } from './tracker.js';
import { syncRunJournal } from './sync.js';
import type { Run, TrackingStore } from './types.js';

export const ALIVE_FILE = 'alive.json';
/** A run on another host counts as gone after this long without a heartbeat. */
export const STALE_HEARTBEAT_MS = 15 * 60_000;
const HEARTBEAT_MS = 30_000;

export interface AliveRecord {
  pid: number;
  host: string;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), when known. */
  procStart: string | null;
  startedAt: string;
  heartbeat: string;
}

function procStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may hold spaces: count fields after its closing parenthesis
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function readJson(file: string): Record<string, unknown> | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
}

function patchRunInfo(runDir: string, patch: Record<string, unknown>, drop: string[] = []): void {
  const f = path.join(runDir, RUN_INFO_FILE);
  const cur = readJson(f);
  if (!cur) return;
  const next = { ...cur, ...patch };
  for (const k of drop) delete next[k];
  atomicWriteFileSync(f, JSON.stringify(next, null, 2) + '\n');
}

/**
 * The subscriber that keeps a run folder's liveness: alive.json and run.json `status: RUNNING` from run-start,
 * the heartbeat, and at run-end run.json's final status (`FINISHED` / `FAILED` / `KILLED`, `endedAt`, the error as
 * `statusReason`) with alive.json removed.
 */
export function createLivenessSubscriber(runDir: string, o: { heartbeatMs?: number } = {}): RunSubscriber {
  const every = o.heartbeatMs ?? HEARTBEAT_MS;
  const file = path.join(runDir, ALIVE_FILE);
  let record: AliveRecord | null = null;
  let timer: NodeJS.Timeout | null = null;
  let last = 0;
  const beat = () => {
    if (!record) return;
    last = Date.now();
    record.heartbeat = new Date(last).toISOString();
    try {
      atomicWriteFileSync(file, JSON.stringify(record, null, 2) + '\n');
    } catch {
      /* a full disk must not stop training; the run-end status is what matters */
    }
  };
  const stop = () => {
    if (timer) clearInterval(timer);
    timer = null;
  };
  return {
    onEvent(e: RunEvent): void {
      if (e.type === 'run-start') {
        const now = new Date().toISOString();
        record = { pid: process.pid, host: os.hostname(), procStart: procStart(process.pid), startedAt: now, heartbeat: now };
        beat();
        patchRunInfo(runDir, { status: 'RUNNING', startedAt: now }, ['statusReason', 'endedAt']);
        timer = setInterval(beat, every);
        timer.unref();
      } else if (e.type === 'step' && record && Date.now() - last >= every) {
        beat(); // timers do not fire during a long synchronous step
      } else if (e.type === 'run-end' && record) {
        stop();
        patchRunInfo(runDir, { status: e.status, endedAt: new Date(e.time).toISOString(), ...(e.error ? { statusReason: e.error } : {}) }, e.error ? [] : ['statusReason']);
        rmSync(file, { force: true });
        record = null;
      }
    },
    async close(): Promise<void> {
      stop();
    },
  };
}

/** Why the process of an alive record is gone, or null while it may still run. */
export function goneReason(a: AliveRecord, now = Date.now()): string | null {
  const beatMs = Date.parse(a.heartbeat);
  const since = Number.isFinite(beatMs) ? `last heartbeat ${a.heartbeat}` : 'no heartbeat';
  if (a.host === os.hostname()) {
    let exists = true;
    try {
      process.kill(a.pid, 0);
    } catch (e) {
      exists = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (exists && a.procStart !== null) {
      const started = procStart(a.pid);
      if (started !== null && started !== a.procStart) exists = false; // the pid now belongs to another process
    }
    if (exists) return null;
    return `its process (pid ${a.pid} on ${a.host}) ended without finishing the run: killed by the system (out of memory, kill -9, a shutdown?); ${since}`;
  }
  if (Number.isFinite(beatMs) && now - beatMs < STALE_HEARTBEAT_MS) return null;
  return `no heartbeat from its process (pid ${a.pid} on ${a.host}) for more than ${STALE_HEARTBEAT_MS / 60_000} minutes: the process or its node is gone (killed, out of memory, a lost node?); ${since}`;
}

export interface Reconciled {
  status: 'FAILED';
  reason: string;
  /** True when the MLflow run's status and reason were queued in its journal (sent by the next replay or sync). */
  journaled: boolean;
}

/**
 * The liveness record of `runDir`'s run while it is RUNNING in another live process on this host (resume refuses
 * then); null otherwise. A run on another host is never reported: its heartbeat cannot tell a long step from a
 * lost node soon enough, and a resubmitted cluster job must be able to resume it.
 */
export function runIsAlive(runDir: string): AliveRecord | null {
  const info = readJson(path.join(runDir, RUN_INFO_FILE));
  const alive = readJson(path.join(runDir, ALIVE_FILE)) as AliveRecord | null;
  if (info?.['status'] !== 'RUNNING' || !alive || typeof alive.pid !== 'number' || alive.host !== os.hostname()) return null;
  if (alive.pid === process.pid) return null;
  return goneReason(alive) === null ? alive : null;
}

/**
 * A run folder whose run.json says RUNNING while its process is gone: mark it FAILED with the reason in run.json
 * and queue the same for its MLflow run in its journal (`<runDir>/mlflow-offline.jsonl`: tag spark.status_reason,
 * status FAILED at the last heartbeat). The caller replays the journal (the resumed run's tracker, `spark sync
 * --run`, or `replayJournal`). Returns null when there is nothing to reconcile.
 */
export async function reconcileRunFolder(runDir: string, now = Date.now()): Promise<Reconciled | null> {
  const info = readJson(path.join(runDir, RUN_INFO_FILE));
  if (info?.['status'] !== 'RUNNING') return null;
  const aliveFile = path.join(runDir, ALIVE_FILE);
  const alive = readJson(aliveFile) as AliveRecord | null;
  let reason: string | null;
  let endMs = now;
  if (!alive || typeof alive.pid !== 'number') reason = 'its process ended without finishing the run (no liveness record left)';
  else {
    if (alive.pid === process.pid && alive.host === os.hostname()) return null;
    reason = goneReason(alive, now);
    const b = Date.parse(alive.heartbeat);
    if (Number.isFinite(b)) endMs = b;
  }
  if (reason === null) return null;
  const ckpt = readJson(path.join(runDir, 'checkpoint', 'state.json'));
  const full = `${reason}${typeof ckpt?.['step'] === 'number' ? `; last checkpoint at step ${ckpt['step']}` : '; no checkpoint'}`;
  patchRunInfo(runDir, { status: 'FAILED', statusReason: full, endedAt: new Date(endMs).toISOString() });
  rmSync(aliveFile, { force: true });
  let journaled = false;
  const state = readTrackingState(runDir);
  if (state && state.runId) {
    const file = path.join(runDir, JOURNAL_FILE);
    const j = new Journal(file);
    let seq = (await readJournal(file)).lastSeq;
    // the MLflow run id, or the placeholder of a run whose creation still waits in this journal
    const runId = state.runId;
    j.append({ seq: ++seq, op: { type: 'batch', runId, batch: { tags: [{ key: 'spark.status_reason', value: full.slice(0, 4000) }] } }, maybeSent: false });
    j.append({ seq: ++seq, op: { type: 'terminate', runId, status: 'FAILED', endTime: endMs }, maybeSent: false });
    j.sync();
    journaled = true;
  }
  return { status: 'FAILED', reason: full, journaled };
}

/**
 * A run of `store` that says RUNNING: when spark wrote it (tag spark.run_dir) and that run folder is here and its
 * process is gone, the folder is reconciled (reconcileRunFolder) and its journal replayed to `store` when it is
 * the run's own store. Returns the run as it stands then (status FAILED, the reason as a tag), else unchanged.
 */
export async function reconcileStoreRun(store: TrackingStore, run: Run): Promise<Run> {
  const dir = run.data.tags['spark.run_dir'];
  if (run.info.status !== 'RUNNING' || !dir || !existsSync(path.join(dir, RUN_INFO_FILE))) return run;
  const r = await reconcileRunFolder(dir);
  if (!r) return run;
  const state = readTrackingState(dir);
  if (state && state.uri === store.uri && state.runId === run.info.runId) {
    try {
      await syncRunJournal(dir, store);
      return await store.getRun(run.info.runId);
    } catch {
      /* left in the journal: `spark sync --run` sends it */
    }
  }
  return { ...run, info: { ...run.info, status: 'FAILED' }, data: { ...run.data, tags: { ...run.data.tags, 'spark.status_reason': r.reason } } };
}
