/**
 * A zero-dependency MLflow REST 2.0 client on Node's fetch (spec mlflow.md §1): JSON POST bodies, GET query strings,
 * NaN/±Infinity as strings, log-batch chunked to the server limits, retries with exponential backoff on
 * 408/429/5xx and network errors, per-request timeouts, Basic/Bearer auth from the MLFLOW_TRACKING_* variables,
 * typed errors by `error_code` (a non-JSON 404 means an unknown route).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { TrackingError } from '../util/errors.js';
import { fileStoreRoot } from './filestore.js';
import {
  MAX_ENTITIES_PER_BATCH,
  MAX_METRICS_PER_BATCH,
  MAX_PARAMS_PER_BATCH,
  MAX_TAGS_PER_BATCH,
  validateKey,
} from './keys.js';
import {
  CLIENT_TOKEN_TAG,
  toKeyValues,
  type CreateRunOptions,
  type Experiment,
  type KeyValue,
  type LogBatch,
  type Metric,
  type MlflowRunStatus,
  type Run,
  type RunInfo,
  type RunViewType,
  type SearchRunsResult,
  type TrackingStore,
} from './types.js';

/** errorCode of a TrackingError raised when the server could not be reached (network error, timeout, 5xx). */
export const UNREACHABLE = 'UNREACHABLE';

/**
 * The server could not be reached. `maybeSent`: the request may have been received and stored (timeout, 5xx).
 * `noAnswer`: the server took the request and did not answer in time (a timeout, or abandoned by the breaker).
 */
export class UnreachableError extends TrackingError {
  constructor(message: string, readonly maybeSent: boolean, httpStatus?: number, readonly noAnswer = false) {
    super(message, UNREACHABLE, httpStatus);
    this.name = 'UnreachableError';
  }
}

export interface RestOptions {
  /** Retries after the first attempt (default $MLFLOW_HTTP_REQUEST_MAX_RETRIES or 5). */
  maxRetries?: number;
  /** Seconds; the n-th retry waits factor·2^(n-1) (default $MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR or 1). */
  backoffFactor?: number;
  /** Cap of one backoff wait, seconds (default 60). */
  backoffMax?: number;
  /** Seconds of random jitter added to each wait (default $MLFLOW_HTTP_REQUEST_BACKOFF_JITTER or 1). */
  backoffJitter?: number;
  /** Per-request timeout, seconds (default $MLFLOW_HTTP_REQUEST_TIMEOUT or 120). */
  timeout?: number;
  /** Environment to read credentials and defaults from (default process.env). */
  env?: NodeJS.ProcessEnv;
  fetch?: typeof fetch;
  /**
   * Use the process-wide circuit breaker of this URI (what training runs and sweeps use, TRACKER_REST_OPTIONS):
   * a request that times out is not retried and opens the circuit, as does any call that ends unreachable after
   * its retries; while open, every call of every breaker store of that URI fails at once (UnreachableError, not
   * sent) and the server is probed in the background with a short timeout until it answers.
   */
  breaker?: boolean;
  /** Timeout of one background probe, seconds (default 2). */
  probeTimeout?: number;
  /**
   * With the breaker: the request timeout, seconds, until the server has answered once in this process (default
   * 5; `timeout` when lower). A server that accepts connections but never answers then stops a sweep's start (its
   * parent run) as quickly as one that is down.
   */
  firstAnswerTimeout?: number;
}

/**
 * The circuit of one tracking URI, shared by the breaker stores of this process. Open: the server did not answer
 * (a timeout, or a call that stayed unreachable after its retries); calls fail at once without touching the
 * network, and a probe (a cheap GET with a short timeout) is sent at most every `probeInterval` (1 s doubling to
 * 30 s) when a call is attempted. A probe that gets any definitive HTTP answer closes the circuit and tells the
 * listeners (trackers then replay their journals). `trip()` also aborts the requests in flight to that URI.
 */
export class CircuitBreaker {
  private openReason: string | null = null;
  private silent = false;
  /** True once the server answered a request (any HTTP status) in this process. */
  answered = false;
  private probing: Promise<boolean> | null = null;
  private lastProbeEnd = 0;
  private intervalMs = 1000;
  private readonly inflight = new Set<AbortController>();
  private readonly listeners = new Set<() => void>();
  private probeFn: ((signal: AbortSignal) => Promise<boolean>) | null = null;

  constructor(readonly uri: string) {}

