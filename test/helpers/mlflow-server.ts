/**
 * Test helper: an in-process MLflow tracking server on 127.0.0.1 that reproduces the REST behaviour recorded
 * against MLflow 2.12.2 (../shared/spec/mlflow.md §1): JSON POST bodies only (400 otherwise), GET inputs from the
 * query string, `{error_code, message}` errors with MLflow's HTTP statuses (400 RESOURCE_ALREADY_EXISTS for a
 * duplicate experiment), Flask's HTML 404 for unknown routes, NaN/±Infinity as strings both ways, log-batch limits,
 * proxied artifact uploads (`mlflow-artifacts:/<exp>` locations, PUT …/mlflow-artifacts/artifacts/<path>).
 * Backed by spark's own file store in a temp folder, which carries MLflow's store semantics (param immutability,
 * key validation, search filters).
 *
 * Test controls: `requests` (every request seen), `failNext(n, status, path?)`, `delayNext(n, ms)`,
 * `dropAfterProcessing(n, path?)` (the call is carried out, then the connection is closed without an answer),
 * `hang()` / `unhang()` (accept every request and never answer it: a frozen server, a proxy without a backend),
 * `afterAnswer(path, fn)` (run `fn` once a request to that path has been answered, e.g. to hang or stop the server
 * at a chosen point), `stop()`/`start()` (same port: an outage), `requireAuth`.
 */
import type { ExperimentConfig } from '../../src/spec/types.js';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promises as fsp, mkdtempSync, existsSync } from 'node:fs';
import { packageRoot } from '../../src/util/paths.js';
import os from 'node:os';
import path from 'node:path';
import { FileStore, latestMetric } from '../../src/track/filestore.js';
import { TrackingError } from '../../src/util/errors.js';
import { encodeMetricValue } from '../../src/track/rest.js';
import type { Metric, Run, RunInfo, Experiment, MlflowRunStatus, RunViewType } from '../../src/track/types.js';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: http.IncomingHttpHeaders;
  body: unknown;
  /** Raw body bytes (artifact uploads). */
  raw: Buffer;
}

const HTML_404 =
  '<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>\n';
const HTML_405 =
  '<!doctype html>\n<html lang=en>\n<title>405 Method Not Allowed</title>\n<h1>Method Not Allowed</h1>\n<p>The method is not allowed for the requested URL.</p>\n';

const STATUS_OF: Record<string, number> = {
  INVALID_PARAMETER_VALUE: 400,
  RESOURCE_ALREADY_EXISTS: 400,
  BAD_REQUEST: 400,
  RESOURCE_DOES_NOT_EXIST: 404,
  ENDPOINT_NOT_FOUND: 404,
  PERMISSION_DENIED: 403,
  UNAUTHENTICATED: 401,
  REQUEST_LIMIT_EXCEEDED: 429,
  INTERNAL_ERROR: 500,
  INVALID_STATE: 500,
  TEMPORARILY_UNAVAILABLE: 503,
};

class ApiError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

function req(body: Record<string, unknown>, name: string): unknown {
  const v = body[name];
  if (v === undefined || v === null || v === '') throw new ApiError('INVALID_PARAMETER_VALUE', `Missing value for required parameter '${name}'. See the API docs for more information about request parameters.`);
  return v;
}

function decodeValue(v: unknown, where: string): number {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  if (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) return Number(v);
  if (v === null || v === undefined) throw new ApiError('INVALID_PARAMETER_VALUE', `Missing value for required parameter 'value'. See the API docs for more information about request parameters.`);
  throw new ApiError('INVALID_PARAMETER_VALUE', `Invalid value ${JSON.stringify(v)} for parameter '${where}' supplied.`);
}

function infoJson(i: RunInfo): Record<string, unknown> {
  const o: Record<string, unknown> = {
    run_id: i.runId,
    run_uuid: i.runId,
    run_name: i.runName,
    experiment_id: i.experimentId,
    user_id: i.userId,
    status: i.status,
    start_time: i.startTime,
    artifact_uri: i.artifactUri,
    lifecycle_stage: i.lifecycleStage,
  };
  if (i.endTime !== null) o['end_time'] = i.endTime;
  return o;
}

