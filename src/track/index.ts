/**
 * Tracking: MLflow runs in a local file store (`./mlruns`, default) or on a tracking server (http(s)://).
 *
 *   openStore(uri)                → TrackingStore (FileStore | RestStore)
 *   createRunTracker(opts)        → RunTracker (a RunSubscriber bound to one MLflow run; no-op when disabled)
 *   createParentRun(opts)         → ParentRun (a sweep's parent run; trials pass its runId as parentRunId)
 *
 * A server that cannot be reached (network error, timeout, 5xx after the client's retries) never stops a run:
 * mid-run, calls go to the offline journal; at start, the run starts offline (its creation is journaled under a
 * placeholder run id, see tracker.ts / journal.ts). A sweep's parent run is the exception: it must exist before
 * its trials (they are tagged with its id), so an unreachable server at sweep start is a clear error.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { atomicWriteFileSync } from '../util/atomic.js';
import { TrackingError } from '../util/errors.js';
import type { ExperimentConfig } from '../spec/types.js';
import type { RunEvent } from '../train/events.js';
import { FileStore } from './filestore.js';
import { RestStore, chunkBatch, isUnreachable, type RestOptions } from './rest.js';
import { JOURNAL_FILE, readJournal, type CreateRunOp, type JournalEntry } from './journal.js';
import { configParams, systemTags } from './params.js';
import {
  isPendingCreate,
  MlflowRunTracker,
  NoopTracker,
  readTrackingState,
  STATE_FILE,
  within,
  type RunTracker,
  type TrackingState,
} from './tracker.js';
import { CLIENT_TOKEN_TAG, PLACEHOLDER_RUN_PREFIX, type Metric, type MlflowRunStatus, type TrackingStore } from './types.js';
import { commandHint } from '../util/hint.js';

export type { RunTracker, TrackingState } from './tracker.js';
export { MlflowRunTracker, NoopTracker, readTrackingState, STATE_FILE, isPendingCreate, placeholderIds, recordRunInfo, RUN_INFO_FILE, syncReminder } from './tracker.js';
export * from './types.js';
export { FileStore, readStore, fileStoreRoot, type StoreSnapshot } from './filestore.js';
export { RestStore, chunkBatch, isUnreachable, UNREACHABLE, UnreachableError, CircuitBreaker, circuitBreaker, type RestOptions } from './rest.js';
export { parseFilter, filterRuns, sortRuns, parseOrderBy } from './filter.js';
export { replayJournal, readJournal, createRunOnce, JOURNAL_FILE, type CreatedRun, type CreateRunOp, type ReplayOptions, type ReplayResult } from './journal.js';
export { configParams, flattenParams, systemTags } from './params.js';
export { validateKey, formatNumber, formatValue } from './keys.js';

/** The tracking URI in force: the config's, else $MLFLOW_TRACKING_URI, else ./mlruns (absolute for file stores). */
export function resolveTrackingUri(uri?: string | null, env: NodeJS.ProcessEnv = process.env): string {
  const u = uri || env['MLFLOW_TRACKING_URI'] || './mlruns';
  if (/^https?:\/\//i.test(u)) return u.replace(/\/+$/, '');
  return new FileStore(u).root;
}

/**
 * Client settings for training runs and sweeps: fail over to the offline journal quickly instead of waiting
 * minutes; the URI's circuit breaker (rest.ts) opens at the first timeout, so a server that accepts connections
 * but never answers costs one timeout, not one per call.
 */
export const TRACKER_REST_OPTIONS: RestOptions = { maxRetries: 2, backoffFactor: 0.25, backoffJitter: 0.1, backoffMax: 2, timeout: 20, breaker: true };

/**
 * `p` (calls to `store`), waited for at most `seconds` when the store has a circuit breaker: then the circuit is
 * opened, which abandons the request in flight, so `p` fails at once as unreachable (what the caller handles).
 */
async function bounded<T>(store: TrackingStore, p: Promise<T>, seconds: number): Promise<T> {
  const b = store instanceof RestStore ? store.breaker : null;
  if (b && !(await within(p, seconds * 1000))) b.trip(`no answer within tracking.close_timeout (${seconds}s)`);
  return p;
}

/** The highest step of the metrics waiting in a journal. */
function journaledMaxStep(pending: JournalEntry[]): number {
  let m = 0;
  for (const e of pending) if (e.op.type === 'batch') for (const x of e.op.batch.metrics ?? []) m = Math.max(m, x.step);
  return m;
}

/** Open a tracking store: http(s):// → REST client; a path or file: URI → file store. */
export function openStore(uri?: string | null, restOptions?: RestOptions): TrackingStore {
  const u = uri || process.env['MLFLOW_TRACKING_URI'] || './mlruns';
  if (/^https?:\/\//i.test(u)) return new RestStore(u, restOptions);
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(u)?.[1]?.toLowerCase();
  if (scheme && scheme !== 'file' && !/^[a-z]$/i.test(scheme)) {
    throw new TrackingError(
      `tracking URI '${u}' is not supported: use a local folder (./mlruns) or an MLflow server (http://host:5000). ` +
        `For a ${scheme} backend, run \`mlflow server --backend-store-uri ${u}\` and point tracking.uri at it.`,
      'UNSUPPORTED_URI',
    );
  }
  return new FileStore(u);
}

export interface CreateRunTrackerOptions {
  config: ExperimentConfig;
  runDir: string;
  specPath: string | null;
  resolvedYaml: string;
  resume: boolean;
  parentRunId?: string;
  extraTags?: Record<string, string>;
  /** Params logged beside the config's (a new run only), e.g. the resolved `train.micro_batch`. */
  extraParams?: Record<string, string>;
  /** Optional: receives tracking warnings (tracking-offline / tracking-online / tracking-error). */
  emit?: (e: RunEvent) => void;
  /** Optional: use this store instead of opening tracking.uri (tests, sweeps). */
  store?: TrackingStore;
  /** Flush every N steps (default 50) or S seconds (default 10). */
  flushEvery?: number;
  flushSeconds?: number;
}

/**
 * The one-line error of a sweep whose parent run cannot be created because the server is unreachable (a parent
 * run is not started offline: its trials are tagged with its id when they are created).
 */
export function parentRunUnreachable(uri: string, err: unknown): TrackingError {
  const why = (err as Error).message.replace(/\s+/g, ' ');
  return new TrackingError(
    `cannot create the sweep's parent MLflow run: the tracking server ${uri} is unreachable (${why}). ` +
      `Start the server and run the sweep again, or run it on a file store (--set tracking.uri=./mlruns) and copy that to the server afterwards with \`${commandHint(['sync', './mlruns', '--to', uri])}\`.`,
    (err as TrackingError).errorCode,
  );
}

function offlineWarning(uri: string, runDir: string, why: string): RunEvent {
  return {
    type: 'warning',
    time: Date.now(),
    code: 'tracking-offline',
    message:
      `MLflow server ${uri} unreachable when the run started (${why}); the run starts offline: its MLflow run is created and every call replayed ` +
      `from ${path.join(runDir, JOURNAL_FILE)} when the server answers (retried on each flush), or by \`${commandHint(['sync', '--run', { path: runDir }])}\``,
  };
}

/**
 * The RunTracker of one run (new or resumed). Tracking disabled → a no-op tracker. An unreachable server does not
 * stop the run: a new run starts offline (its creation journaled under a placeholder id); a resumed run whose
 * creation is still journaled continues under the same placeholder.
 */
export async function createRunTracker(opts: CreateRunTrackerOptions): Promise<RunTracker> {
  const t = opts.config.tracking;
  if (!t || !t.enabled) return new NoopTracker();
  const store = opts.store ?? openStore(resolveTrackingUri(t.uri), TRACKER_REST_OPTIONS);
  mkdirSync(opts.runDir, { recursive: true });
  const journal = await readJournal(path.join(opts.runDir, JOURNAL_FILE));
  const closeTimeout = t.close_timeout ?? 5;
  const base = {
    store,
    runDir: opts.runDir,
    flushEvery: opts.flushEvery,
    flushSeconds: opts.flushSeconds,
    emit: opts.emit,
    journalLastSeq: journal.lastSeq,
    journalPending: journal.pending.length > 0,
    closeTimeout,
  };
  // a resumed run does not log again the steps its journal will replay
  const journaledStep = journaledMaxStep(journal.pending);

  let prev = opts.resume ? readTrackingState(opts.runDir) : null;
  if (prev && prev.uri === store.uri && isPendingCreate(prev)) {
    // started offline and not created yet: continue under the same placeholder while its create is journaled
    const placeholder = prev.runId;
    if (journal.pending.some((e) => e.op.type === 'create-run' && e.op.runId === placeholder)) {
      const tracker = new MlflowRunTracker({ ...base, experimentId: '', runId: placeholder, placeholderRunId: placeholder, lastLoggedStep: Math.max(prev.lastLoggedStep, journaledStep), journalPending: true });
      opts.emit?.(offlineWarning(store.uri, opts.runDir, 'its MLflow run has not been created yet'));
      tracker.enqueue({ type: 'terminate', runId: placeholder, status: 'RUNNING', endTime: Date.now() });
      void tracker.flushNow();
      return tracker;
    }
    opts.emit?.({ type: 'warning', time: Date.now(), code: 'tracking-new-run', message: `the MLflow run of ${opts.runDir} was never created and its creation is no longer in ${JOURNAL_FILE}: the resumed run is logged as a new MLflow run` });
    prev = null;
  }
  // the highest step the store already has (a flush acknowledged after the last mlflow.json write): not logged again
  let storedStep = 0;
  let prevStartTime: number | undefined;
  if (prev && prev.uri === store.uri) {
    // the run must still be there (deleted runs cannot be written to); an unreachable server is checked later
    const runId = prev.runId;
    try {
      const r = await bounded(store, store.getRun(runId), closeTimeout);
      if (r.info.lifecycleStage === 'deleted') throw new TrackingError('deleted', 'RESOURCE_DOES_NOT_EXIST');
      const h = await bounded(store, store.getMetricHistory(runId, 'loss'), closeTimeout);
      for (const m of h) storedStep = Math.max(storedStep, m.step);
      if (r.info.startTime > 0) prevStartTime = r.info.startTime;
    } catch (err) {
      if (err instanceof TrackingError && err.errorCode === 'RESOURCE_DOES_NOT_EXIST') {
        opts.emit?.({ type: 'warning', time: Date.now(), code: 'tracking-new-run', message: `MLflow run ${prev.runId} no longer exists at ${store.uri}: the resumed run is logged as a new MLflow run` });
        prev = null;
      } else if (!isUnreachable(err)) throw err;
    }
  }
  if (prev && prev.uri === store.uri) {
    const tracker = new MlflowRunTracker({
      ...base,
      experimentId: prev.experimentId,
      runId: prev.runId,
      lastLoggedStep: Math.max(prev.lastLoggedStep, journaledStep, storedStep),
      ...(prev.placeholderRunId ? { placeholderRunId: prev.placeholderRunId } : {}),
      ...(prevStartTime !== undefined ? { startTime: prevStartTime } : {}),
    });
    tracker.enqueue({ type: 'terminate', runId: prev.runId, status: 'RUNNING', endTime: Date.now() });
    void tracker.flushNow();
    return tracker;
  }
  if (prev && prev.uri !== store.uri) {
    opts.emit?.({ type: 'warning', time: Date.now(), code: 'tracking-new-run', message: `tracking URI changed (${prev.uri} → ${store.uri}): the resumed run is logged as a new MLflow run` });
  }

  const runName = t.run_name ?? opts.config.name;
  const tags: Record<string, string> = {
    ...systemTags({ runName, specPath: opts.specPath, parentRunId: opts.parentRunId, note: opts.config.description }),
    ...t.tags,
    ...(opts.extraTags ?? {}),
    'mlflow.runName': runName,
  };
  // on a server, a client token makes the create findable if its answer is lost (a file store needs none)
  const token = randomUUID().replace(/-/g, '');
  if (store.kind === 'rest') tags[CLIENT_TOKEN_TAG] = token;
  const startTime = Date.now();
  let tracker: MlflowRunTracker;
  // the id the run's calls are queued under: the MLflow run id, or the placeholder of a run that starts offline
  let runId: string;
  try {
    // a server that does not answer holds the start for at most tracking.close_timeout: the run then starts offline
    const info = await bounded(
      store,
      (async () => {
        const experimentId = await store.getOrCreateExperiment(t.experiment);
        return { ...(await store.createRun({ experimentId, runName, startTime, tags, userId: tags['mlflow.user'] })), experimentId };
      })(),
      closeTimeout,
    );
    const experimentId = info.experimentId;
    runId = info.runId;
    tracker = new MlflowRunTracker({ ...base, experimentId, runId, lastLoggedStep: 0 });
  } catch (err) {
    if (!isUnreachable(err)) throw err;
    // start offline: the creation goes to the journal first, under a placeholder id (its create may have
    // reached the server: the replay searches for the token before creating)
    const placeholder = PLACEHOLDER_RUN_PREFIX + token;
    const createOp: CreateRunOp = { type: 'create-run', runId: placeholder, experiment: t.experiment, runName, startTime, tags: { ...tags, [CLIENT_TOKEN_TAG]: token }, userId: tags['mlflow.user'] ?? '' };
    runId = placeholder;
    tracker = new MlflowRunTracker({ ...base, experimentId: '', runId, placeholderRunId: placeholder, createOp, lastLoggedStep: 0 });
    opts.emit?.(offlineWarning(store.uri, opts.runDir, (err as Error).message));
  }
  const params = { ...configParams(opts.config), ...(opts.extraParams ?? {}) };
  for (const chunk of chunkBatch({ params: Object.entries(params).map(([key, value]) => ({ key, value })) })) {
    tracker.enqueue({ type: 'batch', runId, batch: chunk });
  }
  if (opts.specPath && existsSync(opts.specPath)) tracker.enqueue({ type: 'artifact', runId, localPath: path.resolve(opts.specPath), artifactPath: 'spec' });
  if (opts.resolvedYaml) {
    const f = path.join(opts.runDir, '.mlflow', 'resolved.yaml');
    atomicWriteFileSync(f, opts.resolvedYaml);
    tracker.enqueue({ type: 'artifact', runId, localPath: f, artifactPath: 'spec' });
  }
  void tracker.flushNow();
  return tracker;
}

// ---------------------------------------------------------------------------------------------------- sweeps

export interface ParentRun {
  runId: string;
  experimentId: string;
  uri: string;
  store: TrackingStore;
  /** Log summary metrics (best_loss, trials_done, ...) at a step. */
  logMetrics(metrics: Record<string, number>, step?: number): Promise<void>;
  setTags(tags: Record<string, string>): Promise<void>;
  finish(status: MlflowRunStatus): Promise<void>;
}

export interface CreateParentRunOptions {
  /** Tracking URI (default $MLFLOW_TRACKING_URI or ./mlruns). */
  uri?: string | null;
  experiment: string;
  runName: string;
  /** Sweep-level params (e.g. the swept dimensions: `sweep.grid.model.mask_ratio` = '[0.4,0.6]'). */
  params?: Record<string, string>;
  tags?: Record<string, string>;
  specPath?: string | null;
  /** Folder where `mlflow.json` keeps the parent run across a resumed sweep. */
  stateDir?: string;
  store?: TrackingStore;
}

/**
 * Create (or, with stateDir, reopen) a sweep's parent run. Trials then use createRunTracker({ parentRunId }).
 * An unreachable server is an error naming the URI and the way out (parentRunUnreachable): the parent is not
 * started offline.
 */
export async function createParentRun(o: CreateParentRunOptions): Promise<ParentRun> {
  const store = o.store ?? openStore(resolveTrackingUri(o.uri), TRACKER_REST_OPTIONS);
  let state: TrackingState | null = o.stateDir ? readTrackingState(o.stateDir) : null;
  if (state && state.uri !== store.uri) state = null;
  try {
    if (!state) {
      const tags: Record<string, string> = { ...systemTags({ runName: o.runName, specPath: o.specPath ?? null }), ...(o.tags ?? {}), 'spark.sweep': 'parent' };
      const experimentId = await store.getOrCreateExperiment(o.experiment);
      const runId = (await store.createRun({ experimentId, runName: o.runName, tags, userId: tags['mlflow.user'] })).runId;
      if (o.params && Object.keys(o.params).length) await store.logParams(runId, o.params);
      if (o.specPath && existsSync(o.specPath)) await store.logArtifact(runId, path.resolve(o.specPath), 'spec');
      state = { uri: store.uri, experimentId, runId, lastLoggedStep: 0 };
      if (o.stateDir) atomicWriteFileSync(path.join(o.stateDir, STATE_FILE), JSON.stringify(state, null, 2) + '\n');
    } else {
      await store.setTerminated(state.runId, 'RUNNING');
    }
  } catch (err) {
    if (isUnreachable(err)) throw parentRunUnreachable(store.uri, err);
    throw err;
  }
  const { runId, experimentId } = state;
  return {
    runId,
    experimentId,
    uri: store.uri,
    store,
    async logMetrics(metrics, step = 0) {
      const now = Date.now();
      const ms: Metric[] = Object.entries(metrics).map(([key, value]) => ({ key, value, timestamp: now, step }));
      await store.logMetrics(runId, ms);
    },
    async setTags(tags) {
      await store.setTags(runId, tags);
    },
    async finish(status) {
      await store.setTerminated(runId, status, Date.now());
    },
  };
}
