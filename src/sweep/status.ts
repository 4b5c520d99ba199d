/**
 * `spark sweep status <sweep-dir>`: each trial's launcher state beside its recorded and MLflow status. For a Slurm
 * sweep the records are reconciled with Slurm first (see reconcile.ts): a trial whose task failed or is gone is
 * recorded FAILED / KILLED with the reason, and a sweep with nothing left running is closed.
 */
import path from 'node:path';
import { formatNumber } from '../track/keys.js';
import { trialLabel } from '../ui/trial-label.js';
import { readSweep } from './state.js';
import { currentCluster, describeCluster, querySlurmArray, slurmEnv, type SlurmQueryResult, type SlurmTaskState } from './slurm.js';
import { applyVerdicts, judgeLocalTrials, judgeTrials } from './reconcile.js';
import { openSweepTracker, type SweepTracker } from './tracker.js';
import { commandHint } from '../util/hint.js';
import type { SweepFile } from './types.js';

export interface TrialStatusRow {
  /** 0-based (sweep.json, `trials/000`, the Slurm array task id). */
  index: number;
  /** For people: `trial 1/3`. */
  label: string;
  name: string;
  /** Launcher view: Slurm task state (PENDING, RUNNING, COMPLETED, FAILED, ...) or '-' when not known. */
  slurm: string;
  /** What the trial recorded in sweep.json. */
  status: string;
  /** The child MLflow run's status, or '-'. */
  mlflow: string;
  mlflowRunId: string | null;
  finalLoss: number | null;
  step: number | null;
}

export interface SweepStatusReport {
  dir: string;
  sweep: SweepFile;
  rows: TrialStatusRow[];
  notes: string[];
}

export interface StatusDeps {
  tracker?: SweepTracker | null;
  querySlurm?: (jobId: string, env: NodeJS.ProcessEnv) => Promise<SlurmQueryResult>;
  /** The environment whose Slurm is asked (default: this process's, with the recorded SLURM_CONF). */
  env?: NodeJS.ProcessEnv;
  /** Record what Slurm contradicts (default true); false: only show it. */
  reconcile?: boolean;
}