  get isOpen(): boolean {
    return this.openReason !== null;
  }
  get reason(): string | null {
    return this.openReason;
  }
  /**
   * True while the circuit is open because the server took requests and did not answer (rather than refusing
   * them): waiting for it is pointless, a run's end does not probe it again.
   */
  get noAnswer(): boolean {
    return this.isOpen && this.silent;
  }

  /** Open the circuit (no-op when open) and abandon the requests in flight to this URI. */
  trip(reason: string, noAnswer = true): void {
    if (this.openReason === null || noAnswer) this.silent = noAnswer;
    if (this.openReason === null) {
      this.openReason = reason;
      this.intervalMs = 1000;
      this.lastProbeEnd = Date.now();
    }
    for (const ac of [...this.inflight]) ac.abort(new Error(`abandoned: ${reason}`));
  }

  /** Close the circuit (a call or a probe got an answer) and tell the listeners. */
  reset(): void {
    if (this.openReason === null) return;
    this.openReason = null;
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch {
        /* a listener's own problem */
      }
    }
  }

  /** Called when the circuit closes again; returns the unsubscribe function. */
  onReachable(l: () => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  track(ac: AbortController): () => void {
    this.inflight.add(ac);
    return () => this.inflight.delete(ac);
  }

  setProbe(fn: (signal: AbortSignal) => Promise<boolean>): void {
    this.probeFn ??= fn;
  }

  /**
   * Probe the server unless a probe ran less than the probe interval ago (`force`: now, unless one is in flight).
   * Resolves true when the server answered (the circuit is closed then).
   */
  probe(force = false): Promise<boolean> {
    if (!this.isOpen) return Promise.resolve(true);
    if (this.probing) return this.probing;
    if (!this.probeFn || (!force && Date.now() - this.lastProbeEnd < this.intervalMs)) return Promise.resolve(false);
    const ac = new AbortController();
    const untrack = this.track(ac);
    const fn = this.probeFn;
    this.probing = fn(ac.signal)
      .catch((e: Error) => {
        // refused (down) or no answer (hung, or abandoned by a trip)
        this.silent = ac.signal.aborted || e.name === 'TimeoutError' || e.name === 'AbortError';
        return false;
      })
      .then((ok) => {
        untrack();
        if (ok) this.answered = true;
        this.probing = null;
        this.lastProbeEnd = Date.now();
        if (ok) this.reset();
        else this.intervalMs = Math.min(30_000, this.intervalMs * 2);
        return ok;
      });
    return this.probing;
  }

  /** The probe in flight, if any. */
  get probeInFlight(): Promise<boolean> | null {
    return this.probing;
  }
}

const breakers = new Map<string, CircuitBreaker>();

/** The process-wide circuit breaker of a tracking URI. */
export function circuitBreaker(uri: string): CircuitBreaker {
  const key = uri.replace(/\/+$/, '');
  let b = breakers.get(key);
  if (!b) {
    b = new CircuitBreaker(key);
    breakers.set(key, b);
  }
  return b;
}

const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

function envNum(env: NodeJS.ProcessEnv, name: string, dflt: number): number {
  const v = env[name];
  const n = v === undefined || v === '' ? NaN : Number(v);
  return Number.isFinite(n) && n >= 0 ? n : dflt;
}

/** Protobuf JSON encoding of a double. */
export function encodeMetricValue(v: number): number | string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return v;
}

export function decodeMetricValue(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  return Number(v);
}

/** An estimate of the JSON size of one entity in a log-batch body. */
function entitySize(e: { key: string; value: unknown }): number {
  return e.key.length + String(e.value).length + 64;
}
const MAX_BATCH_BYTES = 900_000;

/**
 * Split a batch into requests within MLflow's limits: ≤1000 metrics, ≤100 params, ≤100 tags, ≤1000 entities and
 * < 1 MB each. Order is kept within each kind; params go first, then metrics, then tags (the store's write order).
 */