function metricJson(m: Metric): Record<string, unknown> {
  return { key: m.key, value: encodeMetricValue(m.value), timestamp: m.timestamp, step: m.step };
}

function experimentJson(e: Experiment): Record<string, unknown> {
  const o: Record<string, unknown> = {
    experiment_id: e.experimentId,
    name: e.name,
    artifact_location: e.artifactLocation,
    lifecycle_stage: e.lifecycleStage,
    creation_time: e.creationTime,
    last_update_time: e.lastUpdateTime,
  };
  const tags = Object.entries(e.tags).map(([key, value]) => ({ key, value }));
  if (tags.length) o['tags'] = tags;
  return o;
}

export class MlflowTestServer {
  readonly dir: string;
  readonly store: FileStore;
  readonly artifactsDir: string;
  readonly requests: RecordedRequest[] = [];
  /** When set, requests whose Authorization header differs get 401 UNAUTHENTICATED. */
  requireAuth: string | null = null;
  private failures: Array<{ status: number; path?: string }> = [];
  private drops: Array<{ path?: string }> = [];
  private delays: Array<{ ms: number; after: boolean }> = [];
  private afterHooks: Array<{ path?: string; fn: () => void }> = [];
  private hanging = false;
  /** Requests accepted and left unanswered in hang mode. */
  hungRequests = 0;
  private server: http.Server;
  private _port = 0;

