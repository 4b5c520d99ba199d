/**
 * Sweep execution. `runSweep` expands (or reloads) a sweep into its folder, creates the parent MLflow run, runs the
 * trials one after another in this process (default) or as `--parallel N` child processes, records every trial in
 * sweep.json (a failing trial is FAILED and the sweep goes on unless `failFast`), and at the end writes the summary
 * and logs it on the parent run. `runSweepTrial` runs one trial of an existing sweep folder: the entry point of a
 * `--parallel` child and of a Slurm array task (`spark sweep trial <sweep-dir> <i>`).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExperimentConfig } from '../spec/types.js';
import type { RunEvent, RunStatus, RunSubscriber } from '../train/events.js';
import { atomicWriteFile } from '../util/atomic.js';
import { UsageError } from '../util/errors.js';
import { expandSweep, parseSweepSection, varyingPaths, type SpecFns } from './expand.js';
import { bestTrials, summaryCsv, summaryMarkdown } from './summary.js';
import { parentParams } from './definition.js';
import { sanitizeKey } from '../track/keys.js';
import { trialLabel } from '../ui/trial-label.js';
import { configParams, openSweepTracker, resolveTrackingUri, type SweepTracker } from './tracker.js';
import {
  hasCheckpoint,
  newSweepId,
  readSweep,
  trialRecord,
  updateSweep,
  updateTrial,
  writeSweep,
  writeTrialSpec,
} from './state.js';
import type { SweepFile, Trial, TrialRecord, TrialStatus } from './types.js';
import { commandHint, shellQuote } from '../util/hint.js';

/** What a trial runner is asked to do. */
export interface TrialRunRequest {
  sweepDir: string;
  trial: TrialRecord;
  /** How many trials the sweep has (for the `trial 2/3` label). */
  trials?: number;
  /** Absolute trial spec file. */
  specFile: string;
  /** Absolute run folder of the trial. */
  runDir: string;
  /** Resume from the checkpoint in runDir. */
  resume: boolean;
  parentRunId: string | null;
  /** Tags for the child MLflow run (`sweep.trial`, ...). */
  tags: Record<string, string>;
  /** Console subscriber for this trial (board row / plain lines). */
  subscriber?: RunSubscriber;
  signal?: AbortSignal;
}

export interface TrialRunResult {
  status: RunStatus;
  step: number | null;
  finalLoss: number | null;
  mlflowRunId: string | null;
  runDir?: string;
  error?: string;
  /** Tracking calls the run could not send before it ended, and the command that sends them (runExperiment's). */
  trackingReminder?: string;
}

export type TrialRunner = (req: TrialRunRequest) => Promise<TrialRunResult>;

/** The console the sweep drives (the UI module's `createSweepConsole`; tests inject their own). */
export interface SweepConsoleLike {
  trialSubscriber(index: number): RunSubscriber;
  setStatus(index: number, status: 'pending' | 'running' | 'finished' | 'failed' | 'skipped' | 'killed', info?: { loss?: number | null; message?: string; runId?: string }): void;
  close(): Promise<void>;
}

export interface SweepDeps {
  /** Runs one trial (default: runExperiment in this process, or a child process when parallel > 1). */
  runTrial?: TrialRunner;
  /** Tracking (default: opened from the tracking URI when tracking is enabled); null = none. */
  tracker?: SweepTracker | null;
  /** Console (default: the UI module's sweep board / plain lines); null = none. */
  console?: SweepConsoleLike | null;
  /** Spec functions (tests). */
  spec?: SpecFns;
  /** Lines for the user (default: stderr). */
  log?: (line: string) => void;
}

/** The loaded spec, as `loadExperiment` returns it. */
export interface LoadedSpec {
  config: ExperimentConfig;
  specPath: string;
  raw: object;
}

export interface RunSweepOptions {
  /** The spec (required unless resumeDir). */
  loaded?: LoadedSpec;
  /** `--sweep path=v1,v2` grid axes. */
  cliSweeps?: string[];
  /** Resume an existing sweep folder: FINISHED trials are skipped, an interrupted one resumes from its checkpoint. */
  resumeDir?: string;
  /** Trials at a time (child processes when > 1). */
  parallel?: number;
  /** Stop launching trials after the first failure. */
  failFast?: boolean;
  /** Plain console lines instead of the board. */
  plain?: boolean;
}