export function chunkBatch(batch: LogBatch): LogBatch[] {
  const params = batch.params ?? [];
  const metrics = batch.metrics ?? [];
  const tags = batch.tags ?? [];
  const out: LogBatch[] = [];
  let pi = 0;
  let mi = 0;
  let ti = 0;
  while (pi < params.length || mi < metrics.length || ti < tags.length) {
    const c: Required<LogBatch> = { params: [], metrics: [], tags: [] };
    let total = 0;
    let bytes = 0;
    const room = (e: { key: string; value: unknown }) => total < MAX_ENTITIES_PER_BATCH && (total === 0 || bytes + entitySize(e) <= MAX_BATCH_BYTES);
    while (pi < params.length && c.params.length < MAX_PARAMS_PER_BATCH && room(params[pi]!)) {
      bytes += entitySize(params[pi]!);
      c.params.push(params[pi++]!);
      total++;
    }
    while (mi < metrics.length && c.metrics.length < MAX_METRICS_PER_BATCH && room(metrics[mi]!)) {
      bytes += entitySize(metrics[mi]!);
      c.metrics.push(metrics[mi++]!);
      total++;
    }
    while (ti < tags.length && c.tags.length < MAX_TAGS_PER_BATCH && room(tags[ti]!)) {
      bytes += entitySize(tags[ti]!);
      c.tags.push(tags[ti++]!);
      total++;
    }
    const b: LogBatch = {};
    if (c.params.length) b.params = c.params;
    if (c.metrics.length) b.metrics = c.metrics;
    if (c.tags.length) b.tags = c.tags;
    out.push(b);
  }
  return out;
}

interface ApiRunInfo {
  run_id?: string;
  run_uuid?: string;
  run_name?: string;
  experiment_id?: string;
  user_id?: string;
  status?: MlflowRunStatus;
  start_time?: number | string;
  end_time?: number | string | null;
  artifact_uri?: string;
  lifecycle_stage?: 'active' | 'deleted';
}
interface ApiRun {
  info: ApiRunInfo;
  data?: { metrics?: Array<{ key: string; value: unknown }>; params?: KeyValue[]; tags?: KeyValue[] };
}
interface ApiExperiment {
  experiment_id: string;
  name: string;
  artifact_location?: string;
  lifecycle_stage?: 'active' | 'deleted';
  creation_time?: number | string;
  last_update_time?: number | string;
  tags?: KeyValue[];
}

function runInfoFromApi(i: ApiRunInfo): RunInfo {
  return {
    runId: String(i.run_id ?? i.run_uuid ?? ''),
    runName: i.run_name ?? '',
    experimentId: String(i.experiment_id ?? ''),
    userId: i.user_id ?? '',
    status: i.status ?? 'RUNNING',
    startTime: Number(i.start_time ?? 0),
    endTime: i.end_time === undefined || i.end_time === null ? null : Number(i.end_time),
    artifactUri: i.artifact_uri ?? '',
    lifecycleStage: i.lifecycle_stage ?? 'active',
  };
}

export function runFromApi(r: ApiRun): Run {
  const metrics: Record<string, number> = {};
  for (const m of r.data?.metrics ?? []) metrics[m.key] = decodeMetricValue(m.value);
  const params: Record<string, string> = {};
  for (const p of r.data?.params ?? []) params[p.key] = p.value;
  const tags: Record<string, string> = {};
  for (const t of r.data?.tags ?? []) tags[t.key] = t.value;
  const info = runInfoFromApi(r.info);
  if (!info.runName && tags['mlflow.runName']) info.runName = tags['mlflow.runName'];
  return { info, data: { metrics, params, tags } };
}

function experimentFromApi(e: ApiExperiment): Experiment {
  const tags: Record<string, string> = {};
  for (const t of e.tags ?? []) tags[t.key] = t.value;
  return {
    experimentId: String(e.experiment_id),
    name: e.name,
    artifactLocation: e.artifact_location ?? '',
    lifecycleStage: e.lifecycle_stage ?? 'active',
    creationTime: e.creation_time === undefined ? null : Number(e.creation_time),
    lastUpdateTime: e.last_update_time === undefined ? null : Number(e.last_update_time),
    tags,
  };
}

/** True for errors that mean "the server is not there right now" (the offline buffer keeps such calls). */
export function isUnreachable(e: unknown): boolean {
  return e instanceof TrackingError && e.errorCode === UNREACHABLE;
}

export class RestStore implements TrackingStore {
  readonly kind = 'rest' as const;
  readonly uri: string;
  private readonly api: string;
  private readonly opts: Required<Omit<RestOptions, 'env' | 'fetch' | 'breaker' | 'probeTimeout' | 'firstAnswerTimeout'>>;
  private readonly auth: string | null;
  private readonly fetchImpl: typeof fetch;
  private artifactUris = new Map<string, string>();
  /** The URI's circuit breaker (RestOptions.breaker), or null. */
  readonly breaker: CircuitBreaker | null;
  private readonly probeTimeout: number;
  private readonly firstAnswerTimeout: number;