  /** `storeRoot`: serve an existing file store (e.g. a copy of the golden one) instead of an empty one. */
  constructor(opts: { storeRoot?: string } = {}) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'spark-mlflow-server-'));
    this.store = new FileStore(opts.storeRoot ?? path.join(this.dir, 'mlruns'), { artifactLocation: (id) => `mlflow-artifacts:/${id}` });
    this.artifactsDir = path.join(this.dir, 'mlartifacts');
    this.server = this.makeServer();
  }

  get port(): number {
    return this._port;
  }
  get url(): string {
    return `http://127.0.0.1:${this._port}`;
  }

  /**
   * The next `n` requests get `status` (default 503 TEMPORARILY_UNAVAILABLE) without being processed. With
   * `pathSuffix`, only requests whose path ends with it (e.g. '/runs/log-batch') count.
   */
  failNext(n: number, status = 503, pathSuffix?: string): void {
    for (let i = 0; i < n; i++) this.failures.push({ status, ...(pathSuffix ? { path: pathSuffix } : {}) });
  }

  /**
   * The next `n` API calls (whose path ends with `pathSuffix`, when given) are carried out, then their connection
   * is destroyed without an answer: the client cannot know that its call was stored.
   */
  dropAfterProcessing(n: number, pathSuffix?: string): void {
    for (let i = 0; i < n; i++) this.drops.push(pathSuffix ? { path: pathSuffix } : {});
  }

  /** From now on every request is read and never answered (the connection stays open) until unhang(). */
  hang(): void {
    this.hanging = true;
  }

  /** Answer new requests again (the requests left hanging stay unanswered). */
  unhang(): void {
    this.hanging = false;
  }

  /** Run `fn` once, right after the next request whose path ends with `pathSuffix` has been answered. */
  afterAnswer(pathSuffix: string, fn: () => void): void {
    this.afterHooks.push({ path: pathSuffix, fn });
  }

  private take<T extends { path?: string }>(list: T[], p: string): T | undefined {
    const i = list.findIndex((x) => x.path === undefined || p.endsWith(x.path));
    return i < 0 ? undefined : list.splice(i, 1)[0];
  }

  /**
   * The next `n` requests are answered after `ms` milliseconds. With `afterProcessing`, the request is carried out
   * first and only the answer is late (a client that times out then does not know that its call was stored).
   */
  delayNext(n: number, ms: number, afterProcessing = false): void {
    for (let i = 0; i < n; i++) this.delays.push({ ms, after: afterProcessing });
  }

  private makeServer(): http.Server {
    const s = http.createServer((rq, rs) => {
      void this.handle(rq, rs).catch((e) => {
        if (!rs.headersSent) {
          rs.writeHead(500, { 'Content-Type': 'text/html' });
          rs.end(`<html><body>Internal Server Error: ${String(e)}</body></html>`);
        }
      });
    });
    s.keepAliveTimeout = 1000;
    return s;
  }

  async start(): Promise<this> {
    if (this.server.listening) return this;
    this.server = this.makeServer();
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this._port, '127.0.0.1', () => {
        this._port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
    return this;
  }

  /** Stop listening and drop every open connection (an outage). start() brings it back on the same port. */
  async stop(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    await closed;
  }

  async close(): Promise<void> {
    await this.stop();
    await fsp.rm(this.dir, { recursive: true, force: true });
  }

  async fullRun(runId: string): Promise<Record<string, unknown>> {
    const run: Run = await this.store.getRun(runId);
    const metrics: Metric[] = [];
    for (const k of Object.keys(run.data.metrics)) {
      const last = latestMetric(await this.store.getMetricHistory(runId, k));
      if (last) metrics.push(last);
    }
    const data: Record<string, unknown> = {};
    if (metrics.length) data['metrics'] = metrics.map(metricJson);
    const params = Object.entries(run.data.params).map(([key, value]) => ({ key, value }));
    if (params.length) data['params'] = params;
    const tags = Object.entries(run.data.tags).map(([key, value]) => ({ key, value }));
    if (tags.length) data['tags'] = tags;
    return { info: infoJson(run.info), data, inputs: {} };
  }

  private async handle(rq: http.IncomingMessage, rs: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of rq) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const url = new URL(rq.url ?? '/', 'http://127.0.0.1');
    const query: Record<string, string> = {};
    url.searchParams.forEach((v, k) => (query[k] = v));
    const method = rq.method ?? 'GET';
    let body: unknown = undefined;
    const ctype = String(rq.headers['content-type'] ?? '');
    if (raw.length && ctype.startsWith('application/json')) {
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        body = undefined;
      }
    }
    this.requests.push({ method, path: url.pathname, query, headers: rq.headers, body, raw });
    if (this.hanging) {
      this.hungRequests++;
      return; // accepted, never answered
    }

    const delay = this.delays.shift();
    if (delay && !delay.after) await new Promise((r) => setTimeout(r, delay.ms));
    const json = (status: number, obj: unknown) => {
      if (rs.destroyed) return;
      rs.writeHead(status, { 'Content-Type': 'application/json' });
      rs.end(JSON.stringify(obj));
    };
    const fail = this.take(this.failures, url.pathname);
    if (fail) return json(fail.status, { error_code: fail.status === 429 ? 'REQUEST_LIMIT_EXCEEDED' : 'TEMPORARILY_UNAVAILABLE', message: `injected failure (HTTP ${fail.status})` });
    if (this.requireAuth !== null && rq.headers['authorization'] !== this.requireAuth) {
      return json(401, { error_code: 'UNAUTHENTICATED', message: 'You are not authenticated. Please see the documentation for details.' });
    }
    if (url.pathname === '/health') {
      rs.writeHead(200, { 'Content-Type': 'text/plain' });
      return void rs.end('OK');
    }
    if (url.pathname === '/version') {
      rs.writeHead(200, { 'Content-Type': 'text/plain' });
      return void rs.end('2.12.2');
    }
    try {
      const art = /^\/api\/2\.0\/mlflow-artifacts\/artifacts\/(.+)$/.exec(url.pathname);
      if (art) return await this.artifacts(method, decodeURIComponent(art[1]!), raw, rs);
      const m = /^\/(?:ajax-)?api\/2\.0\/mlflow\/(.+)$/.exec(url.pathname);
      const route = m ? ROUTES[m[1]!] : undefined;
      if (!route) {
        rs.writeHead(404, { 'Content-Type': 'text/html; charset=utf-8' });
        return void rs.end(HTML_404);
      }
      if (!route.methods.includes(method)) {
        rs.writeHead(405, { 'Content-Type': 'text/html; charset=utf-8' });
        return void rs.end(HTML_405);
      }
      let input: Record<string, unknown>;
      if (method === 'POST') {
        if (!ctype.startsWith('application/json')) {
          throw new ApiError('INVALID_PARAMETER_VALUE', "Bad Request. Content-Type must be one of ['application/json'].");
        }
        if (body === undefined || typeof body !== 'object' || body === null) throw new ApiError('INVALID_PARAMETER_VALUE', 'Malformed JSON request body');
        input = body as Record<string, unknown>;
      } else input = query;
      const out = await route.fn.call(this, input);
      if (this.take(this.drops, url.pathname)) {
        rq.socket.destroy();
        return;
      }
      if (delay?.after) await new Promise((r) => setTimeout(r, delay.ms));
      json(200, out);
      this.take(this.afterHooks, url.pathname)?.fn();
    } catch (e) {
      if (e instanceof ApiError) return json(STATUS_OF[e.code] ?? 400, { error_code: e.code, message: e.message });
      if (e instanceof TrackingError && e.errorCode) return json(STATUS_OF[e.errorCode] ?? e.httpStatus ?? 500, { error_code: e.errorCode, message: e.message });
      throw e;
    }
  }

  private async artifacts(method: string, rel: string, raw: Buffer, rs: http.ServerResponse): Promise<void> {
    const parts = rel.split('/');
    if (parts.some((p) => p === '..' || p === '.' || p === '') || rel.startsWith('/')) {
      rs.writeHead(400, { 'Content-Type': 'application/json' });
      return void rs.end(JSON.stringify({ error_code: 'INVALID_PARAMETER_VALUE', message: 'Invalid path' }));
    }
    const file = path.join(this.artifactsDir, ...parts);
    if (method === 'PUT') {
      await fsp.mkdir(path.dirname(file), { recursive: true });
      await fsp.writeFile(file, raw);
      rs.writeHead(200, { 'Content-Type': 'application/json' });
      return void rs.end('{}');
    }
    if (method === 'GET') {
      try {
        const data = await fsp.readFile(file);
        rs.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        return void rs.end(data);
      } catch {
        rs.writeHead(404, { 'Content-Type': 'application/json' });
        return void rs.end(JSON.stringify({ error_code: 'RESOURCE_DOES_NOT_EXIST', message: `File ${rel} does not exist` }));
      }
    }
    rs.writeHead(405, { 'Content-Type': 'text/html; charset=utf-8' });
    rs.end(HTML_405);
  }
}