export interface SweepResult {
  sweepDir: string;
  sweep: SweepFile;
  status: SweepFile['status'];
  /** 0 all finished, 1 a trial failed or was not run, 130 interrupted. */
  exitCode: number;
}

const uiStatus: Record<TrialStatus, 'pending' | 'running' | 'finished' | 'failed' | 'killed'> = {
  PENDING: 'pending',
  RUNNING: 'running',
  FINISHED: 'finished',
  FAILED: 'failed',
  KILLED: 'killed',
};

function defaultLog(line: string): void {
  process.stderr.write(line + '\n');
}

// ---------------------------------------------------------------------------------------------------------------
// creating a sweep folder

export interface CreateSweepOptions {
  loaded: LoadedSpec;
  cliSweeps?: string[];
  launcher: SweepFile['launcher'];
  spec?: SpecFns;
  /** Tracker; undefined = open from the URI when tracking is enabled; null = none. */
  tracker?: SweepTracker | null;
  /** Create the parent run now (default); false: the caller does (`createSweepParent`), e.g. after sbatch. */
  parent?: boolean;
  now?: Date;
}

/** Expand and validate every trial, then write the sweep folder, the trial specs and the parent run. */
export async function createSweep(o: CreateSweepOptions): Promise<{ dir: string; sweep: SweepFile; tracker: SweepTracker | null }> {
  const { loaded } = o;
  const cliSweeps = o.cliSweeps ?? [];
  // every trial is validated before anything is written or run
  const trials: Trial[] = expandSweep(loaded.raw, cliSweeps, { file: loaded.specPath, fns: o.spec });
  const section = parseSweepSection(loaded.raw, loaded.specPath);
  const base = loaded.config;
  const uri = base.tracking.enabled ? resolveTrackingUri(base.tracking.uri) : null;
  const id = newSweepId(o.now);
  const dir = path.resolve(base.output.dir, base.name, `sweep-${id}`);
  await fsp.mkdir(dir, { recursive: true });
  for (const t of trials) {
    if (uri) t.config.tracking.uri = uri;
    await writeTrialSpec(dir, t, `spark sweep ${id} of ${loaded.specPath}`, trials.length);
  }
  const now = (o.now ?? new Date()).toISOString();
  const sweep: SweepFile = {
    version: 1,
    id,
    name: base.name,
    specPath: path.resolve(loaded.specPath),
    createdAt: now,
    updatedAt: now,
    cliSweeps,
    metrics: section.metrics,
    varying: varyingPaths(trials.map((t) => t.overrides)),
    status: 'PENDING',
    tracking: { enabled: base.tracking.enabled, uri, experiment: base.tracking.experiment, parentRunId: null },
    launcher: o.launcher,
    trials: trials.map(trialRecord),
    best: {},
  };
  let tracker: SweepTracker | null = null;
  if (uri) {
    try {
      tracker = o.tracker === undefined ? await openSweepTracker(uri) : o.tracker;
    } catch (e) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw e;
    }
  }
  // the parent run; a store that refuses it leaves no half-made sweep folder behind
  try {
    if (tracker && o.parent !== false) sweep.tracking.parentRunId = await createSweepParent(dir, sweep, base, tracker);
  } catch (e) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw e;
  }
  await writeSweep(dir, sweep);
  return { dir, sweep, tracker };
}

/**
 * Create the sweep's parent MLflow run: the base config's params without the swept keys, the sweep definition
 * (`sweep.<path>` = the values as a Python list), `sweep.trials`, and the `spark.sweep` / `sweep.*` tags.
 */