  constructor(uri: string, opts: RestOptions = {}) {
    this.uri = uri.replace(/\/+$/, '');
    this.api = `${this.uri}/api/2.0/mlflow`;
    const env = opts.env ?? process.env;
    this.opts = {
      maxRetries: opts.maxRetries ?? envNum(env, 'MLFLOW_HTTP_REQUEST_MAX_RETRIES', 5),
      backoffFactor: opts.backoffFactor ?? envNum(env, 'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR', 1),
      backoffMax: opts.backoffMax ?? 60,
      backoffJitter: opts.backoffJitter ?? envNum(env, 'MLFLOW_HTTP_REQUEST_BACKOFF_JITTER', 1),
      timeout: opts.timeout ?? envNum(env, 'MLFLOW_HTTP_REQUEST_TIMEOUT', 120),
    };
    const token = env['MLFLOW_TRACKING_TOKEN'];
    const user = env['MLFLOW_TRACKING_USERNAME'];
    const pass = env['MLFLOW_TRACKING_PASSWORD'];
    this.auth = token ? `Bearer ${token}` : user !== undefined && pass !== undefined ? `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` : null;
    this.fetchImpl = opts.fetch ?? fetch;
    this.probeTimeout = opts.probeTimeout ?? 2;
    this.firstAnswerTimeout = opts.firstAnswerTimeout ?? 5;
    this.breaker = opts.breaker ? circuitBreaker(this.uri) : null;
    this.breaker?.setProbe((signal) => this.probeOnce(signal));
  }

  /**
   * One GET with the probe timeout and no retries: true when the server gave a definitive answer (any status but
   * 408/429/5xx — a 404 for the probed name is an answer).
   */
  private async probeOnce(signal: AbortSignal): Promise<boolean> {
    const headers: Record<string, string> = {};
    if (this.auth) headers['Authorization'] = this.auth;
    const res = await this.fetchImpl(`${this.api}/experiments/get-by-name?experiment_name=Default`, {
      headers,
      signal: AbortSignal.any([signal, AbortSignal.timeout(this.probeTimeout * 1000)]),
    });
    await res.text().catch(() => '');
    return !RETRY_STATUS.has(res.status);
  }

  // ------------------------------------------------------------------------------------------ transport

  private async sleep(attempt: number): Promise<void> {
    const base = Math.min(this.opts.backoffMax, this.opts.backoffFactor * 2 ** (attempt - 1));
    const ms = (base + Math.random() * this.opts.backoffJitter) * 1000;
    await new Promise((r) => setTimeout(r, ms));
  }

  /**
   * One HTTP call with retries; returns the parsed JSON body of a 200. `retryMaybeSent: false` (a call that must
   * not be carried out twice): an attempt that may have reached the server is not re-sent, its UnreachableError
   * (maybeSent) is thrown at once; attempts that surely did not arrive (refused, 429, 503) are still retried.
   */
  async request<T>(method: 'GET' | 'POST' | 'PUT', url: string, body?: unknown, raw?: Uint8Array, retryMaybeSent = true): Promise<T> {
    const b = this.breaker;
    if (!b) return this.requestWithRetries<T>(method, url, body, raw, retryMaybeSent);
    if (b.isOpen) {
      void b.probe();
      throw new UnreachableError(`MLflow tracking server ${this.uri} is not answering (${b.reason}); calls are kept offline until it answers again`, false);
    }
    try {
      return await this.requestWithRetries<T>(method, url, body, raw, retryMaybeSent);
    } catch (e) {
      if (e instanceof UnreachableError) b.trip(e.message, e.noAnswer);
      throw e;
    }
  }