type Handler = (this: MlflowTestServer, input: Record<string, unknown>) => Promise<unknown>;
interface Route {
  methods: string[];
  fn: Handler;
}

function tagsOf(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of (Array.isArray(v) ? v : []) as Array<{ key: string; value: unknown }>) out[t.key] = String(t.value ?? '');
  return out;
}

async function logBatch(srv: MlflowTestServer, b: Record<string, unknown>): Promise<unknown> {
  const runId = String(req(b, 'run_id'));
  const metrics = (Array.isArray(b['metrics']) ? b['metrics'] : []) as Array<Record<string, unknown>>;
  const params = (Array.isArray(b['params']) ? b['params'] : []) as Array<Record<string, unknown>>;
  const tags = (Array.isArray(b['tags']) ? b['tags'] : []) as Array<Record<string, unknown>>;
  if (metrics.length > 1000) throw new ApiError('INVALID_PARAMETER_VALUE', `A batch logging request can contain at most 1000 metrics. Got ${metrics.length} metrics. Please split up metrics across multiple requests and try again.`);
  if (params.length > 100) throw new ApiError('INVALID_PARAMETER_VALUE', `A batch logging request can contain at most 100 params. Got ${params.length} params. Please split up params across multiple requests and try again.`);
  if (tags.length > 100) throw new ApiError('INVALID_PARAMETER_VALUE', `A batch logging request can contain at most 100 tags. Got ${tags.length} tags. Please split up tags across multiple requests and try again.`);
  const total = metrics.length + params.length + tags.length;
  if (total > 1000) throw new ApiError('INVALID_PARAMETER_VALUE', `A batch logging request can contain at most 1000 total entities (metrics, params and tags). Got ${total} total entities. Please split up entities across multiple requests and try again.`);
  const ms: Metric[] = metrics.map((m, i) => ({
    key: String(req(m, 'key')),
    value: decodeValue(m['value'], `metrics[${i}].value`),
    timestamp: Number(req(m, 'timestamp')),
    step: Number(m['step'] ?? 0),
  }));
  await srv.store.getRun(runId);
  await srv.store.logBatch(runId, {
    params: params.map((p) => ({ key: String(req(p, 'key')), value: String(p['value'] ?? '') })),
    metrics: ms,
    tags: tags.map((t) => ({ key: String(req(t, 'key')), value: String(t['value'] ?? '') })),
  });
  return {};
}