export async function createSweepParent(dir: string, sweep: SweepFile, base: ExperimentConfig, tracker: SweepTracker): Promise<string> {
  const params = parentParams(configParams(base), sweep.trials.map((t) => t.overrides));
  params['sweep.varying'] = sweep.varying.join(',').slice(0, 6000) || '-';
  return tracker.createParent({
    experiment: sweep.tracking.experiment,
    runName: `${base.tracking.run_name ?? base.name} sweep ${sweep.id}`,
    params,
    specPath: sweep.specPath,
    tags: {
      ...base.tracking.tags,
      'spark.sweep': '1',
      'sweep.id': sweep.id,
      'sweep.dir': dir,
      'sweep.trials': String(sweep.trials.length),
      'spark.launcher': sweep.launcher.type,
    },
  });
}

// ---------------------------------------------------------------------------------------------------------------
// running one trial

/** MLflow tags of a trial's child run. */
export function trialTags(sweep: SweepFile, t: TrialRecord, dir: string): Record<string, string> {
  return { 'sweep.trial': String(t.index), 'sweep.name': t.name.slice(0, 5000), 'sweep.id': sweep.id, 'sweep.dir': dir };
}

/** Adds the sweep membership to `run-start` events before they reach the console. */
function withSweepInfo(sub: RunSubscriber | undefined, dir: string, t: TrialRecord, trials: number): RunSubscriber | undefined {
  if (!sub) return undefined;
  return {
    onEvent: (e) => sub.onEvent(e.type === 'run-start' && !e.sweep ? { ...e, sweep: { sweepDir: dir, trial: t.index, trialName: t.name, params: t.params, trials } } : e),
    close: sub.close ? () => sub.close!() : undefined,
  };
}

/**
 * Run trial `index` of the sweep in `dir` with `runner`, recording RUNNING and then the outcome in sweep.json. A
 * FINISHED trial is skipped (returned as is); a trial whose run folder holds a checkpoint is resumed.
 */
export async function executeTrial(
  dir: string,
  index: number,
  runner: TrialRunner,
  o: { subscriber?: RunSubscriber; signal?: AbortSignal; onStart?: (t: TrialRecord) => void; log?: (line: string) => void } = {},
): Promise<TrialRecord> {
  let sweep = await readSweep(dir);
  const t0 = sweep.trials[index];
  if (!t0) throw new UsageError(`${dir}: the sweep has ${sweep.trials.length} trials (indices 0-${sweep.trials.length - 1}), there is no trial index ${index}`);
  if (t0.status === 'FINISHED') return t0;
  const runDir = path.resolve(dir, t0.runDir);
  const resume = hasCheckpoint(runDir);
  sweep = await updateSweep(dir, (s) => {
    if (s.status === 'PENDING') s.status = 'RUNNING';
    const t = s.trials[index]!;
    t.status = 'RUNNING';
    t.attempts += 1;
    t.startedAt = new Date().toISOString();
    t.endedAt = null;
    t.error = null;
  });
  const t = sweep.trials[index]!;
  o.onStart?.(t);
  let result: TrialRunResult;
  try {
    result = await runner({
      sweepDir: dir,
      trial: t,
      trials: sweep.trials.length,
      specFile: path.resolve(dir, t.specFile),
      runDir,
      resume,
      parentRunId: sweep.tracking.parentRunId,
      tags: trialTags(sweep, t, dir),
      subscriber: withSweepInfo(o.subscriber, dir, t, sweep.trials.length),
      signal: o.signal,
    });
  } catch (e) {
    const err = e as Error;
    result = { status: 'FAILED', step: null, finalLoss: null, mlflowRunId: null, error: err?.message ?? String(e) };
  }
  if (result.trackingReminder) o.log?.(`sweep: ${trialLabel(index, sweep.trials.length)}: ${result.trackingReminder}`);
  const after = await updateTrial(dir, index, (r) => {
    r.status = result.status;
    r.step = result.step ?? r.step;
    r.finalLoss = result.finalLoss ?? (result.status === 'FINISHED' ? null : r.finalLoss);
    r.mlflowRunId = result.mlflowRunId ?? r.mlflowRunId;
    if (result.finalLoss !== null && result.finalLoss !== undefined) r.metrics = { ...r.metrics, loss: result.finalLoss };
    r.error = result.status === 'FINISHED' ? null : result.error ?? (result.status === 'KILLED' ? 'interrupted' : 'failed');
    r.endedAt = new Date().toISOString();
  });
  return after.trials[index]!;
}

