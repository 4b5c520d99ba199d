/**
 * The Slurm launcher: `spark sweep launch --launcher slurm <spec>` writes `<sweep-dir>/slurm/sweep.sbatch`, an array
 * job whose task i runs `spark sweep trial <sweep-dir> i`, and (`--submit`) submits it with `sbatch --parsable`.
 * `spark sweep launch --resume <sweep-dir>` resubmits the unfinished trials as a new array job
 * (`slurm/resume-<n>.sbatch`). `querySlurmArray` reads the array's state back (squeue --json, then scontrol, then
 * sacct when accounting works).
 *
 * A job is submitted held (`sbatch --hold`) and released once sweep.json records it (and, at launch, the parent run
 * exists), so no task starts against a half-written sweep; a failed sbatch leaves no sweep folder and no parent run.
 * The cluster (ClusterName, SLURM_CONF) is recorded with the job id; status and resume talk to that cluster.
 */
import { execFile } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { atomicWriteFile } from '../util/atomic.js';
import { SparkError, UsageError } from '../util/errors.js';
import { createSweep, createSweepParent, shellQuote, sparkCommand, type LoadedSpec } from './runner.js';
import { parseSweepSection, type SpecFns } from './expand.js';
import { readSweep, updateSweep } from './state.js';
import { applyVerdicts, isActiveState, judgeTrials } from './reconcile.js';
import { openSweepTracker, type SweepTracker } from './tracker.js';
import type { SlurmCluster, SlurmLaunchRecord, SweepFile } from './types.js';

export interface SlurmOptions {
  partition?: string;
  /** `HH:MM:SS`, `MM`, `D-HH:MM:SS`, ... */
  time?: string;
  cpusPerTask?: number;
  /** `4G`, `500M`, ... */
  mem?: string;
  /** At most k array tasks at a time (`%k`). */
  arrayParallel?: number;
  /** `gpu:1`, ... */
  gres?: string;
  account?: string;
  qos?: string;
}

const SAFE_SBATCH = /^[A-Za-z0-9_.,:+=@\/-]+$/;

/** Check the option values (they go into `#SBATCH` lines, which sbatch parses itself, not a shell). */
export function checkSlurmOptions(o: SlurmOptions): void {
  const bad = (flag: string, v: unknown, what: string) => {
    throw new UsageError(`--${flag} ${String(v)}: ${what}`);
  };
  if (o.partition !== undefined && !/^[A-Za-z0-9_.,-]+$/.test(o.partition)) bad('partition', o.partition, 'expected a partition name (letters, digits, _ . - ,)');
  if (o.time !== undefined && !/^(\d+-)?\d+(:\d{1,2}){0,2}$/.test(o.time) && !/^\d+-\d+$/.test(o.time)) bad('time', o.time, 'expected a Slurm time limit such as 01:30:00, 90 or 1-12:00:00');
  if (o.cpusPerTask !== undefined && !(Number.isInteger(o.cpusPerTask) && o.cpusPerTask >= 1)) bad('cpus-per-task', o.cpusPerTask, 'expected a positive integer');
  if (o.mem !== undefined && !/^\d+[KMGTkmgt]?$/.test(o.mem)) bad('mem', o.mem, 'expected a size such as 4G or 500M');
  if (o.arrayParallel !== undefined && !(Number.isInteger(o.arrayParallel) && o.arrayParallel >= 1)) bad('array-parallel', o.arrayParallel, 'expected a positive integer');
  if (o.gres !== undefined && !/^[A-Za-z0-9_:,.-]+$/.test(o.gres)) bad('gres', o.gres, 'expected a gres such as gpu:1');
  if (o.account !== undefined && !/^[A-Za-z0-9_.-]+$/.test(o.account)) bad('account', o.account, 'expected an account name');
  if (o.qos !== undefined && !/^[A-Za-z0-9_.-]+$/.test(o.qos)) bad('qos', o.qos, 'expected a QOS name');
}

/** A job name sbatch can take unquoted. */
export function slurmJobName(name: string): string {
  return ('spark-' + name).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64);
}