const ROUTES: Record<string, Route> = {
  'experiments/get-by-name': {
    methods: ['GET'],
    async fn(q) {
      const name = String(req(q, 'experiment_name'));
      const e = await this.store.getExperimentByName(name);
      if (!e) throw new ApiError('RESOURCE_DOES_NOT_EXIST', `Could not find experiment with name '${name}'`);
      return { experiment: experimentJson(e) };
    },
  },
  'experiments/get': {
    methods: ['GET'],
    async fn(q) {
      return { experiment: experimentJson(await this.store.getExperiment(String(req(q, 'experiment_id')))) };
    },
  },
  'experiments/create': {
    methods: ['POST'],
    async fn(b) {
      const name = String(req(b, 'name'));
      return { experiment_id: await this.store.createExperiment(name, tagsOf(b['tags'])) };
    },
  },
  'experiments/search': {
    methods: ['POST', 'GET'],
    async fn() {
      const exps = await this.store.listExperiments();
      return exps.length ? { experiments: exps.map(experimentJson) } : {};
    },
  },
  'runs/create': {
    methods: ['POST'],
    async fn(b) {
      const info = await this.store.createRun({
        experimentId: String(req(b, 'experiment_id')),
        runName: b['run_name'] ? String(b['run_name']) : null,
        startTime: b['start_time'] !== undefined ? Number(b['start_time']) : Date.now(),
        tags: tagsOf(b['tags']),
        userId: b['user_id'] !== undefined ? String(b['user_id']) : '',
      });
      return { run: await this.fullRun(info.runId) };
    },
  },
  'runs/update': {
    methods: ['POST'],
    async fn(b) {
      const runId = String(b['run_id'] ?? req(b, 'run_uuid'));
      const run = await this.store.getRun(runId);
      const status = (b['status'] as MlflowRunStatus | undefined) ?? run.info.status;
      await this.store.setTerminated(runId, status, b['end_time'] !== undefined ? Number(b['end_time']) : (run.info.endTime ?? Date.now()));
      if (b['run_name']) await this.store.setTags(runId, { 'mlflow.runName': String(b['run_name']) });
      return { run_info: infoJson((await this.store.getRun(runId)).info) };
    },
  },
  'runs/get': {
    methods: ['GET'],
    async fn(q) {
      return { run: await this.fullRun(String(q['run_id'] ?? req(q, 'run_uuid'))) };
    },
  },
  'runs/search': {
    methods: ['POST'],
    async fn(b) {
      const ids = (Array.isArray(b['experiment_ids']) ? b['experiment_ids'] : []).map(String);
      const r = await this.store.searchRuns(
        ids,
        typeof b['filter'] === 'string' ? b['filter'] : '',
        Array.isArray(b['order_by']) ? (b['order_by'] as string[]) : [],
        b['max_results'] !== undefined ? Number(b['max_results']) : 1000,
        typeof b['page_token'] === 'string' ? b['page_token'] : undefined,
        (b['run_view_type'] as RunViewType | undefined) ?? 'ACTIVE_ONLY',
      );
      const out: Record<string, unknown> = {};
      if (r.runs.length) out['runs'] = await Promise.all(r.runs.map((x) => this.fullRun(x.info.runId)));
      if (r.nextPageToken) out['next_page_token'] = r.nextPageToken;
      return out;
    },
  },
  'runs/log-batch': {
    methods: ['POST'],
    async fn(b) {
      return logBatch(this, b);
    },
  },
  'runs/log-metric': {
    methods: ['POST'],
    async fn(b) {
      return logBatch(this, { run_id: b['run_id'] ?? b['run_uuid'], metrics: [{ key: req(b, 'key'), value: b['value'], timestamp: req(b, 'timestamp'), step: b['step'] ?? 0 }] });
    },
  },
  'runs/log-parameter': {
    methods: ['POST'],
    async fn(b) {
      return logBatch(this, { run_id: b['run_id'] ?? b['run_uuid'], params: [{ key: req(b, 'key'), value: req(b, 'value') }] });
    },
  },
  'runs/set-tag': {
    methods: ['POST'],
    async fn(b) {
      return logBatch(this, { run_id: b['run_id'] ?? b['run_uuid'], tags: [{ key: req(b, 'key'), value: b['value'] ?? '' }] });
    },
  },
  'metrics/get-history': {
    methods: ['GET'],
    async fn(q) {
      const runId = String(q['run_id'] ?? req(q, 'run_uuid'));
      const key = String(req(q, 'metric_key'));
      await this.store.getRun(runId);
      const h = await this.store.getMetricHistory(runId, key);
      return h.length ? { metrics: h.map(metricJson) } : {};
    },
  },
};