/** The default in-process runner: load the trial spec and call the trainer's runExperiment. */
export const inProcessRunner: TrialRunner = async (req) => {
  const { loadExperiment } = await import('../spec/index.js');
  const { runExperiment } = await import('../train/run.js');
  const loaded = await loadExperiment(req.specFile);
  const res = await runExperiment({
    config: loaded.config,
    specPath: loaded.specPath,
    resolvedYaml: loaded.resolvedYaml,
    ...(req.resume ? { resumeDir: req.runDir } : { runDir: req.runDir }),
    subscribers: req.subscriber ? [req.subscriber] : [],
    console: false,
    tracking: { parentRunId: req.parentRunId, tags: req.tags },
    signal: req.signal,
    sweep: { sweepDir: req.sweepDir, trial: req.trial.index, trialName: req.trial.name, params: req.trial.params, ...(req.trials ? { trials: req.trials } : {}) },
  });
  return {
    status: res.status,
    step: res.step ?? null,
    finalLoss: res.finalLoss ?? null,
    mlflowRunId: res.mlflowRunId ?? null,
    runDir: res.runDir,
    error: res.error,
    ...(res.trackingReminder ? { trackingReminder: res.trackingReminder } : {}),
  };
};

// ---------------------------------------------------------------------------------------------------------------
// child processes

/** The command that runs the spark CLI: $SPARK_CLI (a JSON array or a path), else this installation's main. */
export function sparkCommand(env: NodeJS.ProcessEnv = process.env): string[] {
  const override = env['SPARK_CLI'];
  if (override) {
    if (override.trim().startsWith('[')) return JSON.parse(override) as string[];
    return [override];
  }
  const here = path.dirname(fileURLToPath(import.meta.url));
  const js = path.resolve(here, '../cli/main.js');
  const ts = path.resolve(here, '../cli/main.ts');
  const main = existsSync(js) ? js : ts;
  // keep loader flags (tsx under development), drop everything else (e.g. --test)
  const keep: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (['--import', '--require', '-r', '--loader', '--experimental-loader'].includes(a) && i + 1 < argv.length) keep.push(a, argv[++i]!);
    else if (/^--(import|require|loader|experimental-loader)=/.test(a)) keep.push(a);
  }
  if (main.endsWith('.ts') && !keep.length) {
    // running from sources without a loader in execArgv: use tsx's
    keep.push('--import', 'tsx');
  }
  return [process.execPath, ...keep, main];
}

export const EVENT_PREFIX = '@@spark-event ';

