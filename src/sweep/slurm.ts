/**
 * The Slurm launcher: `spark sweep launch --launcher slurm <spec>` writes `<sweep-dir>/slurm/sweep.sbatch`, an array
 * job whose task i runs `spark sweep trial <sweep-dir> i`, and (`--submit`) submits it with `sbatch --parsable`.
 * `querySlurmArray` reads the array's state back (squeue --json, then scontrol, then sacct when accounting works).
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { atomicWriteFile } from '../util/atomic.js';
import { SparkError, UsageError } from '../util/errors.js';
import { createSweep, shellQuote, sparkCommand, type LoadedSpec } from './runner.js';
import { updateSweep } from './state.js';
import type { SpecFns } from './expand.js';
import type { SweepTracker } from './tracker.js';
import type { SlurmLaunchRecord, SweepFile } from './types.js';

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
}

/** The array job script. Every value interpolated into shell code is single-quoted. */
export function buildSbatchScript(i: SbatchInput): string {
  if (i.trials < 1) throw new UsageError('a sweep needs at least one trial to launch');
  const o = i.options;
  const array = `0-${i.trials - 1}${o.arrayParallel ? `%${o.arrayParallel}` : ''}`;
  const L: string[] = [
    '#!/bin/bash',
    `#SBATCH --job-name=${slurmJobName(i.name)}`,
    `#SBATCH --array=${array}`,
    // relative to the job's working directory: the sweep folder (--chdir at submission, or below)
    '#SBATCH --output=slurm/trial-%a.out',
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
    comment(`spark sweep ${i.sweepId}: ${i.trials} trials of ${i.specPath}`),
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

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      const code = e ? (typeof e.code === 'number' ? e.code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), error: e && typeof e.code === 'string' ? e : undefined });
    });
  });
}

/** `sbatch --parsable --chdir <sweep-dir> <script>` → job id. */
export async function submitSbatch(script: string, sweepDir: string): Promise<string> {
  const r = await run('sbatch', ['--parsable', `--chdir=${sweepDir}`, script], { cwd: sweepDir });
  if (r.error?.code === 'ENOENT') throw new SparkError('sbatch not found: Slurm is not installed here (scripts/slurm-up.sh starts a single-node cluster)');
  if (r.code !== 0) throw new SparkError(`sbatch failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  const id = r.stdout.trim().split('\n').pop()!.split(';')[0]!.trim();
  if (!/^\d+$/.test(id)) throw new SparkError(`sbatch: unexpected output '${r.stdout.trim()}'`);
  return id;
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
}

/**
 * Create the sweep folder (every trial validated, the parent MLflow run created so array tasks attach their children
 * to it), write the sbatch script and, with `submit`, submit it and record the job id in sweep.json.
 */
export async function launchSlurm(o: LaunchOptions): Promise<{ dir: string; script: string; jobId: string | null; sweep: SweepFile }> {
  checkSlurmOptions(o.options);
  const options: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(o.options)) if (v !== undefined) options[k] = v as string | number;
  const launcher: SlurmLaunchRecord = { type: 'slurm', script: 'slurm/sweep.sbatch', jobId: null, submittedAt: null, options };
  const { dir, sweep } = await createSweep({ loaded: o.loaded, cliSweeps: o.cliSweeps, launcher, spec: o.spec, tracker: o.tracker });
  const script = path.join(dir, 'slurm', 'sweep.sbatch');
  const text = buildSbatchScript({
    sweepDir: dir,
    sweepId: sweep.id,
    specPath: sweep.specPath,
    trials: sweep.trials.length,
    name: sweep.name,
    trackingUri: sweep.tracking.uri,
    workdir: path.resolve(o.workdir ?? process.cwd()),
    command: o.command ?? sparkCommand(),
    options: o.options,
  });
  await atomicWriteFile(script, text);
  await fsp.chmod(script, 0o755);
  let jobId: string | null = null;
  let out = sweep;
  if (o.submit) {
    jobId = await submitSbatch(script, dir);
    out = await updateSweep(dir, (s) => {
      if (s.launcher.type === 'slurm') {
        s.launcher.jobId = jobId;
        s.launcher.submittedAt = new Date().toISOString();
      }
    });
  }
  return { dir, script, jobId, sweep: out };
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

/**
 * The state of every task of array job `jobId` that Slurm still knows about: `squeue --json` (finished tasks stay
 * visible for MinJobAge), else `scontrol -o show job`, completed by `sacct` where accounting works (it does not
 * without slurmdbd). Tasks missing from the map have left Slurm's memory.
 */
export async function querySlurmArray(jobId: string): Promise<{ tasks: Map<number, SlurmTaskState>; notes: string[] }> {
  const notes: string[] = [];
  let tasks = new Map<number, SlurmTaskState>();
  const sq = await run('squeue', ['--json', `--jobs=${jobId}`, '--states=all']);
  if (sq.error?.code === 'ENOENT') return { tasks, notes: ['squeue not found: Slurm is not installed here'] };
  if (sq.code === 0) {
    try {
      tasks = parseSqueueJson(sq.stdout, jobId);
    } catch (e) {
      notes.push(`squeue --json: ${(e as Error).message}`);
    }
  } else if (!/Invalid job id/i.test(sq.stderr)) notes.push(`squeue: ${sq.stderr.trim()}`);
  if (!tasks.size) {
    const sc = await run('scontrol', ['-o', 'show', 'job', jobId]);
    if (sc.code === 0) tasks = parseScontrol(sc.stdout);
  }
  const sa = await run('sacct', ['-n', '-P', '-X', '-j', jobId, '-o', 'JobID,State,ExitCode']);
  if (sa.code === 0) {
    for (const [i, s] of parseSacct(sa.stdout, jobId)) if (!tasks.has(i)) tasks.set(i, s);
  } else if (sa.stderr.trim() && !sa.error) notes.push(`sacct unavailable: ${sa.stderr.trim().split('\n')[0]}`);
  return { tasks, notes };
}