export async function startMlflowServer(opts: { storeRoot?: string } = {}): Promise<MlflowTestServer> {
  return new MlflowTestServer(opts).start();
}

// ---------------------------------------------------------------------------------------------------- golden store

/**
 * `test/fixtures/mlflow`: the store written by MLflow 2.12.2, the filter transcript recorded against it and the params
 * as MLflow's Python client logs them (data recorded once, part of the repository, so the tests never skip on them).
 */
export function goldenDir(): string {
  return path.join(packageRoot(), 'test', 'fixtures', 'mlflow');
}

export const GOLDEN_EXPERIMENT = '491431584305366172';
export const GOLDEN_PARENT = '9cb0162ad1a84d77848ded0787583728';
/** Run ids of the golden store by run name. */
export const GOLDEN_RUNS: Record<string, string> = {
  'sweep-parent': GOLDEN_PARENT,
  'mr=0.4': '9c92e97f4fc64373a2c61fbc2afa7752',
  'mr=0.6': '9dd795ba4daf445cb6a34ce9f9c653fd',
};

/**
 * A writable copy of the golden store in a temp folder. The filter transcript was recorded on four runs
 * (`sweep-parent`, `mr=0.4`, `mr=0.6`, `mr=0.75`) but the stored fixture holds the first three; with
 * `withMissingRun` the fourth is added (written by spark's file store) with the values the transcript implies:
 * mask_ratio 0.75, train/loss ending at 1.1333 (not < 1, highest), val_acc NaN, started last, a child of the parent.
 */