/** Runner that starts `spark sweep trial <dir> <i> --plain` and reads its events back from stdout. */
export function childProcessRunner(opts: { device?: (slot: number) => string | undefined } = {}): TrialRunner {
  let slotCounter = 0;
  return (req) =>
    new Promise<TrialRunResult>((resolve) => {
      const slot = slotCounter++;
      const [cmd, ...args] = sparkCommand();
      const env: NodeJS.ProcessEnv = { ...process.env, SPARK_SWEEP_EVENTS: 'json' };
      const dev = opts.device?.(slot);
      if (dev !== undefined) env['CUDA_VISIBLE_DEVICES'] = dev;
      // own process group: a terminal Ctrl-C reaches the parent only, which forwards exactly one SIGINT on abort
      const child = spawn(cmd!, [...args, 'sweep', 'trial', req.sweepDir, String(req.trial.index), '--plain'], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const logFile = path.join(path.dirname(req.runDir), 'output.log');
      const log = createWriteStream(logFile, { flags: 'a' });
      log.on('error', () => {});
      const tail: string[] = [];
      let lastEnd: Extract<RunEvent, { type: 'run-end' }> | null = null;
      const onAbort = () => child.kill('SIGINT');
      req.signal?.addEventListener('abort', onAbort);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line.startsWith(EVENT_PREFIX)) {
          try {
            const e = JSON.parse(line.slice(EVENT_PREFIX.length)) as RunEvent;
            if (e.type === 'run-end') lastEnd = e;
            req.subscriber?.onEvent(e);
          } catch {
            log.write(line + '\n');
          }
        } else log.write(line + '\n');
      });
      createInterface({ input: child.stderr! }).on('line', (line) => {
        log.write(line + '\n');
        tail.push(line);
        if (tail.length > 5) tail.shift();
      });
      const finish = (code: number | null, sig: NodeJS.Signals | null, err?: Error) => {
        req.signal?.removeEventListener('abort', onAbort);
        log.end();
        void (async () => {
          await req.subscriber?.close?.();
          // the child recorded its outcome in sweep.json; trust that, else its exit
          let rec: TrialRecord | undefined;
          try {
            rec = (await readSweep(req.sweepDir)).trials[req.trial.index];
          } catch {
            rec = undefined;
          }
          const end = lastEnd as Extract<RunEvent, { type: 'run-end' }> | null;
          if (rec && rec.status !== 'RUNNING' && rec.status !== 'PENDING') {
            resolve({ status: rec.status as RunStatus, step: rec.step, finalLoss: rec.finalLoss, mlflowRunId: rec.mlflowRunId, error: rec.error ?? undefined });
            return;
          }
          const why = err ? err.message : sig ? `trial process killed by ${sig}` : `trial process exited with code ${code}`;
          resolve({
            status: end?.status ?? (code === 130 || code === 143 || sig === 'SIGINT' || sig === 'SIGTERM' ? 'KILLED' : 'FAILED'),
            step: end?.step ?? null,
            finalLoss: end?.finalLoss ?? null,
            mlflowRunId: null,
            error: `${why}${tail.length ? `: ${tail.join(' | ')}` : ''}`,
          });
        })();
      };
      child.on('error', (e) => finish(null, null, e));
      child.on('close', (code, sig) => finish(code, sig));
    });
}

/** A subscriber that writes events as `@@spark-event {json}` lines (read back by a parent sweep). */
export function jsonEventWriter(stream: NodeJS.WritableStream = process.stdout): RunSubscriber {
  return { onEvent: (e) => void stream.write(EVENT_PREFIX + JSON.stringify(e) + '\n') };
}

// ---------------------------------------------------------------------------------------------------------------
// finishing

/** Sweep status from its trials. */
export function overallStatus(trials: TrialRecord[], interrupted: boolean): SweepFile['status'] {
  if (interrupted || trials.some((t) => t.status === 'KILLED')) return 'KILLED';
  if (trials.some((t) => t.status === 'RUNNING')) return 'RUNNING';
  if (trials.every((t) => t.status === 'FINISHED')) return 'FINISHED';
  if (trials.every((t) => t.status === 'PENDING')) return 'PENDING';
  return 'FAILED';
}

/** The best trials as the parent run records them: `best.<metric>` metrics, `best.<metric>.trial|name|run_id` tags. */
export function parentBest(sweep: SweepFile): { metrics: Record<string, number>; tags: Record<string, string>; step: number } {
  const metrics: Record<string, number> = {};
  const tags: Record<string, string> = {};
  for (const [name, b] of Object.entries(sweep.best)) {
    const key = sanitizeKey(`best.${name}`);
    metrics[key] = b.value;
    // MLflow params never change, so the best trial (which a resume may change) is a tag: the 0-based index, as in
    // the children's `sweep.trial` tag
    tags[`${key}.trial`] = String(b.trial);
    tags[`${key}.name`] = b.name.slice(0, 5000);
    const runId = sweep.trials[b.trial]?.mlflowRunId;
    if (runId) tags[`${key}.run_id`] = runId;
  }
  const finished = sweep.trials.filter((t) => t.status === 'FINISHED').length;
  metrics['sweep.finished'] = finished;
  metrics['sweep.failed'] = sweep.trials.filter((t) => t.status === 'FAILED').length;
  // logged at step = finished trials: the latest value is the current one, also after a resume
  return { metrics, tags, step: finished };
}

