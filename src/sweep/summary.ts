/** The end-of-sweep summary: best trial per metric and the summary table (`summary.md`, `summary.csv`). */
import type { MetricSpec, SweepFile, TrialRecord } from './types.js';
import { formatNumber } from '../track/keys.js';
import { trialLabel } from '../ui/trial-label.js';

export function trialMetric(t: TrialRecord, name: string): number | null {
  const v = name === 'loss' && t.finalLoss !== null ? t.finalLoss : t.metrics[name];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** Best FINISHED trial per metric (ties: the lower index). */
export function bestTrials(trials: TrialRecord[], metrics: MetricSpec[]): Record<string, { trial: number; name: string; value: number }> {
  const out: Record<string, { trial: number; name: string; value: number }> = {};
  for (const m of metrics) {
    let best: { trial: number; name: string; value: number } | null = null;
    for (const t of trials) {
      if (t.status !== 'FINISHED') continue;
      const v = trialMetric(t, m.name);
      if (v === null) continue;
      if (!best || (m.mode === 'min' ? v < best.value : v > best.value)) best = { trial: t.index, name: t.name, value: v };
    }
    if (best) out[m.name] = best;
  }
  return out;
}

function fmt(v: number | null): string {
  return v === null ? '' : formatNumber(v);
}

interface Row {
  cells: string[];
}

/**
 * The summary table. summary.csv's `trial` column is the 0-based index (as in sweep.json, the `sweep.trial` tag and
 * `trials/000/`); summary.md, read by people, numbers the trials from 1 (`#`), like the console.
 */
function table(s: SweepFile, forPeople: boolean): { header: string[]; rows: Row[] } {
  const extra = s.metrics.map((m) => m.name).filter((n) => n !== 'loss');
  const header = [forPeople ? '#' : 'trial', 'name', ...s.varying, 'status', 'final loss', ...extra, 'steps', 'run dir'];
  const rows = s.trials.map((t) => ({
    cells: [
      String(forPeople ? t.index + 1 : t.index),
      t.name,
      ...s.varying.map((p) => t.params[p] ?? ''),
      t.status,
      fmt(t.finalLoss),
      ...extra.map((n) => fmt(trialMetric(t, n))),
      t.step === null ? '' : String(t.step),
      t.runDir,
    ],
  }));
  return { header, rows };
}

function csvCell(v: string): string {
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

export function summaryCsv(s: SweepFile): string {
  const { header, rows } = table(s, false);
  return [header, ...rows.map((r) => r.cells)].map((r) => r.map(csvCell).join(',')).join('\n') + '\n';
}

function mdCell(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

export function summaryMarkdown(s: SweepFile): string {
  const { header, rows } = table(s, true);
  const lines = [
    `# Sweep ${s.name} (${s.id})`,
    '',
    `${s.trials.length} trials: ` +
      (['FINISHED', 'FAILED', 'KILLED', 'RUNNING', 'PENDING'] as const)
        .map((st) => [st, s.trials.filter((t) => t.status === st).length] as const)
        .filter(([, n]) => n > 0)
        .map(([st, n]) => `${n} ${st.toLowerCase()}`)
        .join(', '),
    '',
  ];
  for (const m of s.metrics) {
    const b = s.best[m.name];
    lines.push(b ? `Best ${m.name} (${m.mode}): ${trialLabel(b.trial, s.trials.length)} (${mdCell(b.name)}) = ${formatNumber(b.value)}` : `Best ${m.name} (${m.mode}): none (no finished trial reported it)`);
  }
  lines.push('', `| ${header.map(mdCell).join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`);
  for (const r of rows) lines.push(`| ${r.cells.map(mdCell).join(' | ')} |`);
  return lines.join('\n') + '\n';
}