export async function copyGoldenStore(withMissingRun = true, idMap: Record<string, string> = {}): Promise<string> {
  const g = goldenDir();
  const dest = path.join(mkdtempSync(path.join(os.tmpdir(), 'spark-golden-')), 'mlruns');
  await fsp.cp(path.join(g, 'mlruns-written-by-mlflow-2.12.2'), dest, { recursive: true });
  const chmod = async (p: string): Promise<void> => {
    const st = await fsp.stat(p);
    await fsp.chmod(p, st.isDirectory() ? 0o755 : 0o644);
    if (st.isDirectory()) for (const n of await fsp.readdir(p)) await chmod(path.join(p, n));
  };
  await chmod(dest);
  // run ids of the store the transcript was recorded on (same runs, other uuids): rename folders, rewrite references
  const expDir = path.join(dest, GOLDEN_EXPERIMENT);
  for (const [from, to] of Object.entries(idMap)) {
    if (!existsSync(path.join(expDir, from))) throw new Error(`no run ${from} in the golden store`);
    await fsp.rename(path.join(expDir, from), path.join(expDir, to));
  }
  if (Object.keys(idMap).length) {
    for (const run of await fsp.readdir(expDir)) {
      for (const f of ['meta.yaml', 'tags/mlflow.parentRunId']) {
        const file = path.join(expDir, run, f);
        if (!existsSync(file)) continue;
        let text = await fsp.readFile(file, 'utf8');
        for (const [from, to] of Object.entries(idMap)) text = text.split(from).join(to);
        await fsp.writeFile(file, text);
      }
    }
  }
  const parentId = idMap[GOLDEN_PARENT] ?? GOLDEN_PARENT;
  if (withMissingRun) {
    const fs = new FileStore(dest);
    const info = await fs.createRun({
      experimentId: GOLDEN_EXPERIMENT,
      runName: 'mr=0.75',
      startTime: 1795688958356,
      userId: 'root',
      tags: { 'mlflow.parentRunId': parentId, team: 'vision', 'mlflow.user': 'root', 'mlflow.source.name': 'gen.py', 'mlflow.source.type': 'LOCAL' },
    });
    await fs.logBatch(info.runId, {
      params: [
        { key: 'lr', value: '0.001' },
        { key: 'mask_ratio', value: '0.75' },
        { key: 'opt/name', value: 'adamw' },
      ],
      metrics: [
        { key: 'train/loss', value: 1.8, timestamp: 1795688958356, step: 0 },
        { key: 'train/loss', value: 1.3, timestamp: 1795688958357, step: 1 },
        { key: 'train/loss', value: 1.1333333333333333, timestamp: 1795688958357, step: 2 },
        { key: 'val_acc', value: NaN, timestamp: 1795688958357, step: 0 },
      ],
    });
    await fs.setTerminated(info.runId, 'FINISHED', 1795688958358);
  }
  return dest;
}

/** A resolved pre-training config for tracker tests (never trained): `tracking` fields override the defaults. */
export function trackedConfig(uri: string, tracking: Partial<ExperimentConfig['tracking']> = {}): ExperimentConfig {
  return {
    name: 'q',
    description: null,
    task: 'pretrain',
    model: { encoder: 'resnet50', decoder: { type: 'light', width: 64 }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' },
    data: { source: 'synthetic', root: null, val_root: null, input_size: 64, crop_scale: [0.08, 1], crop_ratio: [0.75, 1.33], hflip: 0.5, workers: 0, prefetch: 2, synthetic_size: 64 },
    train: { epochs: 1, steps: null, batch_size: 8, accumulate: 1, optimizer: { name: 'lamb', base_lr: 0.0002, base_batch_size: 256, betas: null, eps: 1e-8, weight_decay: 0.04, weight_decay_end: 0.2, clip_grad: 5 }, warmup_epochs: 1, warmup_steps: null },
    runtime: { backend: 'cpu', seed: 1, threads: null },
    output: { dir: 'runs', checkpoint_every: 0, log_every: 1, reconstruct_every: 0, reconstruct_images: 4 },
    tracking: { enabled: true, uri, experiment: 'offline-exp', run_name: null, tags: {}, close_timeout: 5, ...tracking },
    sweep: null,
    finetune: null,
  };
}
