/** `spark sweep status <sweep-dir>`: each trial's launcher state beside its recorded and MLflow status. */
import path from 'node:path';
import { formatNumber } from '../track/keys.js';
import { readSweep } from './state.js';
import { querySlurmArray, type SlurmTaskState } from './slurm.js';
import { openSweepTracker, type SweepTracker } from './tracker.js';
import type { SweepFile } from './types.js';

export interface TrialStatusRow {
  index: number;
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
  querySlurm?: (jobId: string) => Promise<{ tasks: Map<number, SlurmTaskState>; notes: string[] }>;
}

export async function sweepStatus(dir: string, deps: StatusDeps = {}): Promise<SweepStatusReport> {
  dir = path.resolve(dir);
  const sweep = await readSweep(dir);
  const notes: string[] = [];
  let tasks = new Map<number, SlurmTaskState>();
  if (sweep.launcher.type === 'slurm') {
    if (sweep.launcher.jobId) {
      const q = await (deps.querySlurm ?? querySlurmArray)(sweep.launcher.jobId);
      tasks = q.tasks;
      notes.push(...q.notes);
      if (!tasks.size) notes.push(`Slurm no longer lists job ${sweep.launcher.jobId} (finished longer ago than MinJobAge, or another cluster)`);
    } else notes.push('the sbatch script was written but not submitted (spark sweep launch ... --submit, or sbatch it yourself)');
  }
  let tracker: SweepTracker | null = null;
  if (sweep.tracking.enabled && sweep.tracking.uri) {
    try {
      tracker = deps.tracker !== undefined ? deps.tracker : await openSweepTracker(sweep.tracking.uri);
    } catch (e) {
      notes.push(`tracking store unavailable: ${(e as Error).message}`);
    }
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
  const head = [
    `sweep ${s.id} (${s.name}): ${s.status.toLowerCase()}, ${s.trials.length} trials, ${r.dir}`,
    s.launcher.type === 'slurm' ? `launcher: slurm, job ${s.launcher.jobId ?? '(not submitted)'}` : `launcher: local (parallel ${s.launcher.parallel})`,
    s.tracking.parentRunId ? `mlflow: parent run ${s.tracking.parentRunId} in ${s.tracking.uri}` : 'mlflow: tracking disabled',
  ];
  const header = ['trial', 'name', ...(s.launcher.type === 'slurm' ? ['slurm'] : []), 'status', 'mlflow', 'final loss', 'steps'];
  const body = r.rows.map((x) => [
    String(x.index),
    x.name,
    ...(s.launcher.type === 'slurm' ? [x.slurm] : []),
    x.status,
    x.mlflow,
    x.finalLoss === null ? '-' : formatNumber(x.finalLoss),
    x.step === null ? '-' : String(x.step),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [...head, '', line(header), ...body.map(line)];
  for (const [m, b] of Object.entries(s.best)) out.push(`best ${m}: trial ${b.trial} (${b.name}) = ${formatNumber(b.value)}`);
  for (const n of r.notes) out.push(`note: ${n}`);
  return out.join('\n') + '\n';
}
