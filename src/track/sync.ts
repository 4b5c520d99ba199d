/**
 * `spark sync`: replay a local file store to another store (a server, usually), idempotently, and replay the
 * offline journal of one run folder.
 *
 * Runs are matched by the tag `spark.source_run_id` (the local run id) on the target: a second sync creates
 * nothing; a run that grew since the last sync gets only what is missing (params it lacks, tags that differ,
 * metric points not yet there — compared as (step, timestamp, value) multisets — and its final status).
 * Parent links (mlflow.parentRunId) are rewritten to the target's ids; parents are synced before children.
 *
 * `syncRunJournal` replays one run folder's offline journal; for a run that started offline it creates the run
 * first (at most once, see journal.ts) and records its id in mlflow.json and run.json before the other calls.
 */
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { atomicWriteFile, atomicWriteFileSync } from '../util/atomic.js';
import { TrackingError, UsageError } from '../util/errors.js';
import { FileStore } from './filestore.js';
import { replayJournal, JOURNAL_FILE, type ReplayResult } from './journal.js';
import { isPendingCreate, placeholderIds, readTrackingState, recordRunInfo, STATE_FILE, type TrackingState } from './tracker.js';
import { metricPointKey, searchAllRuns, type KeyValue, type Metric, type Run, type TrackingStore } from './types.js';

export const SOURCE_RUN_TAG = 'spark.source_run_id';
export const SOURCE_URI_TAG = 'spark.source_uri';
const COMPLETE_TAG = 'spark.sync.complete';
const PARENT_TAG = 'mlflow.parentRunId';

export interface SyncRunReport {
  sourceRunId: string;
  targetRunId: string;
  runName: string;
  action: 'created' | 'updated' | 'unchanged';
  params: number;
  metrics: number;
  tags: number;
  artifacts: number;
  conflicts: string[];
}

export interface SyncReport {
  experiments: Array<{ name: string; sourceId: string; targetId: string }>;
  runs: SyncRunReport[];
}

/** Depth in the parent tree of the experiment (parents first). */
function parentFirst(runs: Run[]): Run[] {
  const byId = new Map(runs.map((r) => [r.info.runId, r]));
  const depth = (r: Run, seen = new Set<string>()): number => {
    const p = r.data.tags[PARENT_TAG];
    if (!p || !byId.has(p) || seen.has(p)) return 0;
    seen.add(p);
    return 1 + depth(byId.get(p)!, seen);
  };
  return runs
    .map((r, i) => ({ r, d: depth(r), i }))
    .sort((a, b) => a.d - b.d || a.r.info.startTime - b.r.info.startTime || a.i - b.i)
    .map((x) => x.r);
}

async function artifactEntries(source: FileStore, runId: string): Promise<string[]> {
  let dir: string;
  try {
    dir = await source.artifactDir(runId);
  } catch {
    return [];
  }
  if (!existsSync(dir)) return [];
  return (await fsp.readdir(dir)).sort().map((n) => path.join(dir, n));
}

/** Sync every experiment of a local file store (or the one named) to `target`. */
export async function syncStore(
  source: FileStore,
  target: TrackingStore,
  opts: { experiment?: string; onRun?: (r: SyncRunReport) => void } = {},
): Promise<SyncReport> {
  if (!existsSync(source.root)) throw new UsageError(`no MLflow file store at ${source.root}`);
  let exps = await source.listExperiments();
  if (opts.experiment) {
    exps = exps.filter((e) => e.name === opts.experiment);
    if (!exps.length) throw new UsageError(`no experiment named '${opts.experiment}' in ${source.root}`);
  }
  const report: SyncReport = { experiments: [], runs: [] };
  for (const exp of exps) {
    const srcRuns = await source.experimentRuns(exp.experimentId, 'ACTIVE_ONLY');
    if (!srcRuns.length && exp.experimentId === '0') continue; // the empty Default experiment
    const targetExp = await target.getOrCreateExperiment(exp.name);
    report.experiments.push({ name: exp.name, sourceId: exp.experimentId, targetId: targetExp });
    const existing = new Map<string, Run>();
    for (const r of await searchAllRuns(target, [targetExp], `tags.\`${SOURCE_RUN_TAG}\` LIKE '%'`)) {
      const src = r.data.tags[SOURCE_RUN_TAG];
      if (src && !existing.has(src)) existing.set(src, r);
    }
    const idMap = new Map<string, string>();
    for (const [src, r] of existing) idMap.set(src, r.info.runId);
    for (const run of parentFirst(srcRuns)) {
      const rep = await syncRun(source, target, run, targetExp, existing.get(run.info.runId) ?? null, idMap);
      idMap.set(run.info.runId, rep.targetRunId);
      report.runs.push(rep);
      opts.onRun?.(rep);
    }
  }
  return report;
}