export async function sweepStatus(dir: string, deps: StatusDeps = {}): Promise<SweepStatusReport> {
  dir = path.resolve(dir);
  let sweep = await readSweep(dir);
  const notes: string[] = [];
  let tracker: SweepTracker | null = null;
  if (sweep.tracking.enabled && sweep.tracking.uri) {
    try {
      tracker = deps.tracker !== undefined ? deps.tracker : await openSweepTracker(sweep.tracking.uri);
    } catch (e) {
      notes.push(`tracking store unavailable: ${(e as Error).message}`);
    }
  }
  let tasks = new Map<number, SlurmTaskState>();
  const l = sweep.launcher;
  if (l.type === 'slurm') {
    if (l.jobId) {
      const env = slurmEnv(l.cluster, deps.env);
      const here = await currentCluster(env);
      const other = !!(l.cluster?.name && here.name && l.cluster.name !== here.name);
      if (other) {
        notes.push(`job ${l.jobId} was submitted to ${describeCluster(l.cluster)}, but Slurm here is ${describeCluster(here)}: set SLURM_CONF to ask that cluster`);
      } else {
        const q = await (deps.querySlurm ?? querySlurmArray)(l.jobId, env);
        tasks = q.tasks;
        notes.push(...q.notes);
        if (!tasks.size && q.answered) notes.push(`Slurm no longer knows job ${l.jobId} (ended longer ago than MinJobAge, or cancelled)`);
        if (deps.reconcile !== false) {
          const r = await applyVerdicts(dir, judgeTrials(sweep, q), tracker);
          notes.push(...r.notes);
          sweep = r.sweep;
          if (r.applied.length && sweep.trials.some((t) => t.status !== 'FINISHED')) {
            notes.push(`resubmit the unfinished trials with: ${commandHint(['sweep', 'launch', '--resume', { path: dir }])}`);
          }
        }
      }
    } else notes.push('the sbatch script was written but not submitted (spark sweep launch ... --submit, or sbatch it yourself)');
  } else if (deps.reconcile !== false) {
    // a local sweep whose process was killed hard: trials still recorded RUNNING are recorded FAILED
    const r = await applyVerdicts(dir, judgeLocalTrials(sweep, dir), tracker);
    notes.push(...r.notes);
    sweep = r.sweep;
    if (r.applied.length) notes.push(`resume the sweep with: ${commandHint(['run', '--resume', { path: dir }])}`);
  }
  const children = new Map<number, { runId: string; status: string; metrics: Record<string, number> }>();
  if (tracker && sweep.tracking.parentRunId) {
    try {
      for (const c of await tracker.listChildren(sweep.tracking.parentRunId)) {
        if (c.trial === null) continue;
        // several attempts may have created several children: prefer the recorded one, else a running one
        const recorded = sweep.trials[c.trial]?.mlflowRunId;
        const prev = children.get(c.trial);
        if (!prev || c.runId === recorded || (prev.runId !== recorded && c.status === 'RUNNING')) children.set(c.trial, c);
      }
    } catch (e) {
      notes.push(`could not list the child runs: ${(e as Error).message}`);
    }
  }
  const rows: TrialStatusRow[] = sweep.trials.map((t) => {
    const task = tasks.get(t.index);
    const child = children.get(t.index);
    const loss = t.finalLoss ?? (child && typeof child.metrics['loss'] === 'number' ? child.metrics['loss']! : null);
    return {
      index: t.index,
      label: trialLabel(t.index, sweep.trials.length),
      name: t.name,
      slurm: task ? task.state + (task.exitCode ? ` (exit ${task.exitCode})` : '') : '-',
      status: t.status,
      mlflow: child?.status ?? '-',
      mlflowRunId: child?.runId ?? t.mlflowRunId,
      finalLoss: loss,
      step: t.step,
    };
  });
  return { dir, sweep, rows, notes };
}

export function formatStatus(r: SweepStatusReport): string {
  const s = r.sweep;
  const l = s.launcher;
  const head = [
    `sweep ${s.id} (${s.name}): ${s.status.toLowerCase()}, ${s.trials.length} trials, ${r.dir}`,
    l.type === 'slurm'
      ? `launcher: slurm, job ${l.jobId ?? '(not submitted)'}${l.jobId && l.cluster ? ` on ${describeCluster(l.cluster)}` : ''}` +
        (l.history?.length ? ` (earlier: ${l.history.map((h) => h.jobId).join(', ')})` : '')
      : `launcher: local (parallel ${l.parallel})`,
    s.tracking.parentRunId ? `mlflow: parent run ${s.tracking.parentRunId} in ${s.tracking.uri}` : 'mlflow: tracking disabled',
  ];
  const slurm = l.type === 'slurm';
  const inJob = new Set(slurm ? l.tasks ?? s.trials.map((t) => t.index) : []);
  // `#` counts from 1 for people; `task` is the Slurm array task id (= the 0-based index, as in slurm/trial-0.out)
  const header = ['#', 'name', ...(slurm ? ['task', 'slurm'] : []), 'status', 'mlflow', 'final loss', 'steps'];
  const body = r.rows.map((x) => [
    String(x.index + 1),
    x.name,
    ...(slurm ? [l.jobId && inJob.has(x.index) ? `${l.jobId}_${x.index}` : '-', x.slurm] : []),
    x.status,
    x.mlflow,
    x.finalLoss === null ? '-' : formatNumber(x.finalLoss),
    x.step === null ? '-' : String(x.step),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [...head, '', line(header), ...body.map(line)];
  for (const [m, b] of Object.entries(s.best)) out.push(`best ${m}: ${trialLabel(b.trial, s.trials.length)} (${b.name}) = ${formatNumber(b.value)}`);
  for (const n of r.notes) out.push(`note: ${n}`);
  return out.join('\n') + '\n';
}