/** Fill the ranking metrics other than `loss` of finished trials from their child runs (those not read yet). */
async function childMetrics(sweep: SweepFile, tracker: SweepTracker | null, only?: number[]): Promise<Map<number, Record<string, number>>> {
  const extra = sweep.metrics.map((m) => m.name).filter((n) => n !== 'loss');
  const out = new Map<number, Record<string, number>>();
  if (!tracker || !extra.length) return out;
  for (const t of sweep.trials) {
    if (t.status !== 'FINISHED' || !t.mlflowRunId || (only && !only.includes(t.index))) continue;
    const r = await tracker.getRun(t.mlflowRunId);
    if (r) out.set(t.index, r.metrics);
  }
  return out;
}

function applyChildMetrics(s: SweepFile, m: Map<number, Record<string, number>>): void {
  const extra = s.metrics.map((x) => x.name).filter((n) => n !== 'loss');
  for (const t of s.trials) {
    const got = m.get(t.index);
    if (got) for (const n of extra) if (typeof got[n] === 'number') t.metrics[n] = got[n]!;
  }
}

/**
 * After trial `index` ended: recompute the best trials in sweep.json and log them on the parent run (metrics and
 * tags, never params). Tracking errors are reported, not thrown.
 */
export async function recordProgress(dir: string, index: number, tracker: SweepTracker | null, o: { log?: (l: string) => void } = {}): Promise<SweepFile> {
  const log = o.log ?? defaultLog;
  let extra = new Map<number, Record<string, number>>();
  try {
    extra = await childMetrics(await readSweep(dir), tracker, [index]);
  } catch (e) {
    log(`sweep: tracking: could not read the run of ${trialLabel(index)}: ${(e as Error).message}`);
  }
  const sweep = await updateSweep(dir, (s) => {
    applyChildMetrics(s, extra);
    s.best = bestTrials(s.trials, s.metrics);
  });
  if (tracker?.updateParent && sweep.tracking.parentRunId) {
    try {
      await tracker.updateParent(sweep.tracking.parentRunId, parentBest(sweep));
    } catch (e) {
      log(`sweep: tracking: could not update the parent run: ${(e as Error).message}`);
    }
  }
  return sweep;
}

/**
 * Compute the best trials, write summary.md / summary.csv into the sweep folder and log them on the parent run
 * (`best.<metric>` metrics, `best.<metric>.trial` tags; see `parentBest`), which is then terminated.
 */
export async function finalizeSweep(dir: string, tracker: SweepTracker | null, o: { interrupted?: boolean; log?: (l: string) => void } = {}): Promise<SweepFile> {
  const log = o.log ?? defaultLog;
  // fill metrics other than loss from the child runs
  const extra = await childMetrics(await readSweep(dir), tracker);
  const sweep = await updateSweep(dir, (s) => {
    applyChildMetrics(s, extra);
    s.best = bestTrials(s.trials, s.metrics);
    s.status = overallStatus(s.trials, o.interrupted ?? false);
  });
  const md = path.join(dir, 'summary.md');
  const csv = path.join(dir, 'summary.csv');
  await atomicWriteFile(md, summaryMarkdown(sweep));
  await atomicWriteFile(csv, summaryCsv(sweep));
  if (tracker && sweep.tracking.parentRunId) {
    const best = parentBest(sweep);
    const status = sweep.status === 'FINISHED' ? 'FINISHED' : sweep.status === 'KILLED' ? 'KILLED' : 'FAILED';
    try {
      const warnings = await tracker.finishParent(sweep.tracking.parentRunId, {
        status,
        params: {},
        metrics: best.metrics,
        step: best.step,
        tags: { ...best.tags, 'sweep.status': sweep.status },
        artifacts: [md, csv],
      });
      for (const w of warnings) log(`sweep: tracking: ${w}`);
    } catch (e) {
      log(`sweep: tracking: could not finish the parent run: ${(e as Error).message}`);
    }
  }
  return sweep;
}

// ---------------------------------------------------------------------------------------------------------------
// the sweep