export interface SbatchInput {
  sweepDir: string;
  sweepId: string;
  specPath: string;
  trials: number;
  name: string;
  /** Absolute tracking URI (exported as MLFLOW_TRACKING_URI), or null. */
  trackingUri: string | null;
  /** Working directory of the trials (relative data paths resolve against it). */
  workdir: string;
  /** The spark CLI command (node + script). */
  command: string[];
  options: SlurmOptions;
  /** Array task ids (trial indices) to run (default: every trial, 0..trials-1). */
  tasks?: number[];
}

/** `[0,1,2,5,7,8]` → `0-2,5,7-8` (an sbatch --array list). */
export function compressTaskRange(indices: readonly number[]): string {
  const s = [...new Set(indices)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    parts.push(j > i ? `${s[i]}-${s[j]}` : String(s[i]));
    i = j + 1;
  }
  return parts.join(',');
}

/** The array job script. Every value interpolated into shell code is single-quoted. */
export function buildSbatchScript(i: SbatchInput): string {
  if (i.trials < 1) throw new UsageError('a sweep needs at least one trial to launch');
  const o = i.options;
  if (i.tasks && !i.tasks.length) throw new UsageError('no trial to launch');
  const array = `${i.tasks ? compressTaskRange(i.tasks) : `0-${i.trials - 1}`}${o.arrayParallel ? `%${o.arrayParallel}` : ''}`;
  const L: string[] = [
    '#!/bin/bash',
    `#SBATCH --job-name=${slurmJobName(i.name)}`,
    `#SBATCH --array=${array}`,
    // relative to the job's working directory: the sweep folder (--chdir at submission, or below)
    '#SBATCH --output=slurm/trial-%a.out',
    // a resumed trial appends to its earlier attempts' output
    '#SBATCH --open-mode=append',
  ];
  // sbatch reads `#SBATCH` lines itself: double quotes group words; a path it cannot carry is left to --chdir at submission
  if (SAFE_SBATCH.test(i.sweepDir)) L.push(`#SBATCH --chdir=${i.sweepDir}`);
  else if (!/["\\%\r\n]/.test(i.sweepDir)) L.push(`#SBATCH --chdir="${i.sweepDir}"`);
  else L.push('# (no #SBATCH --chdir: the sweep folder path has characters sbatch cannot quote; submit from it)');
  if (o.partition) L.push(`#SBATCH --partition=${o.partition}`);
  if (o.time) L.push(`#SBATCH --time=${o.time}`);
  if (o.cpusPerTask) L.push(`#SBATCH --cpus-per-task=${o.cpusPerTask}`);
  if (o.mem) L.push(`#SBATCH --mem=${o.mem}`);
  if (o.gres) L.push(`#SBATCH --gres=${o.gres}`);
  if (o.account) L.push(`#SBATCH --account=${o.account}`);
  if (o.qos) L.push(`#SBATCH --qos=${o.qos}`);
  const comment = (s: string) => '# ' + s.replace(/[\r\n]+/g, ' ');
  L.push(
    comment(`spark sweep ${i.sweepId}: ${i.tasks ? `trials ${compressTaskRange(i.tasks)} of ${i.trials}` : `${i.trials} trials`} of ${i.specPath}`),
    comment(`submit from the sweep folder (output paths are relative to it): cd ${shellQuote(i.sweepDir)} && sbatch slurm/sweep.sbatch`),
    comment(`or let spark do it: spark sweep launch ... --submit`),
    'set -euo pipefail',
    `SWEEP_DIR=${shellQuote(i.sweepDir)}`,
    'TRIAL="${SLURM_ARRAY_TASK_ID:?this script is a Slurm array job: submit it with sbatch}"',
  );
  if (i.trackingUri) L.push(`export MLFLOW_TRACKING_URI=${shellQuote(i.trackingUri)}`);
  L.push(
    `cd -- ${shellQuote(i.workdir)}`,
    `exec ${i.command.map(shellQuote).join(' ')} sweep trial "$SWEEP_DIR" "$TRIAL" --plain`,
    '',
  );
  return L.join('\n');
}

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; stdout: string; stderr: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      const code = e ? (typeof e.code === 'number' ? e.code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), error: e && typeof e.code === 'string' ? e : undefined });
    });
  });
}