async function syncRun(source: FileStore, target: TrackingStore, run: Run, targetExp: string, existing: Run | null, idMap: Map<string, string>): Promise<SyncRunReport> {
  const srcId = run.info.runId;
  const tags: Record<string, string> = { ...run.data.tags };
  const parent = tags[PARENT_TAG];
  if (parent && idMap.has(parent)) tags[PARENT_TAG] = idMap.get(parent)!;
  tags[SOURCE_RUN_TAG] = srcId;
  const rep: SyncRunReport = { sourceRunId: srcId, targetRunId: '', runName: run.info.runName, action: existing ? 'unchanged' : 'created', params: 0, metrics: 0, tags: 0, artifacts: 0, conflicts: [] };

  let tgt: Run;
  if (!existing) {
    const createTags: Record<string, string> = { [SOURCE_RUN_TAG]: srcId, [SOURCE_URI_TAG]: source.root };
    for (const k of ['mlflow.runName', 'mlflow.user', 'mlflow.source.name', 'mlflow.source.type', PARENT_TAG]) if (tags[k] !== undefined) createTags[k] = tags[k]!;
    const info = await target.createRun({ experimentId: targetExp, runName: run.info.runName || null, startTime: run.info.startTime, tags: createTags, userId: run.info.userId });
    tgt = { info, data: { metrics: {}, params: {}, tags: { ...createTags } } };
  } else {
    tgt = existing;
  }
  rep.targetRunId = tgt.info.runId;

  // params: only the missing ones (immutable); differing values are reported
  const params: KeyValue[] = [];
  for (const [k, v] of Object.entries(run.data.params)) {
    const have = tgt.data.params[k];
    if (have === undefined) params.push({ key: k, value: v });
    else if (have !== v) rep.conflicts.push(`param ${k}: '${v}' here, '${have}' on the target`);
  }
  // tags: missing or different
  const tagList: KeyValue[] = [];
  for (const [k, v] of Object.entries(tags)) {
    if (k === 'mlflow.runName' && tgt.data.tags[k] === v) continue;
    if (tgt.data.tags[k] !== v) tagList.push({ key: k, value: v });
  }
  // metrics: the points the target does not have yet
  const metrics: Metric[] = [];
  for (const key of Object.keys(run.data.metrics)) {
    const src = await source.getMetricHistory(srcId, key);
    const have = new Map<string, number>();
    if (key in tgt.data.metrics) for (const m of await target.getMetricHistory(tgt.info.runId, key)) have.set(metricPointKey(m), (have.get(metricPointKey(m)) ?? 0) + 1);
    for (const m of src) {
      const s = metricPointKey(m);
      const c = have.get(s) ?? 0;
      if (c > 0) have.set(s, c - 1);
      else metrics.push(m);
    }
  }
  if (params.length || metrics.length || tagList.length) {
    await target.logBatch(tgt.info.runId, { params, metrics, tags: tagList.filter((t) => t.key !== 'mlflow.runName') });
    const rename = tagList.find((t) => t.key === 'mlflow.runName');
    if (rename) await target.setTags(tgt.info.runId, [rename]);
  }
  rep.params = params.length;
  rep.metrics = metrics.length;
  rep.tags = tagList.length;

  // artifacts: uploaded until the run is marked complete on the target (uploads are idempotent overwrites)
  if (tgt.data.tags[COMPLETE_TAG] !== 'true') {
    for (const entry of await artifactEntries(source, srcId)) {
      await target.logArtifact(tgt.info.runId, entry, null);
      rep.artifacts++;
    }
  }
  // status last
  const s = run.info;
  if (existing ? s.status !== existing.info.status || s.endTime !== existing.info.endTime : s.status !== 'RUNNING') {
    await target.setTerminated(tgt.info.runId, s.status, s.endTime ?? Date.now());
    if (existing) rep.tags++;
  }
  if (tgt.data.tags[COMPLETE_TAG] !== 'true') await target.setTags(tgt.info.runId, { [COMPLETE_TAG]: 'true' });
  if (existing && (rep.params || rep.metrics || rep.tags || rep.artifacts)) rep.action = 'updated';
  return rep;
}

/**
 * Replay the offline journal of a run folder to its tracking store (or `uri`). A run that started offline is
 * created first; its id goes to mlflow.json (runId, with placeholderRunId kept for the journaled calls) before
 * anything else is sent, and to run.json (mlflowRunId).
 */
export async function syncRunJournal(runDir: string, store: TrackingStore): Promise<ReplayResult & { state: TrackingState }> {
  const state = readTrackingState(runDir);
  if (!state) throw new UsageError(`${path.join(runDir, STATE_FILE)} not found: is ${runDir} a tracked run folder?`);
  const journal = path.join(runDir, JOURNAL_FILE);
  if (!existsSync(journal)) return { replayed: 0, rejected: [], remaining: 0, state };
  const stateFile = path.join(runDir, STATE_FILE);
  let cur: TrackingState = { ...state };
  const res = await replayJournal(journal, store, {
    runIds: placeholderIds(state),
    onRunCreated: (c) => {
      if (!isPendingCreate(cur) || c.placeholder !== cur.runId) return;
      // the run now lives on the store it was created on
      cur = { ...cur, uri: store.uri, experimentId: c.experimentId, runId: c.runId, placeholderRunId: c.placeholder };
      atomicWriteFileSync(stateFile, JSON.stringify(cur, null, 2) + '\n');
      recordRunInfo(runDir, c.runId, c.experimentId);
    },
  });
  if (res.unreachable) throw new TrackingError(`${res.replayed} call(s) replayed, ${res.remaining} still pending: ${res.unreachable.message}`, res.unreachable.errorCode);
  if (res.blocked) throw new TrackingError(`${res.replayed} call(s) replayed, ${res.remaining} still pending: ${res.blocked.message}`, res.blocked.errorCode);
  const next: TrackingState = { ...cur };
  delete next.offline;
  await atomicWriteFile(stateFile, JSON.stringify(next, null, 2) + '\n');
  if (!isPendingCreate(next) && next.placeholderRunId) recordRunInfo(runDir, next.runId, next.experimentId);
  return { ...res, state: next };
}
