/**
 * Reconciling a Slurm sweep's records with Slurm: a trial recorded RUNNING or PENDING whose array task has ended
 * without the trial recording its end (killed hard, out of memory, node lost, cancelled while pending) or that Slurm
 * no longer knows at all (finished longer ago than MinJobAge without accounting) is recorded FAILED or KILLED — in
 * sweep.json, in its run folder's run.json and on its MLflow run — with the reason; when no trial is left running the
 * sweep is finalized (summary, parent run closed). `spark sweep status` and `spark sweep launch --resume` use it.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { readSweep, recordRunStatus, updateSweep } from './state.js';
import { finalizeSweep } from './runner.js';
import type { SlurmTaskState } from './slurm.js';
import type { SweepTracker } from './tracker.js';
import type { SweepFile, TrialRecord } from './types.js';
import { trialLabel } from '../ui/trial-label.js';
import { ALIVE_FILE, goneReason, type AliveRecord } from '../track/liveness.js';

/** Slurm states of a task that is still queued or running. */
const ACTIVE = new Set([
  'PENDING',
  'RUNNING',
  'CONFIGURING',
  'COMPLETING',
  'SUSPENDED',
  'REQUEUED',
  'REQUEUE_HOLD',
  'REQUEUE_FED',
  'RESIZING',
  'SIGNALING',
  'STAGE_OUT',
  'STOPPED',
  'RESV_DEL_HOLD',
  'POWER_UP_NODE',
  'SPECIAL_EXIT',
]);
/** Ended from outside (the trial can be resumed as it was stopped): recorded KILLED; any other end is FAILED. */
const STOPPED_FROM_OUTSIDE = new Set(['CANCELLED', 'TIMEOUT', 'PREEMPTED', 'DEADLINE']);

/** The first word of a Slurm state (`CANCELLED by 0` → `CANCELLED`). */
export function baseState(state: string): string {
  return state.trim().split(/[\s+]/)[0]!.toUpperCase();
}

export function isActiveState(state: string): boolean {
  return ACTIVE.has(baseState(state));
}

export interface TrialVerdict {
  index: number;
  status: 'FAILED' | 'KILLED';
  reason: string;
}

/** What Slurm said about the current array job: its tasks, and whether it answered at all. */
export interface SlurmAnswer {
  tasks: Map<number, SlurmTaskState>;
  /** True when Slurm answered the query (an empty answer then means it has forgotten the job). */
  answered: boolean;
}

/** The trials of a Slurm sweep whose records Slurm contradicts, and what they are to be recorded as. */
export function judgeTrials(sweep: SweepFile, q: SlurmAnswer): TrialVerdict[] {
  const l = sweep.launcher;
  if (l.type !== 'slurm' || !l.jobId) return [];
  const inJob = new Set(l.tasks ?? sweep.trials.map((t) => t.index));
  const out: TrialVerdict[] = [];
  for (const t of sweep.trials) {
    if ((t.status !== 'RUNNING' && t.status !== 'PENDING') || !inJob.has(t.index)) continue;
    const id = `${l.jobId}_${t.index}`;
    const task = q.tasks.get(t.index);
    if (!task) {
      if (!q.answered) continue;
      out.push(
        t.status === 'RUNNING'
          ? { index: t.index, status: 'FAILED', reason: `Slurm task ${id} is gone (Slurm no longer knows it) and the trial never recorded its end: its process was lost (killed hard, out of memory, node lost)` }
          : { index: t.index, status: 'KILLED', reason: `Slurm task ${id} is gone before the trial started (cancelled while pending, or lost)` },
      );
      continue;
    }
    if (isActiveState(task.state)) continue;
    const st = baseState(task.state);
    const stopped = STOPPED_FROM_OUTSIDE.has(st);
    const exit = task.exitCode ? ` (exit ${task.exitCode})` : '';
    out.push({
      index: t.index,
      status: stopped ? 'KILLED' : 'FAILED',
      reason:
        t.status === 'PENDING'
          ? `Slurm task ${id} ended ${st}${exit} before the trial started`
          : `Slurm task ${id} ended ${st}${exit} without the trial recording its end`,
    });
  }
  return out;
}

/**
 * The trials of a local sweep recorded RUNNING whose run's process is gone (its run folder's liveness record names a
 * process that no longer runs, or there is none): recorded FAILED. A trial whose run has not started yet (no run
 * folder) is left alone.
 */
