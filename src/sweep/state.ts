/**
 * The sweep folder: `<output.dir>/<name>/sweep-<id>/` holding `sweep.json` (atomically rewritten under a lock file,
 * since Slurm array tasks and `--parallel` children update it concurrently), one resolved spec per trial
 * (`trials/<iii>/spec.yaml`), the trial run folders (`trials/<iii>/run/`) and the summary.
 */
import { promises as fsp, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify as yamlStringify } from 'yaml';
import { atomicWriteFile } from '../util/atomic.js';
import { SparkError, UsageError } from '../util/errors.js';
import type { SweepFile, Trial, TrialRecord } from './types.js';
import { trialLabel } from '../ui/trial-label.js';

export const SWEEP_FILE = 'sweep.json';

export function pad3(i: number): string {
  return String(i).padStart(3, '0');
}

export function trialSpecRel(i: number): string {
  return `trials/${pad3(i)}/spec.yaml`;
}

export function trialRunRel(i: number): string {
  return `trials/${pad3(i)}/run`;
}

/** `20261126-120305-a1b2` (UTC). */
export function newSweepId(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const d = `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
  return `${d}-${randomBytes(2).toString('hex')}`;
}

export function isSweepDir(dir: string): boolean {
  return existsSync(path.join(dir, SWEEP_FILE));
}

export async function readSweep(dir: string): Promise<SweepFile> {
  const file = path.join(dir, SWEEP_FILE);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    throw new UsageError(`${dir}: not a sweep folder (no ${SWEEP_FILE})`);
  }
  try {
    const s = JSON.parse(text) as SweepFile;
    if (s.version !== 1 || !Array.isArray(s.trials)) throw new Error('unexpected content');
    return s;
  } catch (e) {
    throw new SparkError(`${file}: unreadable sweep file (${(e as Error).message})`);
  }
}

export async function writeSweep(dir: string, s: SweepFile): Promise<void> {
  s.updatedAt = new Date().toISOString();
  await atomicWriteFile(path.join(dir, SWEEP_FILE), JSON.stringify(s, null, 2) + '\n');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // a zombie still passes kill -0 (PID 1 may reap lazily)
    if (/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return false;
  } catch {
    /* not linux, or gone */
  }
  return true;
}

/**
 * Run `fn` holding `<dir>/sweep.json.lock` (O_EXCL create). A lock left by a dead process on this host, or older
 * than `staleMs`, is broken.
 */
export async function withSweepLock<T>(dir: string, fn: () => Promise<T>, opts: { timeoutMs?: number; staleMs?: number } = {}): Promise<T> {
  const lock = path.join(dir, `${SWEEP_FILE}.lock`);
  const timeout = opts.timeoutMs ?? 60_000;
  const stale = opts.staleMs ?? 30_000;
  const host = (await import('node:os')).hostname();
  const start = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await fsp.open(lock, 'wx');
      await fh.writeFile(`${process.pid} ${host}\n`);
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let breakIt = false;
      try {
        const [pidS, h] = (await fsp.readFile(lock, 'utf8')).trim().split(' ');
        const st = await fsp.stat(lock);
        if (Date.now() - st.mtimeMs > stale) breakIt = true;
        else if (h === host && pidS && /^\d+$/.test(pidS) && !pidAlive(Number(pidS))) breakIt = true;
      } catch {
        /* vanished meanwhile: retry */
      }
      if (breakIt) await fsp.rm(lock, { force: true });
      if (Date.now() - start > timeout) throw new SparkError(`${lock}: could not take the sweep lock within ${timeout} ms`);
      await sleep(Math.min(200, 10 + attempt * 10));
    }
  }
  try {
    return await fn();
  } finally {
    await fsp.rm(lock, { force: true });
  }
}

/** Read-modify-write sweep.json under the lock; returns the new content. */
export async function updateSweep(dir: string, mutate: (s: SweepFile) => void | Promise<void>): Promise<SweepFile> {
  return withSweepLock(dir, async () => {
    const s = await readSweep(dir);
    await mutate(s);
    await writeSweep(dir, s);
    return s;
  });
}

export async function updateTrial(dir: string, index: number, patch: Partial<TrialRecord> | ((t: TrialRecord) => void)): Promise<SweepFile> {
  return updateSweep(dir, (s) => {
    const t = s.trials[index];
    if (!t) throw new SparkError(`${dir}: no trial ${index}`);
    if (typeof patch === 'function') patch(t);
    else Object.assign(t, patch);
  });
}

/** A fresh trial record. */
export function trialRecord(t: Trial): TrialRecord {
  return {
    index: t.index,
    name: t.name,
    overrides: t.overrides,
    params: t.params,
    specFile: trialSpecRel(t.index),
    runDir: trialRunRel(t.index),
    status: 'PENDING',
    mlflowRunId: null,
    step: null,
    finalLoss: null,
    metrics: {},
    error: null,
    startedAt: null,
    endedAt: null,
    attempts: 0,
  };
}

/** Write one trial's resolved spec (a complete experiment spec, loadable on its own). */
export async function writeTrialSpec(dir: string, t: Trial, header: string, total?: number): Promise<string> {
  const file = path.join(dir, trialSpecRel(t.index));
  const text = `# ${header}\n# ${trialLabel(t.index, total)} (index ${t.index}): ${t.name.replace(/\n/g, ' ')}\n` + yamlStringify(t.config, { lineWidth: 0 });
  await atomicWriteFile(file, text);
  return file;
}

/** True when a trial run folder holds a checkpoint to resume from. */
export function hasCheckpoint(runDir: string): boolean {
  if (!existsSync(runDir)) return false;
  if (existsSync(path.join(runDir, 'checkpoint'))) return true;
  const walk = (d: string, depth: number): boolean => {
    for (const n of readdirSync(d)) {
      const p = path.join(d, n);
      let st;
      try {
        st = statSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) {
        if (depth < 3 && walk(p, depth + 1)) return true;
      } else if (/\.safetensors$/.test(n) || /^checkpoint/.test(n)) return true;
    }
    return false;
  };
  return walk(runDir, 0);
}

/**
 * Record in a trial's run folder that its process is gone (`spark sweep status` found its Slurm task failed,
 * cancelled or forgotten): run.json gets `status`, `statusReason`, `endedAt` (the keys the run's own liveness record
 * uses) and a stale `alive.json` is removed. Nothing is written when the run folder has no run.json (the trial never
 * started). Returns the run's MLflow run id from run.json, if any.
 */
export async function recordRunStatus(runDir: string, status: 'FAILED' | 'KILLED', reason: string): Promise<string | null> {
  const file = path.join(runDir, 'run.json');
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
  Object.assign(info, { status, statusReason: reason, endedAt: new Date().toISOString() });
  await atomicWriteFile(file, JSON.stringify(info, null, 2) + '\n');
  await fsp.rm(path.join(runDir, 'alive.json'), { force: true });
  return typeof info['mlflowRunId'] === 'string' ? info['mlflowRunId'] : null;
}
