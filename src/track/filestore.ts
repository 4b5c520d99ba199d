/**
 * The MLflow file store (`./mlruns`), written exactly in the layout MLflow 2.x reads (spec mlflow.md §2.1, the
 * golden store written by MLflow 2.12.2) and read back (including stores written by MLflow itself).
 *
 *   <root>/.trash/   <root>/0/meta.yaml (Default)   <root>/<exp>/meta.yaml, tags/<key>
 *   <root>/<exp>/<run>/meta.yaml, metrics/<key> ("<ts> <value> <step>" lines), params/<key>, tags/<key>, artifacts/
 */
import { promises as fsp, existsSync } from 'node:fs';
import path from 'node:path';
import { randomUUID, randomInt } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { atomicWriteFile } from '../util/atomic.js';
import { TrackingError } from '../util/errors.js';
import { dumpMeta, parseMeta, type MetaValue } from './metayaml.js';
import {
  validateKey,
  truncate,
  formatNumber,
  parseMetricValue,
  MAX_PARAM_VALUE_LENGTH,
  MAX_TAG_VALUE_LENGTH,
  MAX_EXPERIMENT_NAME_LENGTH,
} from './keys.js';
import { filterRuns, sortRuns, paginate, SEARCH_MAX_RESULTS_DEFAULT } from './filter.js';
import {
  RUN_STATUS_CODE,
  RUN_STATUS_NAME,
  toKeyValues,
  type CreateRunOptions,
  type Experiment,
  type KeyValue,
  type LifecycleStage,
  type LogBatch,
  type Metric,
  type MlflowRunStatus,
  type Run,
  type RunInfo,
  type RunViewType,
  type SearchRunsResult,
  type TrackingStore,
} from './types.js';

const EXPERIMENT_ID_RE = /^[a-zA-Z0-9][\w-]{0,63}$/;
const RUN_ID_RE = /^[a-zA-Z0-9][\w-]{0,255}$/;
const RESERVED_EXPERIMENT_FOLDERS = new Set(['.trash', 'models']);
const RESERVED_RUN_FOLDERS = new Set(['tags', 'datasets', 'traces', 'models']);

/** A file-store location (plain path, `file:///abs`, `file:rel`) as an absolute path. */
export function fileStoreRoot(uriOrPath: string): string {
  if (uriOrPath.startsWith('file://')) return fileURLToPath(uriOrPath);
  if (uriOrPath.startsWith('file:')) return path.resolve(uriOrPath.slice(5));
  return path.resolve(uriOrPath);
}

function notFound(msg: string): TrackingError {
  return new TrackingError(msg, 'RESOURCE_DOES_NOT_EXIST', 404);
}
function invalid(msg: string): TrackingError {
  return new TrackingError(msg, 'INVALID_PARAMETER_VALUE', 400);
}

async function readText(file: string): Promise<string | null> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

