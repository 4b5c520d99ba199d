/**
 * The tracking store interface and MLflow's entities, camelCased. Two implementations: the `mlruns` file store
 * (src/track/filestore.ts) and the REST client (src/track/rest.ts); `openStore(uri)` picks one.
 */

export type MlflowRunStatus = 'RUNNING' | 'SCHEDULED' | 'FINISHED' | 'FAILED' | 'KILLED';
export type LifecycleStage = 'active' | 'deleted';
export type RunViewType = 'ACTIVE_ONLY' | 'DELETED_ONLY' | 'ALL';

/** RunStatus integers of the file store's meta.yaml. */
export const RUN_STATUS_CODE: Record<MlflowRunStatus, number> = { RUNNING: 1, SCHEDULED: 2, FINISHED: 3, FAILED: 4, KILLED: 5 };
export const RUN_STATUS_NAME: Record<number, MlflowRunStatus> = { 1: 'RUNNING', 2: 'SCHEDULED', 3: 'FINISHED', 4: 'FAILED', 5: 'KILLED' };

export interface Metric {
  key: string;
  /** May be NaN or ±Infinity. */
  value: number;
  /** Epoch milliseconds. */
  timestamp: number;
  step: number;
}

export interface KeyValue {
  key: string;
  value: string;
}

export interface Experiment {
  experimentId: string;
  name: string;
  artifactLocation: string;
  lifecycleStage: LifecycleStage;
  creationTime: number | null;
  lastUpdateTime: number | null;
  tags: Record<string, string>;
}

export interface RunInfo {
  runId: string;
  runName: string;
  experimentId: string;
  userId: string;
  status: MlflowRunStatus;
  startTime: number;
  endTime: number | null;
  artifactUri: string;
  lifecycleStage: LifecycleStage;
}

export interface RunData {
  /** Latest value per key: the maximum by (step, timestamp, value). */
  metrics: Record<string, number>;
  params: Record<string, string>;
  tags: Record<string, string>;
}

export interface Run {
  info: RunInfo;
  data: RunData;
}

export interface CreateRunOptions {
  experimentId: string;
  runName?: string | null;
  /** Epoch ms; default now. */
  startTime?: number;
  tags?: Record<string, string>;
  userId?: string;
}

export interface SearchRunsResult {
  runs: Run[];
  nextPageToken?: string;
}

export interface LogBatch {
  metrics?: Metric[];
  params?: KeyValue[];
  tags?: KeyValue[];
}

export interface TrackingStore {
  /** The URI the store was opened with (normalised). */
  readonly uri: string;
  readonly kind: 'file' | 'rest';
  getOrCreateExperiment(name: string, tags?: Record<string, string>): Promise<string>;
  getExperimentByName(name: string): Promise<Experiment | null>;
  getExperiment(experimentId: string): Promise<Experiment>;
  /** Active experiments. */
  listExperiments(): Promise<Experiment[]>;
  createRun(opts: CreateRunOptions): Promise<RunInfo>;
  logBatch(runId: string, batch: LogBatch): Promise<void>;
  logParams(runId: string, params: Record<string, string> | KeyValue[]): Promise<void>;
  logMetrics(runId: string, metrics: Metric[]): Promise<void>;
  setTags(runId: string, tags: Record<string, string> | KeyValue[]): Promise<void>;
  /** Copy a local file (or folder, recursively) to `<artifacts>/<artifactPath>/<basename>`. */
  logArtifact(runId: string, localPath: string, artifactPath?: string | null): Promise<void>;
  setTerminated(runId: string, status: MlflowRunStatus, endTime?: number): Promise<void>;
  getRun(runId: string): Promise<Run>;
  searchRuns(
    experimentIds: string[],
    filter?: string,
    orderBy?: string[],
    maxResults?: number,
    pageToken?: string,
    runViewType?: RunViewType,
  ): Promise<SearchRunsResult>;
  getMetricHistory(runId: string, key: string): Promise<Metric[]>;
}

/**
 * Tag of the runs spark's run tracker creates on a tracking server: a client-side token, unique per run. MLflow's
 * `runs/create` is not idempotent, so a create whose answer was lost is found again by searching for this tag
 * instead of being sent twice.
 */
export const CLIENT_TOKEN_TAG = 'spark.client_run_token';

/** Prefix of a client-side placeholder run id: the run's creation still waits in the offline journal. */
export const PLACEHOLDER_RUN_PREFIX = 'offline-';

/** True for a placeholder run id (never an id MLflow hands out: those are 32 hex digits). */
export function isPlaceholderRunId(runId: string): boolean {
  return runId.startsWith(PLACEHOLDER_RUN_PREFIX);
}

/** Identity of one logged metric point (NaN equals NaN): what replay and sync compare to avoid duplicates. */
export function metricPointKey(m: Metric): string {
  return `${m.key}|${m.step}|${m.timestamp}|${Number.isNaN(m.value) ? 'nan' : m.value}`;
}

export function toKeyValues(x: Record<string, string> | KeyValue[] | undefined): KeyValue[] {
  if (!x) return [];
  if (Array.isArray(x)) return x;
  return Object.entries(x).map(([key, value]) => ({ key, value }));
}

/** Every page of a search. */
export async function searchAllRuns(
  store: TrackingStore,
  experimentIds: string[],
  filter = '',
  orderBy: string[] = [],
  runViewType: RunViewType = 'ACTIVE_ONLY',
): Promise<Run[]> {
  const out: Run[] = [];
  let token: string | undefined;
  for (let page = 0; page < 100000; page++) {
    const r = await store.searchRuns(experimentIds, filter, orderBy, 1000, token, runViewType);
    out.push(...r.runs);
    if (!r.nextPageToken) break;
    token = r.nextPageToken;
  }
  return out;
}