/** Devices for parallel children: the entries of CUDA_VISIBLE_DEVICES, one per slot (round robin). */
function deviceAssigner(env: NodeJS.ProcessEnv = process.env): ((slot: number) => string | undefined) | undefined {
  const list = (env['CUDA_VISIBLE_DEVICES'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length < 2) return undefined;
  return (slot) => list[slot % list.length];
}

export async function runSweep(opts: RunSweepOptions, deps: SweepDeps = {}): Promise<SweepResult> {
  const log = deps.log ?? defaultLog;
  const parallel = Math.max(1, Math.floor(opts.parallel ?? 1));
  let dir: string;
  let tracker: SweepTracker | null;
  if (opts.resumeDir) {
    if (opts.cliSweeps?.length) throw new UsageError('--sweep cannot be combined with --resume of a sweep (the trials are fixed when it starts)');
    dir = path.resolve(opts.resumeDir);
    const s = await readSweep(dir);
    tracker = null;
    if (s.tracking.enabled && s.tracking.uri) {
      tracker = deps.tracker === undefined ? await openSweepTracker(s.tracking.uri) : deps.tracker;
      if (tracker && s.tracking.parentRunId) await tracker.reopenParent(s.tracking.parentRunId);
    }
    await updateSweep(dir, (x) => {
      // a trial left RUNNING by a dead process is resumed like an interrupted one
      for (const t of x.trials) if (t.status === 'RUNNING') t.status = 'KILLED';
      x.status = 'RUNNING';
    });
    log(`sweep: resuming ${dir} (${s.trials.filter((t) => t.status === 'FINISHED').length}/${s.trials.length} trials finished)`);
  } else {
    if (!opts.loaded) throw new UsageError('runSweep: a spec or a sweep folder to resume is required');
    const created = await createSweep({ loaded: opts.loaded, cliSweeps: opts.cliSweeps, launcher: { type: 'local', parallel }, spec: deps.spec, tracker: deps.tracker });
    dir = created.dir;
    tracker = created.tracker;
    await updateSweep(dir, (x) => {
      x.status = 'RUNNING';
    });
    log(`sweep: ${created.sweep.trials.length} trials in ${dir}`);
  }
  let sweep = await readSweep(dir);
  const runner = deps.runTrial ?? (parallel > 1 ? childProcessRunner({ device: deviceAssigner() }) : inProcessRunner);
  const abort = new AbortController();
  let interrupted = false;
  const onInterrupt = () => {
    interrupted = true;
    abort.abort();
  };
  let board: SweepConsoleLike | null;
  if (deps.console !== undefined) board = deps.console;
  else {
    const ui = await import('../ui/index.js');
    board = ui.createSweepConsole({ trials: sweep.trials.map((t) => ({ index: t.index, name: t.name, params: t.params })), plain: opts.plain, onInterrupt });
  }
  for (const t of sweep.trials) {
    if (t.status === 'FINISHED') board?.setStatus(t.index, 'skipped', { loss: t.finalLoss, message: 'finished earlier', runId: t.mlflowRunId ?? undefined });
  }
  const queue = sweep.trials.filter((t) => t.status !== 'FINISHED').map((t) => t.index);
  let failed = false;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (interrupted || (opts.failFast && failed)) return;
      const index = queue.shift();
      if (index === undefined) return;
      const rec = await executeTrial(dir, index, runner, {
        subscriber: board?.trialSubscriber(index),
        signal: abort.signal,
        onStart: (t) => board?.setStatus(t.index, 'running'),
        log,
      });
      board?.setStatus(index, uiStatus[rec.status], { loss: rec.finalLoss, message: rec.error ?? undefined, runId: rec.mlflowRunId ?? undefined });
      await recordProgress(dir, index, tracker, { log });
      if (rec.status === 'FAILED') {
        failed = true;
        log(`sweep: ${trialLabel(index, sweep.trials.length)} (${rec.name}) FAILED: ${rec.error ?? ''}`);
      }
      if (rec.status === 'KILLED') interrupted = true;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(parallel, Math.max(1, queue.length)) }, () => worker()));
  } finally {
    await board?.close();
  }
  if (opts.failFast && failed && queue.length) log(`sweep: --fail-fast: ${queue.length} trial(s) not run`);
  sweep = await finalizeSweep(dir, tracker, { interrupted, log });
  const done = sweep.trials.filter((t) => t.status === 'FINISHED').length;
  log(`sweep: ${sweep.status.toLowerCase()}: ${done}/${sweep.trials.length} trials finished; summary in ${path.join(dir, 'summary.md')}`);
  for (const [name, b] of Object.entries(sweep.best)) log(`sweep: best ${name}: ${trialLabel(b.trial, sweep.trials.length)} (${b.name}) = ${b.value}`);
  if (sweep.status === 'KILLED') log(`sweep: resume with: ${commandHint(['run', '--resume', { path: dir }])}`);
  const exitCode = sweep.status === 'FINISHED' ? 0 : sweep.status === 'KILLED' ? 130 : 1;
  return { sweepDir: dir, sweep, status: sweep.status, exitCode };
}