  private async requestWithRetries<T>(method: 'GET' | 'POST' | 'PUT', url: string, body: unknown, raw: Uint8Array | undefined, retryMaybeSent: boolean): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.auth) headers['Authorization'] = this.auth;
    let payload: string | Uint8Array | undefined;
    if (raw) {
      payload = raw;
      headers['Content-Type'] = 'application/octet-stream';
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    let lastErr: UnreachableError | null = null;
    for (let attempt = 0; attempt <= this.opts.maxRetries; attempt++) {
      if (attempt > 0) await this.sleep(attempt);
      let res: Response;
      let text: string;
      const ac = new AbortController();
      const untrack = this.breaker?.track(ac);
      const timeout = this.breaker && !this.breaker.answered ? Math.min(this.opts.timeout, this.firstAnswerTimeout) : this.opts.timeout;
      try {
        res = await this.fetchImpl(url, { method, headers, body: payload, signal: AbortSignal.any([ac.signal, AbortSignal.timeout(timeout * 1000)]) });
        text = await res.text();
        if (this.breaker) this.breaker.answered = true;
      } catch (e) {
        const err = e as Error & { cause?: { code?: string; message?: string } };
        const abandoned = ac.signal.aborted;
        const timedOut = !abandoned && (err.name === 'TimeoutError' || err.name === 'AbortError');
        const why = abandoned ? String((ac.signal.reason as Error | undefined)?.message ?? 'abandoned') : timedOut ? `timed out after ${timeout}s` : (err.cause?.code ?? err.cause?.message ?? err.message);
        const neverSent = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH/.test(String(why));
        lastErr = new UnreachableError(`cannot reach the MLflow tracking server at ${this.uri} (${method} ${new URL(url).pathname}: ${why})`, !neverSent, undefined, abandoned || timedOut);
        if (lastErr.maybeSent && !retryMaybeSent) throw lastErr;
        // the circuit breaker's rule: a server that let a request time out is not asked again now
        if (abandoned || (timedOut && this.breaker)) throw lastErr;
        continue;
      } finally {
        untrack?.();
      }
      if (res.status === 200) {
        if (!text) return {} as T;
        try {
          return JSON.parse(text) as T;
        } catch {
          return { text } as T;
        }
      }
      let json: { error_code?: string; message?: string } | null = null;
      try {
        json = JSON.parse(text) as { error_code?: string; message?: string };
      } catch {
        json = null;
      }
      if (RETRY_STATUS.has(res.status)) {
        lastErr = new UnreachableError(
          `MLflow server ${this.uri} answered HTTP ${res.status}${json?.error_code ? ` ${json.error_code}` : ''} to ${method} ${new URL(url).pathname}${json?.message ? `: ${json.message}` : ''}`,
          res.status !== 429 && res.status !== 503,
          res.status,
        );
        if (lastErr.maybeSent && !retryMaybeSent) throw lastErr;
        continue;
      }
      if (json && typeof json.error_code === 'string') {
        throw new TrackingError(json.message ?? json.error_code, json.error_code, res.status);
      }
      if (res.status === 404) {
        throw new TrackingError(
          `${method} ${new URL(url).pathname}: the server at ${this.uri} has no such endpoint (HTTP 404, non-JSON answer): is this URI an MLflow tracking server (with --serve-artifacts for artifacts)?`,
          'ENDPOINT_NOT_FOUND',
          404,
        );
      }
      const snippet = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
      throw new TrackingError(`MLflow server ${this.uri} answered HTTP ${res.status} to ${method} ${new URL(url).pathname}: ${snippet}`, undefined, res.status);
    }
    throw lastErr ?? new UnreachableError(`cannot reach the MLflow tracking server at ${this.uri}`, false);
  }

  private get<T>(endpoint: string, query: Record<string, string | number | undefined>): Promise<T> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
    return this.request<T>('GET', `${this.api}/${endpoint}?${q.toString()}`);
  }

  private post<T>(endpoint: string, body: unknown, retryMaybeSent = true): Promise<T> {
    return this.request<T>('POST', `${this.api}/${endpoint}`, body, undefined, retryMaybeSent);
  }

  // ------------------------------------------------------------------------------------------ experiments

  async getExperimentByName(name: string): Promise<Experiment | null> {
    try {
      const r = await this.get<{ experiment: ApiExperiment }>('experiments/get-by-name', { experiment_name: name });
      return experimentFromApi(r.experiment);
    } catch (e) {
      if (e instanceof TrackingError && e.errorCode === 'RESOURCE_DOES_NOT_EXIST') return null;
      throw e;
    }
  }

  async getExperiment(experimentId: string): Promise<Experiment> {
    const r = await this.get<{ experiment: ApiExperiment }>('experiments/get', { experiment_id: experimentId });
    return experimentFromApi(r.experiment);
  }

  async createExperiment(name: string, tags?: Record<string, string>): Promise<string> {
    const r = await this.post<{ experiment_id: string }>('experiments/create', { name, tags: toKeyValues(tags) });
    return String(r.experiment_id);
  }

  async getOrCreateExperiment(name: string, tags?: Record<string, string>): Promise<string> {
    let e = await this.getExperimentByName(name);
    if (!e) {
      try {
        return await this.createExperiment(name, tags);
      } catch (err) {
        if (!(err instanceof TrackingError && err.errorCode === 'RESOURCE_ALREADY_EXISTS')) throw err;
        e = await this.getExperimentByName(name);
        if (!e) throw new TrackingError(`experiment '${name}' already exists on ${this.uri} but cannot be read back (deleted? restore it or choose another name)`, 'RESOURCE_ALREADY_EXISTS', 400);
      }
    }
    if (e.lifecycleStage === 'deleted') {
      throw new TrackingError(
        `experiment '${name}' (id ${e.experimentId}) is deleted on ${this.uri}: restore it (\`mlflow experiments restore --experiment-id ${e.experimentId}\`) or choose another name`,
        'INVALID_STATE',
      );
    }
    return e.experimentId;
  }

  async listExperiments(): Promise<Experiment[]> {
    const out: Experiment[] = [];
    let token: string | undefined;
    for (let i = 0; i < 10000; i++) {
      const r = await this.post<{ experiments?: ApiExperiment[]; next_page_token?: string }>('experiments/search', {
        max_results: 1000,
        page_token: token,
        view_type: 'ACTIVE_ONLY',
      });
      out.push(...(r.experiments ?? []).map(experimentFromApi));
      if (!r.next_page_token) break;
      token = r.next_page_token;
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------ runs

  /**
   * runs/create. A create that carries the client token tag (spark.client_run_token) is never re-sent after an
   * attempt that may have arrived: the caller finds that run by its token instead (MLflow's create is not
   * idempotent; a blind retry could make two runs).
   */
  async createRun(opts: CreateRunOptions): Promise<RunInfo> {
    const tags = { ...(opts.tags ?? {}) };
    const runName = opts.runName ?? tags['mlflow.runName'];
    if (runName) tags['mlflow.runName'] = runName;
    const body = {
      experiment_id: opts.experimentId,
      user_id: opts.userId ?? tags['mlflow.user'] ?? '',
      run_name: runName || undefined,
      start_time: Math.round(opts.startTime ?? Date.now()),
      tags: toKeyValues(tags),
    };
    const r = await this.post<{ run: ApiRun }>('runs/create', body, !tags[CLIENT_TOKEN_TAG]);
    const info = runInfoFromApi(r.run.info);
    if (info.artifactUri) this.artifactUris.set(info.runId, info.artifactUri);
    return info;
  }

  /** One log-batch request per chunk (see chunkBatch). */
  async logBatch(runId: string, batch: LogBatch): Promise<void> {
    for (const m of batch.metrics ?? []) validateKey('metric', m.key);
    for (const p of batch.params ?? []) validateKey('param', p.key);
    for (const t of batch.tags ?? []) validateKey('tag', t.key);
    for (const chunk of chunkBatch(batch)) await this.logBatchRequest(runId, chunk);
  }

  /** Exactly one request; the caller keeps within the limits. */
  async logBatchRequest(runId: string, chunk: LogBatch): Promise<void> {
    await this.post('runs/log-batch', {
      run_id: runId,
      metrics: (chunk.metrics ?? []).map((m) => ({ key: m.key, value: encodeMetricValue(m.value), timestamp: Math.round(m.timestamp), step: Math.round(m.step) })),
      params: (chunk.params ?? []).map((p) => ({ key: p.key, value: String(p.value) })),
      tags: (chunk.tags ?? []).map((t) => ({ key: t.key, value: String(t.value) })),
    });
  }

  async logParams(runId: string, params: Record<string, string> | KeyValue[]): Promise<void> {
    await this.logBatch(runId, { params: toKeyValues(params) });
  }

  async logMetrics(runId: string, metrics: Metric[]): Promise<void> {
    await this.logBatch(runId, { metrics });
  }

  async setTags(runId: string, tags: Record<string, string> | KeyValue[]): Promise<void> {
    const kv = toKeyValues(tags);
    const rename = kv.filter((t) => t.key === 'mlflow.runName');
    const rest = kv.filter((t) => t.key !== 'mlflow.runName');
    if (rest.length) await this.logBatch(runId, { tags: rest });
    for (const t of rename) await this.post('runs/set-tag', { run_id: runId, run_uuid: runId, key: t.key, value: t.value });
  }

  async setTerminated(runId: string, status: MlflowRunStatus, endTime = Date.now()): Promise<void> {
    await this.post('runs/update', status === 'RUNNING' ? { run_id: runId, run_uuid: runId, status } : { run_id: runId, run_uuid: runId, status, end_time: Math.round(endTime) });
  }

  async getRun(runId: string): Promise<Run> {
    const r = await this.get<{ run: ApiRun }>('runs/get', { run_id: runId });
    const run = runFromApi(r.run);
    if (run.info.artifactUri) this.artifactUris.set(runId, run.info.artifactUri);
    return run;
  }

  async searchRuns(
    experimentIds: string[],
    filter = '',
    orderBy: string[] = [],
    maxResults = 1000,
    pageToken?: string,
    runViewType: RunViewType = 'ACTIVE_ONLY',
  ): Promise<SearchRunsResult> {
    const r = await this.post<{ runs?: ApiRun[]; next_page_token?: string }>('runs/search', {
      experiment_ids: experimentIds,
      filter,
      run_view_type: runViewType,
      max_results: maxResults,
      order_by: orderBy,
      page_token: pageToken || undefined,
    });
    const runs = (r.runs ?? []).map(runFromApi);
    return r.next_page_token ? { runs, nextPageToken: r.next_page_token } : { runs };
  }

  async getMetricHistory(runId: string, key: string): Promise<Metric[]> {
    const out: Metric[] = [];
    let token: string | undefined;
    for (let i = 0; i < 100000; i++) {
      const r = await this.get<{ metrics?: Array<{ key: string; value: unknown; timestamp: number | string; step?: number | string }>; next_page_token?: string }>(
        'metrics/get-history',
        { run_id: runId, metric_key: key, page_token: token },
      );
      for (const m of r.metrics ?? []) out.push({ key: m.key, value: decodeMetricValue(m.value), timestamp: Number(m.timestamp), step: Number(m.step ?? 0) });
      if (!r.next_page_token) break;
      token = r.next_page_token;
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------ artifacts

  /** The base URL that files of `<artifactUri>/<rel>` are PUT to. */
  artifactBaseUrl(artifactUri: string): string {
    const m = /^mlflow-artifacts:(\/\/([^/]+))?\/?(.*)$/.exec(artifactUri);
    if (m) {
      const base = m[2] ? `${new URL(this.uri).protocol}//${m[2]}` : this.uri;
      const rel = m[3]!.replace(/^\/+/, '');
      return `${base}/api/2.0/mlflow-artifacts/artifacts/${rel.split('/').map(encodeURIComponent).join('/')}`;
    }
    if (/^https?:\/\/.*\/api\/2\.0\/mlflow-artifacts\/artifacts/.test(artifactUri)) return artifactUri.replace(/\/+$/, '');
    throw new TrackingError(
      `artifact URI '${artifactUri}' is not supported by spark's REST client (only mlflow-artifacts: and http(s) mlflow-artifacts URLs; start the server with --serve-artifacts)`,
      'UNSUPPORTED_ARTIFACT_URI',
    );
  }

  async logArtifact(runId: string, localPath: string, artifactPath?: string | null): Promise<void> {
    let uri = this.artifactUris.get(runId);
    if (!uri) uri = (await this.getRun(runId)).info.artifactUri;
    const prefix = [...(artifactPath ? artifactPath.split('/').filter(Boolean) : []), path.basename(localPath)];
    if (uri.startsWith('file:')) {
      // --no-serve-artifacts with a local artifact root: write it ourselves
      const dest = path.join(fileStoreRoot(uri), ...prefix);
      await fsp.mkdir(path.dirname(dest), { recursive: true });
      await fsp.cp(localPath, dest, { recursive: true });
      return;
    }
    const base = this.artifactBaseUrl(uri);
    const files: Array<[string, string[]]> = [];
    const walk = async (p: string, rel: string[]) => {
      const st = await fsp.stat(p);
      if (st.isDirectory()) for (const n of (await fsp.readdir(p)).sort()) await walk(path.join(p, n), [...rel, n]);
      else files.push([p, rel]);
    };
    await walk(localPath, prefix);
    for (const [file, rel] of files) {
      const url = `${base}/${rel.map(encodeURIComponent).join('/')}`;
      await this.request('PUT', url, undefined, new Uint8Array(await fsp.readFile(file)));
    }
  }
}