async function listDirs(dir: string): Promise<string[]> {
  try {
    const ents = await fsp.readdir(dir, { withFileTypes: true });
    return ents.filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Files under `dir`, recursively, as keys joined with '/'. */
async function walkKeys(dir: string, prefix = ''): Promise<string[]> {
  let ents;
  try {
    ents = await fsp.readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: string[] = [];
  for (const e of ents.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (e.name.startsWith('.') && e.name.endsWith('.tmp')) continue; // our in-flight atomic writes
    if (e.isDirectory()) out.push(...(await walkKeys(path.join(dir, e.name), `${prefix}${e.name}/`)));
    else if (e.isFile()) out.push(`${prefix}${e.name}`);
  }
  return out;
}

async function readKeyValues(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const k of await walkKeys(dir)) out[k] = (await readText(path.join(dir, ...k.split('/')))) ?? '';
  return out;
}

/** Parse a metric file: `<ts> <value> <step>` lines (2-field legacy and 5-field 3.x lines too). */
export function parseMetricLines(key: string, text: string): Metric[] {
  const out: Metric[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length === 1 && f[0] === '') continue;
    if (f.length !== 2 && f.length !== 3 && f.length !== 5) throw new TrackingError(`malformed metric line for '${key}': '${line}'`, 'INVALID_STATE');
    out.push({ key, timestamp: Number(f[0]), value: parseMetricValue(f[1]!), step: f.length >= 3 ? Number(f[2]) : 0 });
  }
  return out;
}

/** MLflow's "latest": the maximum by (step, timestamp, value). */
export function latestMetric(history: Metric[]): Metric | undefined {
  let best: Metric | undefined;
  for (const m of history) {
    if (
      !best ||
      m.step > best.step ||
      (m.step === best.step && (m.timestamp > best.timestamp || (m.timestamp === best.timestamp && (m.value > best.value || Number.isNaN(best.value)))))
    ) {
      best = m;
    }
  }
  return best;
}

export function formatMetricLine(m: Metric): string {
  return `${Math.round(m.timestamp)} ${formatNumber(m.value)} ${Math.round(m.step)}\n`;
}

const ADJ = ['bold', 'calm', 'eager', 'fast', 'gentle', 'keen', 'lucky', 'merry', 'quiet', 'rare', 'sharp', 'wise', 'brave', 'bright'];
const NOUN = ['fox', 'owl', 'lynx', 'crane', 'otter', 'heron', 'wolf', 'hare', 'finch', 'moth', 'seal', 'toad', 'yak', 'koi'];
/** A random run name in MLflow's style (`calm-owl-417`). */
export function randomRunName(): string {
  return `${ADJ[randomInt(ADJ.length)]}-${NOUN[randomInt(NOUN.length)]}-${randomInt(1000)}`;
}

export interface FileStoreOptions {
  /** Artifact location of new experiments (default `file://<root>/<id>`). */
  artifactLocation?: (experimentId: string) => string;
}

export class FileStore implements TrackingStore {
  readonly kind = 'file' as const;
  readonly uri: string;
  readonly root: string;
  private runExp = new Map<string, string>();

  constructor(uriOrPath: string, private readonly opts: FileStoreOptions = {}) {
    this.root = fileStoreRoot(uriOrPath);
    this.uri = this.root;
  }

  // ------------------------------------------------------------------------------------------ layout

  /** Create the store on first write, as MLflow does: root, .trash/, experiment 0 "Default". */
  async ensureRoot(): Promise<void> {
    if (!existsSync(this.root)) {
      await fsp.mkdir(this.root, { recursive: true });
      await this.writeExperimentMeta('0', 'Default', Date.now());
    }
    await fsp.mkdir(path.join(this.root, '.trash'), { recursive: true });
  }

  private artifactLocationFor(id: string): string {
    return this.opts.artifactLocation ? this.opts.artifactLocation(id) : pathToFileURL(path.join(this.root, id)).href;
  }

  private async writeExperimentMeta(id: string, name: string, time: number): Promise<void> {
    const meta: Record<string, MetaValue> = {
      artifact_location: this.artifactLocationFor(id),
      creation_time: time,
      experiment_id: id,
      last_update_time: time,
      lifecycle_stage: 'active',
      name,
    };
    await atomicWriteFile(path.join(this.root, id, 'meta.yaml'), dumpMeta(meta));
  }

  private async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const lock = path.join(this.root, '.spark-experiments.lock');
    const deadline = Date.now() + 15000;
    for (;;) {
      try {
        const fh = await fsp.open(lock, 'wx');
        await fh.close();
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        try {
          const st = await fsp.stat(lock);
          if (Date.now() - st.mtimeMs > 30000) await fsp.rm(lock, { force: true });
        } catch {
          /* gone already */
        }
        if (Date.now() > deadline) throw new TrackingError(`timed out waiting for the lock ${lock}`, 'INTERNAL_ERROR');
        await new Promise((r) => setTimeout(r, 20 + randomInt(30)));
      }
    }
    try {
      return await fn();
    } finally {
      await fsp.rm(lock, { force: true });
    }
  }

  // ------------------------------------------------------------------------------------------ experiments

  private async readExperiment(id: string): Promise<Experiment | null> {
    const text = await readText(path.join(this.root, id, 'meta.yaml'));
    if (text === null) return null;
    const m = parseMeta(text);
    if (String(m['experiment_id']) !== id) return null; // MLflow ignores an experiment whose id is not its folder
    const tags = await readKeyValues(path.join(this.root, id, 'tags'));
    return {
      experimentId: id,
      name: String(m['name'] ?? ''),
      artifactLocation: String(m['artifact_location'] ?? ''),
      lifecycleStage: (m['lifecycle_stage'] === 'deleted' ? 'deleted' : 'active') as LifecycleStage,
      creationTime: typeof m['creation_time'] === 'number' ? m['creation_time'] : null,
      lastUpdateTime: typeof m['last_update_time'] === 'number' ? m['last_update_time'] : null,
      tags,
    };
  }

  /** Every experiment, active and deleted. */
  async allExperiments(): Promise<Experiment[]> {
    const out: Experiment[] = [];
    for (const d of await listDirs(this.root)) {
      if (RESERVED_EXPERIMENT_FOLDERS.has(d) || d.startsWith('.') || !EXPERIMENT_ID_RE.test(d)) continue;
      const e = await this.readExperiment(d);
      if (e) out.push(e);
    }
    return out;
  }

  async listExperiments(): Promise<Experiment[]> {
    return (await this.allExperiments()).filter((e) => e.lifecycleStage === 'active');
  }

  async getExperiment(experimentId: string): Promise<Experiment> {
    const e = EXPERIMENT_ID_RE.test(experimentId) ? await this.readExperiment(experimentId) : null;
    if (!e) throw notFound(`Could not find experiment with ID ${experimentId}`);
    return e;
  }

  async getExperimentByName(name: string): Promise<Experiment | null> {
    const all = (await this.allExperiments()).filter((e) => e.name === name);
    return all.find((e) => e.lifecycleStage === 'active') ?? all[0] ?? null;
  }

  async createExperiment(name: string, tags?: Record<string, string>): Promise<string> {
    if (!name || typeof name !== 'string') throw invalid(`Invalid experiment name: '${name}'`);
    if (name.length > MAX_EXPERIMENT_NAME_LENGTH) throw invalid(`Experiment name exceeds the maximum length of ${MAX_EXPERIMENT_NAME_LENGTH}`);
    for (const k of Object.keys(tags ?? {})) validateKey('tag', k);
    await this.ensureRoot();
    return this.withLock(async () => {
      if (await this.getExperimentByName(name)) throw new TrackingError(`Experiment '${name}' already exists.`, 'RESOURCE_ALREADY_EXISTS', 400);
      let id = '';
      for (let i = 0; i < 100; i++) {
        id = String(randomInt(1, 10)) + Array.from({ length: 17 }, () => randomInt(10)).join('');
        if (!existsSync(path.join(this.root, id))) break;
      }
      await this.writeExperimentMeta(id, name, Date.now());
      for (const [k, v] of Object.entries(tags ?? {})) {
        await atomicWriteFile(path.join(this.root, id, 'tags', ...k.split('/')), truncate(v, MAX_TAG_VALUE_LENGTH));
      }
      return id;
    });
  }

  async getOrCreateExperiment(name: string, tags?: Record<string, string>): Promise<string> {
    const e = await this.getExperimentByName(name);
    if (e) {
      if (e.lifecycleStage === 'deleted') {
        throw new TrackingError(
          `experiment '${name}' (id ${e.experimentId}) is deleted in ${this.uri}: restore it (\`mlflow experiments restore --experiment-id ${e.experimentId}\`) or choose another name`,
          'INVALID_STATE',
        );
      }
      return e.experimentId;
    }
    try {
      return await this.createExperiment(name, tags);
    } catch (err) {
      if (err instanceof TrackingError && err.errorCode === 'RESOURCE_ALREADY_EXISTS') {
        const again = await this.getExperimentByName(name);
        if (again) return again.experimentId;
      }
      throw err;
    }
  }

  // ------------------------------------------------------------------------------------------ runs

  private async experimentOf(runId: string): Promise<string> {
    const cached = this.runExp.get(runId);
    if (cached && existsSync(path.join(this.root, cached, runId, 'meta.yaml'))) return cached;
    if (RUN_ID_RE.test(runId)) {
      for (const d of await listDirs(this.root)) {
        if (RESERVED_EXPERIMENT_FOLDERS.has(d) || d.startsWith('.')) continue;
        if (existsSync(path.join(this.root, d, runId, 'meta.yaml'))) {
          this.runExp.set(runId, d);
          return d;
        }
      }
    }
    throw notFound(`Run '${runId}' not found`);
  }

  private async runDir(runId: string): Promise<string> {
    return path.join(this.root, await this.experimentOf(runId), runId);
  }

  private async readRunMeta(runDir: string): Promise<Record<string, unknown>> {
    const text = await readText(path.join(runDir, 'meta.yaml'));
    if (text === null) throw notFound(`Run '${path.basename(runDir)}' not found`);
    return parseMeta(text);
  }

  private runInfoFrom(m: Record<string, unknown>, tags: Record<string, string>): RunInfo {
    const st = m['status'];
    const status: MlflowRunStatus =
      typeof st === 'number' ? (RUN_STATUS_NAME[st] ?? 'RUNNING') : typeof st === 'string' && st in RUN_STATUS_CODE ? (st as MlflowRunStatus) : 'RUNNING';
    const runName = m['run_name'];
    return {
      runId: String(m['run_id'] ?? m['run_uuid']),
      runName: runName !== undefined && runName !== null && runName !== '' ? String(runName) : (tags['mlflow.runName'] ?? ''),
      experimentId: String(m['experiment_id']),
      userId: m['user_id'] === null || m['user_id'] === undefined ? '' : String(m['user_id']),
      status,
      startTime: Number(m['start_time']),
      endTime: m['end_time'] === null || m['end_time'] === undefined ? null : Number(m['end_time']),
      artifactUri: String(m['artifact_uri'] ?? ''),
      lifecycleStage: m['lifecycle_stage'] === 'deleted' ? 'deleted' : 'active',
    };
  }

  private async writeRunMeta(runDir: string, info: RunInfo, extra: Record<string, MetaValue> = {}): Promise<void> {
    const meta: Record<string, MetaValue> = {
      artifact_uri: info.artifactUri,
      end_time: info.endTime,
      entry_point_name: '',
      experiment_id: info.experimentId,
      lifecycle_stage: info.lifecycleStage,
      run_id: info.runId,
      run_name: info.runName,
      run_uuid: info.runId,
      source_name: '',
      source_type: 4,
      source_version: '',
      start_time: info.startTime,
      status: RUN_STATUS_CODE[info.status],
      tags: [],
      user_id: info.userId,
      ...extra,
    };
    await atomicWriteFile(path.join(runDir, 'meta.yaml'), dumpMeta(meta));
  }

  async createRun(opts: CreateRunOptions): Promise<RunInfo> {
    const exp = await this.getExperiment(opts.experimentId);
    if (exp.lifecycleStage !== 'active') throw invalid(`The experiment ${opts.experimentId} must be in the 'active' state. Current state is ${exp.lifecycleStage}.`);
    const tags = { ...(opts.tags ?? {}) };
    for (const k of Object.keys(tags)) validateKey('tag', k);
    const tagName = tags['mlflow.runName'];
    if (opts.runName && tagName !== undefined && tagName !== opts.runName) {
      throw invalid(`Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values (run_name='${opts.runName}', mlflow.runName='${tagName}').`);
    }
    const runName = opts.runName || tagName || randomRunName();
    tags['mlflow.runName'] = runName;
    const runId = randomUUID().replace(/-/g, '');
    const runDir = path.join(this.root, exp.experimentId, runId);
    const info: RunInfo = {
      runId,
      runName,
      experimentId: exp.experimentId,
      userId: opts.userId ?? tags['mlflow.user'] ?? '',
      status: 'RUNNING',
      startTime: Math.round(opts.startTime ?? Date.now()),
      endTime: null,
      artifactUri: `${exp.artifactLocation.replace(/\/+$/, '')}/${runId}/artifacts`,
      lifecycleStage: 'active',
    };
    await fsp.mkdir(runDir, { recursive: true });
    await this.writeRunMeta(runDir, info);
    for (const d of ['metrics', 'params', 'tags']) await fsp.mkdir(path.join(runDir, d), { recursive: true });
    this.runExp.set(runId, exp.experimentId);
    for (const [k, v] of Object.entries(tags)) await this.writeTag(runDir, k, v);
    return info;
  }

  private async writeTag(runDir: string, key: string, value: string): Promise<void> {
    await atomicWriteFile(path.join(runDir, 'tags', ...key.split('/')), truncate(String(value), MAX_TAG_VALUE_LENGTH));
  }

  private async activeRunDir(runId: string): Promise<{ dir: string; meta: Record<string, unknown> }> {
    const dir = await this.runDir(runId);
    const meta = await this.readRunMeta(dir);
    if (meta['lifecycle_stage'] === 'deleted') {
      throw invalid(`The run ${runId} must be in the 'active' state. Current state is deleted.`);
    }
    return { dir, meta };
  }

  async logBatch(runId: string, batch: LogBatch): Promise<void> {
    const params = batch.params ?? [];
    const metrics = batch.metrics ?? [];
    const tags = batch.tags ?? [];
    // validate everything before writing anything
    const seen = new Map<string, string>();
    for (const p of params) {
      validateKey('param', p.key);
      const v = truncate(String(p.value), MAX_PARAM_VALUE_LENGTH);
      if (seen.has(p.key) && seen.get(p.key) !== v) throw invalid(`Duplicate parameter keys have been submitted: ['${p.key}']. Please ensure the request contains only one param value per param key.`);
      seen.set(p.key, v);
    }
    for (const m of metrics) {
      validateKey('metric', m.key);
      if (typeof m.value !== 'number') throw invalid(`Got invalid value ${String(m.value)} for metric '${m.key}' (timestamp=${m.timestamp}). Please specify value as a valid double (64-bit floating point)`);
      if (!Number.isFinite(m.timestamp)) throw invalid(`Got invalid timestamp ${m.timestamp} for metric '${m.key}'`);
      if (!Number.isFinite(m.step)) throw invalid(`Got invalid step ${m.step} for metric '${m.key}'`);
    }
    for (const t of tags) validateKey('tag', t.key);
    const { dir, meta } = await this.activeRunDir(runId);
    // params (immutable)
    for (const [key, value] of seen) {
      const file = path.join(dir, 'params', ...key.split('/'));
      const old = await readText(file);
      if (old !== null) {
        if (old !== value) {
          throw invalid(
            `Changing param values is not allowed. Param with key='${key}' was already logged with value='${old}' for run ID='${runId}'. Attempted logging new value '${value}'.`,
          );
        }
        continue;
      }
      await this.safeWrite(file, () => atomicWriteFile(file, value));
    }
    // metrics, one append per key
    const byKey = new Map<string, string>();
    for (const m of metrics) byKey.set(m.key, (byKey.get(m.key) ?? '') + formatMetricLine(m));
    for (const [key, lines] of byKey) {
      const file = path.join(dir, 'metrics', ...key.split('/'));
      await this.safeWrite(file, async () => {
        await fsp.mkdir(path.dirname(file), { recursive: true });
        await fsp.appendFile(file, lines);
      });
    }
    // tags
    for (const t of tags) {
      const file = path.join(dir, 'tags', ...t.key.split('/'));
      await this.safeWrite(file, () => this.writeTag(dir, t.key, t.value));
      if (t.key === 'mlflow.runName') {
        const info = this.runInfoFrom(meta, {});
        await this.writeRunMeta(dir, { ...info, runName: t.value });
      }
    }
  }

  /** Turn a file/folder clash (metric `a` and `a/b`) into a clear error. */
  private async safeWrite(file: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'EEXIST') {
        throw invalid(`cannot write '${file}': a key is both a value and a folder of other keys (e.g. 'a' and 'a/b')`);
      }
      throw e;
    }
  }

  async logParams(runId: string, params: Record<string, string> | KeyValue[]): Promise<void> {
    await this.logBatch(runId, { params: toKeyValues(params) });
  }

  async logMetrics(runId: string, metrics: Metric[]): Promise<void> {
    await this.logBatch(runId, { metrics });
  }

  async setTags(runId: string, tags: Record<string, string> | KeyValue[]): Promise<void> {
    await this.logBatch(runId, { tags: toKeyValues(tags) });
  }

  async setTerminated(runId: string, status: MlflowRunStatus, endTime = Date.now()): Promise<void> {
    if (!(status in RUN_STATUS_CODE)) throw invalid(`Invalid run status '${status}'`);
    const dir = await this.runDir(runId);
    const meta = await this.readRunMeta(dir);
    const info = this.runInfoFrom(meta, {});
    const extra: Record<string, MetaValue> = {};
    if (typeof meta['deleted_time'] === 'number' || meta['deleted_time'] === null) extra['deleted_time'] = meta['deleted_time'] as number | null;
    // RUNNING (a resumed run) clears end_time; the terminal states set it
    await this.writeRunMeta(dir, { ...info, status, endTime: status === 'RUNNING' ? null : Math.round(endTime) }, extra);
  }

  /** Local folder of a run's artifacts (file: artifact URIs only). */
  async artifactDir(runId: string): Promise<string> {
    const dir = await this.runDir(runId);
    const info = this.runInfoFrom(await this.readRunMeta(dir), {});
    if (!info.artifactUri.startsWith('file:') && !info.artifactUri.startsWith('/')) {
      throw new TrackingError(`artifact URI '${info.artifactUri}' of run ${runId} is not a local folder`, 'UNSUPPORTED_ARTIFACT_URI');
    }
    return fileStoreRoot(info.artifactUri);
  }

  async logArtifact(runId: string, localPath: string, artifactPath?: string | null): Promise<void> {
    const dest = path.join(await this.artifactDir(runId), ...(artifactPath ? artifactPath.split('/').filter(Boolean) : []), path.basename(localPath));
    const st = await fsp.stat(localPath);
    if (st.isDirectory()) await fsp.cp(localPath, dest, { recursive: true });
    else await atomicWriteFile(dest, await fsp.readFile(localPath));
  }

  async getRun(runId: string): Promise<Run> {
    return this.readRun(await this.runDir(runId));
  }

  private async readRun(dir: string): Promise<Run> {
    const meta = await this.readRunMeta(dir);
    const tags = await readKeyValues(path.join(dir, 'tags'));
    const params = await readKeyValues(path.join(dir, 'params'));
    const metrics: Record<string, number> = {};
    for (const k of await walkKeys(path.join(dir, 'metrics'))) {
      const last = latestMetric(parseMetricLines(k, (await readText(path.join(dir, 'metrics', ...k.split('/')))) ?? ''));
      if (last) metrics[k] = last.value;
    }
    return { info: this.runInfoFrom(meta, tags), data: { metrics, params, tags } };
  }

  /** Every readable run of an experiment (malformed run folders are skipped, as MLflow does). */
  async experimentRuns(experimentId: string, runViewType: RunViewType = 'ACTIVE_ONLY'): Promise<Run[]> {
    const out: Run[] = [];
    const expDir = path.join(this.root, experimentId);
    for (const d of await listDirs(expDir)) {
      if (RESERVED_RUN_FOLDERS.has(d) || !RUN_ID_RE.test(d)) continue;
      if (!existsSync(path.join(expDir, d, 'meta.yaml'))) continue;
      let run: Run;
      try {
        run = await this.readRun(path.join(expDir, d));
      } catch {
        continue;
      }
      if (run.info.experimentId !== experimentId || run.info.runId !== d) continue;
      const stage = run.info.lifecycleStage;
      if (runViewType === 'ACTIVE_ONLY' && stage !== 'active') continue;
      if (runViewType === 'DELETED_ONLY' && stage !== 'deleted') continue;
      this.runExp.set(d, experimentId);
      out.push(run);
    }
    return out;
  }

  async searchRuns(
    experimentIds: string[],
    filter = '',
    orderBy: string[] = [],
    maxResults = SEARCH_MAX_RESULTS_DEFAULT,
    pageToken?: string,
    runViewType: RunViewType = 'ACTIVE_ONLY',
  ): Promise<SearchRunsResult> {
    const runs: Run[] = [];
    for (const id of experimentIds) runs.push(...(await this.experimentRuns(id, runViewType)));
    const sorted = sortRuns(filterRuns(runs, filter), orderBy);
    const page = paginate(sorted, pageToken, maxResults);
    return page.nextPageToken ? { runs: page.items, nextPageToken: page.nextPageToken } : { runs: page.items };
  }

  async getMetricHistory(runId: string, key: string): Promise<Metric[]> {
    validateKey('metric', key);
    const dir = await this.runDir(runId);
    const text = await readText(path.join(dir, 'metrics', ...key.split('/')));
    return text === null ? [] : parseMetricLines(key, text);
  }
}

/** One experiment of a store with its runs and every metric history (what `compare`, `sync` and tests read). */
export interface StoreSnapshot {
  root: string;
  experiments: Array<Experiment & { runs: Array<Run & { history: Record<string, Metric[]> }> }>;
}

/** Read a whole file store (written by spark or by MLflow). */
export async function readStore(uriOrPath: string, opts: { runViewType?: RunViewType } = {}): Promise<StoreSnapshot> {
  const store = new FileStore(uriOrPath);
  if (!existsSync(store.root)) throw notFound(`no MLflow file store at ${store.root}`);
  const experiments: StoreSnapshot['experiments'] = [];
  for (const e of await store.allExperiments()) {
    const runs = [];
    for (const r of sortRuns(await store.experimentRuns(e.experimentId, opts.runViewType ?? 'ALL'), [])) {
      const history: Record<string, Metric[]> = {};
      for (const k of Object.keys(r.data.metrics)) history[k] = await store.getMetricHistory(r.info.runId, k);
      runs.push({ ...r, history });
    }
    experiments.push({ ...e, runs });
  }
  return { root: store.root, experiments };
}