export { shellQuote };

/**
 * Run one trial of an existing sweep folder in this process (a `--parallel` child or a Slurm array task). Events go
 * to stdout as JSON lines when $SPARK_SWEEP_EVENTS=json, else to the console subscriber. For a Slurm sweep the task
 * that finds every trial done writes the summary and closes the parent run. Returns the exit code.
 */
export async function runSweepTrial(
  dir: string,
  index: number,
  o: { plain?: boolean; runTrial?: TrialRunner; tracker?: SweepTracker | null; subscriber?: RunSubscriber; log?: (l: string) => void } = {},
): Promise<number> {
  const log = o.log ?? defaultLog;
  dir = path.resolve(dir);
  const sweep = await readSweep(dir);
  const t = sweep.trials[index];
  if (!t) throw new UsageError(`${dir}: the sweep has ${sweep.trials.length} trials (indices 0-${sweep.trials.length - 1}); there is no trial index ${index}`);
  const label = trialLabel(index, sweep.trials.length);
  if (t.status === 'FINISHED') {
    log(`sweep: ${label} (${t.name}) already finished; nothing to do`);
    return 0;
  }
  const abort = new AbortController();
  let sub = o.subscriber;
  let interrupted = false;
  if (!sub) {
    if (process.env['SPARK_SWEEP_EVENTS'] === 'json') sub = jsonEventWriter();
    else {
      const ui = await import('../ui/index.js');
      sub = ui.createConsoleSubscriber({ plain: o.plain, onInterrupt: () => abort.abort() });
    }
  }
  let stoppedBy: NodeJS.Signals | null = null;
  const onSig = (sig: NodeJS.Signals) => {
    interrupted = true;
    stoppedBy ??= sig;
    abort.abort();
  };
  // stay installed for the whole trial: a second signal must not kill the process before its checkpoint is written
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  let rec: TrialRecord;
  try {
    rec = await executeTrial(dir, index, o.runTrial ?? inProcessRunner, { subscriber: sub, signal: abort.signal, log });
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
  if (rec.status === 'FAILED') log(`sweep: ${label} (${rec.name}) FAILED: ${rec.error ?? ''}`);
  // a Slurm task keeps the parent's best trial current, and the last one closes the sweep (a --parallel child leaves
  // both to its parent process)
  const now = await readSweep(dir);
  if (now.launcher.type === 'slurm') {
    let tracker: SweepTracker | null = null;
    try {
      tracker = o.tracker !== undefined ? o.tracker : now.tracking.enabled && now.tracking.uri ? await openSweepTracker(now.tracking.uri) : null;
    } catch (e) {
      log(`sweep: tracking: ${(e as Error).message}`);
    }
    const after = await recordProgress(dir, index, tracker, { log });
    if (after.trials.every((x) => x.status !== 'RUNNING' && x.status !== 'PENDING')) await finalizeSweep(dir, tracker, { log });
  }
  // 143 after SIGTERM (scancel, a batch system's stop), 130 after SIGINT (Ctrl-C), as `spark run` exits
  if (interrupted || rec.status === 'KILLED') return stoppedBy === 'SIGTERM' ? 143 : 130;
  return rec.status === 'FINISHED' ? 0 : 1;
}

/** Guard for callers: a trial index from text. */
export function parseTrialIndex(s: string | undefined): number {
  if (s === undefined || !/^\d+$/.test(s)) throw new UsageError(`expected a trial index (0, 1, ...), got '${s ?? ''}'`);
  return Number(s);
}