/**
 * The environment for Slurm commands about a recorded job: the recorded SLURM_CONF when that file exists here (the
 * job went to that cluster), else this process's environment.
 */
export function slurmEnv(cluster?: SlurmCluster | null, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (cluster?.slurmConf && existsSync(cluster.slurmConf)) return { ...env, SLURM_CONF: cluster.slurmConf };
  return env;
}

/** The cluster Slurm commands reach from `env`: ClusterName from its slurm.conf (else `scontrol show config`). */
export async function currentCluster(env: NodeJS.ProcessEnv = process.env): Promise<SlurmCluster> {
  const conf = env['SLURM_CONF'] ? path.resolve(env['SLURM_CONF']) : null;
  let name: string | null = null;
  try {
    const m = /^[ \t]*ClusterName[ \t]*=[ \t]*(\S+)/im.exec(readFileSync(conf ?? '/etc/slurm/slurm.conf', 'utf8'));
    if (m) name = m[1]!.toLowerCase(); // Slurm lower-cases cluster names
  } catch {
    /* no readable config here: ask Slurm */
  }
  if (name === null) {
    const r = await run('scontrol', ['show', 'config'], { env, timeoutMs: 10_000 });
    const m = /^ClusterName\s*=\s*(\S+)/m.exec(r.stdout);
    if (r.code === 0 && m) name = m[1]!.toLowerCase();
  }
  return { name, slurmConf: conf };
}

/** `cluster spark (SLURM_CONF=/x/slurm.conf)` */
export function describeCluster(c: SlurmCluster | null | undefined): string {
  if (!c) return 'an unrecorded cluster';
  return `cluster ${c.name ?? '(unnamed)'}${c.slurmConf ? ` (SLURM_CONF=${c.slurmConf})` : ''}`;
}