export function judgeLocalTrials(sweep: SweepFile, dir: string): TrialVerdict[] {
  if (sweep.launcher.type !== 'local') return [];
  const out: TrialVerdict[] = [];
  for (const t of sweep.trials) {
    const runDir = t.runDir ? path.resolve(dir, t.runDir) : null;
    if (t.status !== 'RUNNING' || !runDir || !existsSync(runDir)) continue;
    let alive: AliveRecord | null = null;
    try {
      alive = JSON.parse(readFileSync(path.join(runDir, ALIVE_FILE), 'utf8')) as AliveRecord;
    } catch {
      alive = null;
    }
    const reason = alive ? goneReason(alive) : 'its process ended without the trial recording its end (no liveness record left)';
    if (reason) out.push({ index: t.index, status: 'FAILED', reason: `trial's run: ${reason}` });
  }
  return out;
}

/** The hint shown with a reconciled trial: its task's output, when there is one. */
export function verdictHint(dir: string, t: Pick<TrialRecord, 'index'>): string {
  const rel = `slurm/trial-${t.index}.out`;
  return existsSync(path.join(dir, rel)) ? `; see ${rel}` : '';
}

export interface ReconcileResult {
  /** The verdicts applied (a trial that recorded its own end meanwhile is left alone). */
  applied: TrialVerdict[];
  sweep: SweepFile;
  /** Lines for the user. */
  notes: string[];
}

/**
 * Apply `verdicts`: sweep.json, run.json of each trial's run folder, its MLflow run(s) left RUNNING; then, when no
 * trial is RUNNING or PENDING any more and the sweep is not closed yet (also when its last task died before closing
 * it), finalize it.
 */
export async function applyVerdicts(dir: string, verdicts: TrialVerdict[], tracker: SweepTracker | null, o: { log?: (l: string) => void } = {}): Promise<ReconcileResult> {
  const notes: string[] = [];
  const log = o.log ?? ((l: string) => notes.push(l));
  const applied: TrialVerdict[] = [];
  if (verdicts.length) {
    await updateSweep(dir, (s) => {
      const now = new Date().toISOString();
      for (const v of verdicts) {
        const t = s.trials[v.index];
        if (!t || (t.status !== 'RUNNING' && t.status !== 'PENDING')) continue;
        t.status = v.status;
        t.error = v.reason;
        t.endedAt = now;
        applied.push(v);
      }
    });
  }
  let sweep = await readSweep(dir);
  const total = sweep.trials.length;
  let children: Awaited<ReturnType<SweepTracker['listChildren']>> = [];
  if (applied.length && tracker && sweep.tracking.parentRunId) {
    try {
      children = await tracker.listChildren(sweep.tracking.parentRunId);
    } catch (e) {
      notes.push(`could not list the child runs: ${(e as Error).message}`);
    }
  }
  for (const v of applied) {
    const t = sweep.trials[v.index]!;
    const fromRunJson = await recordRunStatus(path.resolve(dir, t.runDir), v.status, v.reason);
    const ids = new Set<string>();
    if (t.mlflowRunId) ids.add(t.mlflowRunId);
    if (fromRunJson) ids.add(fromRunJson);
    for (const c of children) if (c.trial === v.index && c.status === 'RUNNING') ids.add(c.runId);
    if (tracker?.endRun) {
      for (const id of ids) {
        try {
          await tracker.endRun(id, v.status, { 'spark.status_reason': v.reason.slice(0, 5000) });
        } catch (e) {
          notes.push(`${trialLabel(v.index, total)}: could not end MLflow run ${id}: ${(e as Error).message}`);
        }
      }
    }
    if (!t.mlflowRunId && ids.size) {
      const first = [...ids][0]!;
      sweep = await updateSweep(dir, (s) => {
        s.trials[v.index]!.mlflowRunId ??= first;
      });
    }
    notes.push(`${trialLabel(v.index, total)} recorded ${v.status}: ${v.reason}${verdictHint(dir, t)}`);
  }
  const open = sweep.trials.some((t) => t.status === 'RUNNING' || t.status === 'PENDING');
  if (!open && (sweep.status === 'RUNNING' || sweep.status === 'PENDING')) {
    sweep = await finalizeSweep(dir, tracker, { log });
  }
  return { applied, sweep, notes };
}