/** `sbatch --parsable --chdir <sweep-dir> [--hold] <script>` → job id. */
export async function submitSbatch(script: string, sweepDir: string, o: { hold?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const r = await run('sbatch', ['--parsable', `--chdir=${sweepDir}`, ...(o.hold ? ['--hold'] : []), script], { cwd: sweepDir, env: o.env });
  if (r.error?.code === 'ENOENT') throw new SparkError('sbatch not found: Slurm is not installed here (scripts/slurm-up.sh starts a single-node cluster)');
  if (r.code !== 0) throw new SparkError(`sbatch failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  const id = r.stdout.trim().split('\n').pop()!.split(';')[0]!.trim();
  if (!/^\d+$/.test(id)) throw new SparkError(`sbatch: unexpected output '${r.stdout.trim()}'`);
  return id;
}

/** `scontrol release <job>` (the job was submitted held). */
export async function releaseJob(jobId: string, env?: NodeJS.ProcessEnv): Promise<void> {
  const r = await run('scontrol', ['release', jobId], { env });
  if (r.code !== 0) throw new SparkError(`scontrol release ${jobId} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim() || r.error?.message || ''}`);
}

/** `scancel <job>`; errors are returned, not thrown (used while undoing a submission). */
export async function cancelJob(jobId: string, env?: NodeJS.ProcessEnv): Promise<string | null> {
  const r = await run('scancel', [jobId], { env });
  return r.code === 0 ? null : `scancel ${jobId} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim() || r.error?.message || ''}`;
}

export interface LaunchOptions {
  loaded: LoadedSpec;
  cliSweeps?: string[];
  options: SlurmOptions;
  submit?: boolean;
  spec?: SpecFns;
  tracker?: SweepTracker | null;
  /** Spark command for the tasks (default: this installation). */
  command?: string[];
  workdir?: string;
  /** Environment of the Slurm commands (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

function optionRecord(o: SlurmOptions): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v as string | number;
  return out;
}

/** `slurm.job_id` / `slurm.cluster` tags for the parent run. */
function jobTags(jobId: string, cluster: SlurmCluster): Record<string, string> {
  const tags: Record<string, string> = { 'slurm.job_id': jobId };
  if (cluster.name) tags['slurm.cluster'] = cluster.name;
  if (cluster.slurmConf) tags['slurm.conf'] = cluster.slurmConf.slice(0, 5000);
  return tags;
}

/** The sbatch script's input for a sweep folder: the sweep's own fields, the caller's workdir and command. */
function sbatchInput(dir: string, sweep: SweepFile, o: { workdir?: string; command?: string[] }, options: SlurmOptions, tasks?: number[]): SbatchInput {
  return {
    sweepDir: dir,
    sweepId: sweep.id,
    specPath: sweep.specPath,
    trials: sweep.trials.length,
    name: sweep.name,
    trackingUri: sweep.tracking.uri,
    workdir: path.resolve(o.workdir ?? process.cwd()),
    command: o.command ?? sparkCommand(),
    options,
    ...(tasks ? { tasks } : {}),
  };
}

/**
 * Create the sweep folder (every trial validated), write the sbatch script and, with `submit`, submit it. Without
 * `submit` the parent MLflow run is created at once (array tasks attach their children to it whenever the script is
 * submitted); with `submit` the job is submitted held, then the parent run is created and the job id and cluster
 * recorded in sweep.json, then the job is released: a failed sbatch leaves no sweep folder and no parent run, and a
 * failure after it cancels the job. A spec without a `sweep:` section (and no `--sweep` axis) is refused.
 */
export async function launchSlurm(o: LaunchOptions): Promise<{ dir: string; script: string; jobId: string | null; sweep: SweepFile }> {
  checkSlurmOptions(o.options);
  const section = parseSweepSection(o.loaded.raw, o.loaded.specPath);
  if (!o.cliSweeps?.length && !section.grid.length && !section.zip.length && !section.list.length) {
    throw new UsageError(`${o.loaded.specPath}: no sweep: section and no --sweep axis, so there is nothing to launch as a sweep (run it once with spark run)`);
  }
  const launcher: SlurmLaunchRecord = { type: 'slurm', script: 'slurm/sweep.sbatch', jobId: null, submittedAt: null, options: optionRecord(o.options) };
  const { dir, sweep, tracker } = await createSweep({ loaded: o.loaded, cliSweeps: o.cliSweeps, launcher, spec: o.spec, tracker: o.tracker, parent: !o.submit });
  const script = path.join(dir, 'slurm', 'sweep.sbatch');
  const text = buildSbatchScript(sbatchInput(dir, sweep, o, o.options));
  let jobId: string | null = null;
  try {
    await atomicWriteFile(script, text);
    await fsp.chmod(script, 0o755);
    if (o.submit) jobId = await submitSbatch(script, dir, { hold: true, env: o.env });
  } catch (e) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw e;
  }
  if (!jobId) return { dir, script, jobId, sweep };
  let parentRunId: string | null = null;
  try {
    const cluster = await currentCluster(o.env);
    if (tracker) parentRunId = await createSweepParent(dir, sweep, o.loaded.config, tracker);
    const out = await updateSweep(dir, (s) => {
      s.tracking.parentRunId = parentRunId;
      if (s.launcher.type === 'slurm') {
        s.launcher.jobId = jobId;
        s.launcher.submittedAt = new Date().toISOString();
        s.launcher.cluster = cluster;
        s.launcher.tasks = s.trials.map((t) => t.index);
      }
    });
    if (tracker?.updateParent && parentRunId) await tracker.updateParent(parentRunId, { metrics: {}, tags: jobTags(jobId, cluster), step: 0 });
    await releaseJob(jobId, o.env);
    return { dir, script, jobId, sweep: out };
  } catch (e) {
    const why = await cancelJob(jobId, o.env);
    if (parentRunId && tracker) {
      await tracker
        .finishParent(parentRunId, { status: 'FAILED', params: {}, metrics: {}, tags: { 'sweep.status': 'FAILED', 'spark.status_reason': `launch failed: ${(e as Error).message}`.slice(0, 5000) }, artifacts: [] })
        .catch(() => []);
    }
    await fsp.rm(dir, { recursive: true, force: true });
    if (why) throw new SparkError(`${(e as Error).message}; and the held job ${jobId} could not be cancelled (${why}): scancel ${jobId}`);
    throw e;
  }
}

export interface ResumeOptions {
  dir: string;
  /** Options overriding the recorded ones (e.g. a longer --time). */
  options?: SlurmOptions;
  tracker?: SweepTracker | null;
  command?: string[];
  workdir?: string;
  env?: NodeJS.ProcessEnv;
  querySlurm?: (jobId: string, env: NodeJS.ProcessEnv) => Promise<SlurmQueryResult>;
  log?: (line: string) => void;
}

export interface ResumeResult {
  dir: string;
  /** The new array job, or null when every trial had finished. */
  jobId: string | null;
  script: string | null;
  /** The trials resubmitted. */
  tasks: number[];
  sweep: SweepFile;
  notes: string[];
}

/**
 * `spark sweep launch --resume <sweep-dir>`: resubmit a Slurm sweep's unfinished trials as a new array job (each
 * resumes from its checkpoint when it has one). Refused while the current job still has tasks queued or running.
 * Stale records are reconciled first; the new job is submitted held, recorded (the old one goes to
 * `launcher.history`, trials back to PENDING, the parent run reopened) and released. A failed sbatch changes nothing.
 */
export async function resumeSlurm(o: ResumeOptions): Promise<ResumeResult> {
  const dir = path.resolve(o.dir);
  let sweep = await readSweep(dir);
  const l = sweep.launcher;
  if (l.type !== 'slurm') throw new UsageError(`${dir}: a local sweep; resume it with spark sweep resume ${shellQuote(dir)}`);
  const options = { ...(l.options as SlurmOptions), ...Object.fromEntries(Object.entries(o.options ?? {}).filter(([, v]) => v !== undefined)) } as SlurmOptions;
  checkSlurmOptions(options);
  const env = slurmEnv(l.cluster, o.env);
  let tracker: SweepTracker | null = null;
  if (sweep.tracking.enabled && sweep.tracking.uri) tracker = o.tracker !== undefined ? o.tracker : await openSweepTracker(sweep.tracking.uri);
  const notes: string[] = [];
  if (l.jobId) {
    const q = await (o.querySlurm ?? querySlurmArray)(l.jobId, env);
    const active = [...q.tasks.entries()].filter(([, t]) => isActiveState(t.state)).map(([i]) => i);
    if (active.length) {
      throw new SparkError(`${dir}: array job ${l.jobId} still has ${active.length} task(s) queued or running (${compressTaskRange(active)}): wait for them, or scancel ${l.jobId} first`);
    }
    if (!q.answered) throw new SparkError(`${dir}: could not ask Slurm about array job ${l.jobId} (${q.notes.join('; ') || 'no answer'}): not resubmitting`);
    const r = await applyVerdicts(dir, judgeTrials(sweep, q), tracker, { log: o.log });
    notes.push(...r.notes);
    sweep = r.sweep;
  }
  const tasks = sweep.trials.filter((t) => t.status !== 'FINISHED').map((t) => t.index);
  if (!tasks.length) return { dir, jobId: null, script: null, tasks, sweep, notes: [...notes, `all ${sweep.trials.length} trials finished; nothing to resubmit`] };
  const n = (l.history?.length ?? 0) + 1;
  const rel = `slurm/resume-${n}.sbatch`;
  const script = path.join(dir, rel);
  await atomicWriteFile(
    script,
    buildSbatchScript(sbatchInput(dir, sweep, o, options, tasks)),
  );
  await fsp.chmod(script, 0o755);
  let jobId: string;
  try {
    jobId = await submitSbatch(script, dir, { hold: true, env });
  } catch (e) {
    await fsp.rm(script, { force: true });
    throw e;
  }
  try {
    const cluster = await currentCluster(env);
    sweep = await updateSweep(dir, (s) => {
      if (s.launcher.type !== 'slurm') return;
      const prev = s.launcher;
      if (prev.jobId) {
        (prev.history ??= []).push({ jobId: prev.jobId, submittedAt: prev.submittedAt, cluster: prev.cluster ?? null, tasks: prev.tasks ?? s.trials.map((t) => t.index), script: prev.script });
      }
      prev.jobId = jobId;
      prev.submittedAt = new Date().toISOString();
      prev.cluster = cluster;
      prev.tasks = tasks;
      prev.script = rel;
      prev.options = optionRecord(options);
      for (const i of tasks) {
        const t = s.trials[i]!;
        t.status = 'PENDING';
        t.error = null;
        t.endedAt = null;
      }
      s.status = 'RUNNING';
    });
    if (tracker && sweep.tracking.parentRunId) {
      try {
        await tracker.reopenParent(sweep.tracking.parentRunId);
        await tracker.updateParent?.(sweep.tracking.parentRunId, { metrics: {}, tags: { ...jobTags(jobId, cluster), 'sweep.status': 'RUNNING' }, step: 0 });
      } catch (e) {
        notes.push(`tracking: could not reopen the parent run: ${(e as Error).message}`);
      }
    }
    await releaseJob(jobId, env);
  } catch (e) {
    const why = await cancelJob(jobId, env);
    throw new SparkError(`${(e as Error).message}${why ? `; and the held job ${jobId} could not be cancelled (${why}): scancel ${jobId}` : `; job ${jobId} cancelled`}`);
  }
  return { dir, jobId, script, tasks, sweep, notes };
}

// ---------------------------------------------------------------------------------------------------------------
// reading the array's state back

export interface SlurmTaskState {
  state: string;
  /** Exit code of the task's script, when known. */
  exitCode: number | null;
  source: 'squeue' | 'scontrol' | 'sacct';
}

/** Expand `0-3%2`, `1,3,5-7` into indices. */
export function expandTaskRange(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split('%')[0]!.split(',')) {
    const m = /^(\d+)(?:-(\d+))?(?::(\d+))?$/.exec(part.trim());
    if (!m) continue;
    const a = Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : a;
    const step = m[3] !== undefined ? Number(m[3]) : 1;
    for (let i = a; i <= b; i += step) out.push(i);
  }
  return out;
}

function num(v: unknown): number | null {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  if (v && typeof v === 'object') {
    const o = v as { set?: boolean; number?: number; infinite?: boolean; return_code?: unknown };
    if ('return_code' in o) return num(o.return_code);
    if (o.set === false || o.infinite) return null;
    if (typeof o.number === 'number') return o.number;
  }
  return null;
}

function str(v: unknown): string {
  if (Array.isArray(v)) return v.map(String).join(',');
  return v === undefined || v === null ? '' : String(v);
}

/** Parse `squeue --json` output (OpenAPI v0.0.38 of 22.05, tolerant of later shapes). */
export function parseSqueueJson(text: string, jobId: string): Map<number, SlurmTaskState> {
  const out = new Map<number, SlurmTaskState>();
  const data = JSON.parse(text) as { jobs?: Array<Record<string, unknown>> };
  for (const j of data.jobs ?? []) {
    const arrayJob = num(j['array_job_id']);
    if (String(arrayJob || num(j['job_id'])) !== jobId) continue;
    const state = str(j['job_state']);
    let exitCode = num(j['exit_code']);
    if (exitCode !== null && typeof j['exit_code'] === 'number') exitCode = exitCode >> 8; // raw wait status
    const taskStr = str(j['array_task_string']);
    const task = num(j['array_task_id']);
    const indices = taskStr ? expandTaskRange(taskStr) : task !== null ? [task] : [];
    for (const i of indices) out.set(i, { state, exitCode, source: 'squeue' });
  }
  return out;
}

/** Parse `scontrol -o show job <id>` output (one line per task). */
export function parseScontrol(text: string): Map<number, SlurmTaskState> {
  const out = new Map<number, SlurmTaskState>();
  for (const line of text.split('\n')) {
    const kv = new Map<string, string>();
    for (const m of line.matchAll(/(\w+)=(\S*)/g)) if (!kv.has(m[1]!)) kv.set(m[1]!, m[2]!);
    const tasks = kv.get('ArrayTaskId');
    const state = kv.get('JobState');
    if (!tasks || !state) continue;
    const ec = kv.get('ExitCode');
    const exitCode = ec && /^\d+:\d+$/.test(ec) ? Number(ec.split(':')[0]) : null;
    for (const i of expandTaskRange(tasks)) out.set(i, { state, exitCode, source: 'scontrol' });
  }
  return out;
}

/** Parse `sacct -n -P -X -o JobID,State,ExitCode` output (`12_3|COMPLETED|0:0`, `12_[4-5%2]|PENDING|0:0`). */
export function parseSacct(text: string, jobId: string): Map<number, SlurmTaskState> {
  const out = new Map<number, SlurmTaskState>();
  for (const line of text.split('\n')) {
    const [id, state, ec] = line.trim().split('|');
    if (!id || !state) continue;
    const m = /^(\d+)_(\[?)([^\]]+)\]?$/.exec(id);
    if (!m || m[1] !== jobId) continue;
    const exitCode = ec && /^\d+:\d+$/.test(ec) ? Number(ec.split(':')[0]) : null;
    for (const i of expandTaskRange(m[3]!)) out.set(i, { state: state.split(' ')[0]!, exitCode, source: 'sacct' });
  }
  return out;
}

export interface SlurmQueryResult {
  tasks: Map<number, SlurmTaskState>;
  notes: string[];
  /**
   * True when Slurm answered (squeue or scontrol ran and either listed the job or said it does not know it): missing
   * tasks are then gone, not merely unknown.
   */
  answered: boolean;
}

/**
 * The state of every task of array job `jobId` that Slurm still knows about: `squeue --json` (finished tasks stay
 * visible for MinJobAge), else `scontrol -o show job`, completed by `sacct` where accounting works (it does not
 * without slurmdbd). Tasks missing from the map have left Slurm's memory. `env` selects the cluster (SLURM_CONF).
 */
export async function querySlurmArray(jobId: string, env?: NodeJS.ProcessEnv): Promise<SlurmQueryResult> {
  const notes: string[] = [];
  let tasks = new Map<number, SlurmTaskState>();
  let answered = false;
  const unknownJob = /Invalid job id/i;
  const sq = await run('squeue', ['--json', `--jobs=${jobId}`, '--states=all'], { env });
  if (sq.error?.code === 'ENOENT') return { tasks, notes: ['squeue not found: Slurm is not installed here'], answered };
  if (sq.code === 0) {
    try {
      tasks = parseSqueueJson(sq.stdout, jobId);
      answered = true;
    } catch (e) {
      notes.push(`squeue --json: ${(e as Error).message}`);
    }
  } else if (unknownJob.test(sq.stderr + sq.stdout)) answered = true;
  else notes.push(`squeue: ${(sq.stderr || sq.error?.message || `exit ${sq.code}`).trim()}`);
  if (!tasks.size) {
    const sc = await run('scontrol', ['-o', 'show', 'job', jobId], { env });
    if (sc.code === 0) {
      tasks = parseScontrol(sc.stdout);
      answered = true;
    } else if (unknownJob.test(sc.stderr + sc.stdout)) answered = true;
  }
  const sa = await run('sacct', ['-n', '-P', '-X', '-j', jobId, '-o', 'JobID,State,ExitCode'], { env });
  if (sa.code === 0) {
    for (const [i, s] of parseSacct(sa.stdout, jobId)) if (!tasks.has(i)) tasks.set(i, s);
  } else if (sa.stderr.trim() && !sa.error && !/accounting storage is disabled/i.test(sa.stderr)) {
    // (without slurmdbd sacct is simply off: nothing to note)
    notes.push(`sacct unavailable: ${sa.stderr.trim().split('\n')[0]}`);
  }
  return { tasks, notes, answered };
}
