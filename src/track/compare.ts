/**
 * `spark compare`: the runs of one experiment as a table (text, CSV, JSON, Markdown), filtered and ordered with
 * MLflow's syntax (evaluated locally on a file store, passed to runs/search on a server), sweep children grouped
 * under their parent (tag mlflow.parentRunId), params that vary across the shown runs first, then the latest
 * metrics, status and duration. Also the metric curves of those runs.
 */
import { UsageError } from '../util/errors.js';
import { searchAllRuns, type Experiment, type Run, type TrackingStore } from './types.js';
import { buildCurvesSvg, type Series } from './plot.js';
import { normalisedParam } from './keys.js';
import { reconcileStoreRun } from './liveness.js';

export type CompareFormat = 'table' | 'csv' | 'json' | 'markdown';

export interface CompareRow {
  run: Run;
  /** 0 for top-level runs, 1 for sweep trials under their parent, ... */
  depth: number;
  /** False for a parent shown only to keep the tree (it does not match the filter). */
  matched: boolean;
}

export interface CompareResult {
  experiment: Experiment;
  rows: CompareRow[];
  columns: string[];
}

const PARENT_TAG = 'mlflow.parentRunId';

export async function findExperiment(store: TrackingStore, name: string): Promise<Experiment> {
  const e = await store.getExperimentByName(name);
  if (e && e.lifecycleStage === 'active') return e;
  const names = (await store.listExperiments()).map((x) => x.name);
  throw new UsageError(`no experiment named '${name}' in ${store.uri}${names.length ? ` (experiments: ${names.join(', ')})` : ' (the store has no experiments)'}`);
}

/** Runs in search order, children placed right after their parent (parents missing from the result are fetched). */
export async function groupRuns(store: TrackingStore, runs: Run[]): Promise<CompareRow[]> {
  const byId = new Map(runs.map((r) => [r.info.runId, r]));
  const matched = new Set(byId.keys());
  // fetch parents that the filter left out, so that the tree stays whole
  for (let pass = 0; pass < 8; pass++) {
    let added = false;
    for (const r of [...byId.values()]) {
      const p = r.data.tags[PARENT_TAG];
      if (p && !byId.has(p)) {
        try {
          byId.set(p, await store.getRun(p));
          added = true;
        } catch {
          /* parent deleted or elsewhere: show the child at top level */
        }
      }
    }
    if (!added) break;
  }
  const order = [...runs.map((r) => r.info.runId), ...[...byId.keys()].filter((id) => !matched.has(id))];
  const children = new Map<string, string[]>();
  const top: string[] = [];
  for (const id of order) {
    const p = byId.get(id)!.data.tags[PARENT_TAG];
    if (p && byId.has(p) && p !== id) {
      if (!children.has(p)) children.set(p, []);
      children.get(p)!.push(id);
    } else top.push(id);
  }
  const rows: CompareRow[] = [];
  const seen = new Set<string>();
  const visit = (id: string, depth: number) => {
    if (seen.has(id)) return;
    seen.add(id);
    rows.push({ run: byId.get(id)!, depth, matched: matched.has(id) });
    for (const c of children.get(id) ?? []) visit(c, depth + 1);
  };
  // a parent fetched for its children goes where its first child would have been
  const firstChildPos = (id: string): number => {
    const kids = children.get(id) ?? [];
    return Math.min(...kids.map((k) => (matched.has(k) ? order.indexOf(k) : firstChildPos(k))), Infinity);
  };
  const topSorted = top
    .map((id) => ({ id, pos: matched.has(id) ? order.indexOf(id) : firstChildPos(id) }))
    .sort((a, b) => a.pos - b.pos)
    .map((x) => x.id);
  for (const id of topSorted) visit(id, 0);
  for (const id of order) visit(id, 0); // cycles, if any
  return rows;
}

/** Default columns: run, the params that vary across the rows, the metrics, status, duration. */
export function defaultColumns(rows: CompareRow[]): string[] {
  const paramKeys = new Set<string>();
  const metricKeys = new Set<string>();
  for (const r of rows) {
    Object.keys(r.run.data.params).forEach((k) => paramKeys.add(k));
    Object.keys(r.run.data.metrics).forEach((k) => metricKeys.add(k));
  }
  // a param varies when the runs that have it do not all agree (constant params and one-run params are hidden)
  const varying = [...paramKeys]
    .filter((k) => new Set(rows.map((r) => r.run.data.params[k]).filter((x) => x !== undefined)).size > 1)
    .sort();
  return ['run', ...varying.map((k) => `params.${k}`), ...[...metricKeys].sort().map((k) => `metrics.${k}`), 'status', 'duration'];
}

const ATTRIBUTE_COLUMNS = ['run', 'run_id', 'run_name', 'status', 'duration', 'start_time', 'end_time', 'user_id', 'experiment_id', 'parent_run_id'];

export function parseColumns(spec: string): string[] {
  const cols = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const c of cols) {
    if (!ATTRIBUTE_COLUMNS.includes(c) && !/^(params|param|metrics|metric|tags|tag)\.\S/.test(c)) {
      throw new UsageError(`unknown column '${c}': use params.<key>, metrics.<key>, tags.<key> or one of ${ATTRIBUTE_COLUMNS.join(', ')}`);
    }
  }
  return cols.map((c) => c.replace(/^param\./, 'params.').replace(/^metric\./, 'metrics.').replace(/^tag\./, 'tags.'));
}

export async function collectRuns(
  store: TrackingStore,
  o: { experiment: string; filter?: string; orderBy?: string[]; columns?: string[] },
): Promise<CompareResult> {
  const experiment = await findExperiment(store, o.experiment);
  // runs left RUNNING by a process that is gone (spark's run folders on this machine) are marked FAILED first
  const runs = await Promise.all((await searchAllRuns(store, [experiment.experimentId], o.filter ?? '', o.orderBy ?? [])).map((r) => reconcileStoreRun(store, r)));
  const rows = (await groupRuns(store, runs)).map((r) => ({ ...r, run: withCurrentSpellings(r.run) }));
  return { experiment, rows, columns: o.columns?.length ? o.columns : defaultColumns(rows) };
}

/** A run whose params older spark versions wrote in JSON spellings (`[0.67,1]`, `null`), shown as spark writes them now. */
export function withCurrentSpellings(run: Run): Run {
  const params: Record<string, string> = {};
  for (const [k, v] of Object.entries(run.data.params)) params[k] = normalisedParam(run.data.tags, v);
  return { ...run, data: { ...run.data, params } };
}

/** A cell's raw value: string, number (may be NaN/±Inf), or null when missing. */
export function cellValue(row: CompareRow, col: string): string | number | null {
  const r = row.run;
  const dot = col.indexOf('.');
  if (dot > 0 && ['params', 'metrics', 'tags'].includes(col.slice(0, dot))) {
    const key = col.slice(dot + 1);
    const kind = col.slice(0, dot) as 'params' | 'metrics' | 'tags';
    const v = r.data[kind][key];
    return v === undefined ? null : v;
  }
  switch (col) {
    case 'run':
    case 'run_name':
      return r.info.runName;
    case 'run_id':
      return r.info.runId;
    case 'status':
      return r.info.status;
    case 'duration':
      return r.info.endTime !== null ? (r.info.endTime - r.info.startTime) / 1000 : null;
    case 'start_time':
      return r.info.startTime;
    case 'end_time':
      return r.info.endTime;
    case 'user_id':
      return r.info.userId;
    case 'experiment_id':
      return r.info.experimentId;
    case 'parent_run_id':
      return r.data.tags[PARENT_TAG] ?? null;
    default:
      return null;
  }
}

export function formatDuration(s: number): string {
  if (s < 60) return `${s.toFixed(1)}s`;
  const h = Math.floor(s / 3600);
  const mnt = Math.floor((s % 3600) / 60);
  const sec = Math.round(s % 60);
  return h ? `${h}h${String(mnt).padStart(2, '0')}m` : `${mnt}m${String(sec).padStart(2, '0')}s`;
}

function fmtMetric(v: number): string {
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(5)));
}

/** Human text of a cell (table and markdown). */
function cellText(row: CompareRow, col: string, indent: boolean): string {
  const v = cellValue(row, col);
  if (col === 'run' && indent) {
    const name = String(v ?? row.run.info.runId.slice(0, 8)) || row.run.info.runId.slice(0, 8);
    return `${row.depth ? `${'  '.repeat(row.depth - 1)}└ ` : ''}${name}${row.matched ? '' : ' (parent)'}`;
  }
  if (v === null) return col === 'duration' && row.run.info.status === 'RUNNING' ? 'running' : '';
  if (col === 'duration') return formatDuration(v as number);
  if (col === 'start_time' || col === 'end_time') return new Date(v as number).toISOString().replace('T', ' ').slice(0, 19);
  if (typeof v === 'number') return fmtMetric(v);
  return v;
}

function headerOf(col: string): string {
  return col === 'duration' ? 'duration' : col;
}

export function renderTable(res: CompareResult): string {
  const head = res.columns.map(headerOf);
  const body = res.rows.map((r) => res.columns.map((c) => cellText(r, c, true)));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const numeric = res.columns.map((c) => c.startsWith('metrics.') || c === 'duration');
  const line = (cells: string[]) => cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...body.map(line)];
  out.push('', `${res.rows.filter((r) => r.matched).length} run(s) in experiment '${res.experiment.name}' (${res.experiment.experimentId})`);
  return out.join('\n') + '\n';
}

function csvCell(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function renderCsv(res: CompareResult): string {
  const cols = ['run_id', 'parent_run_id', ...res.columns.filter((c) => c !== 'run_id' && c !== 'parent_run_id')];
  const lines = [cols.map(csvCell).join(',')];
  for (const r of res.rows) {
    lines.push(
      cols
        .map((c) => {
          const v = cellValue(r, c);
          if (v === null) return '';
          if (typeof v === 'number') return Number.isNaN(v) ? 'nan' : v === Infinity ? 'inf' : v === -Infinity ? '-inf' : String(v);
          return csvCell(v);
        })
        .join(','),
    );
  }
  return lines.join('\n') + '\n';
}

export function renderJson(res: CompareResult): string {
  const rows = res.rows.map((r) => {
    const o: Record<string, unknown> = { run_id: r.run.info.runId, parent_run_id: r.run.data.tags[PARENT_TAG] ?? null, depth: r.depth, matched: r.matched };
    for (const c of res.columns) {
      const v = cellValue(r, c);
      o[c === 'duration' ? 'duration_s' : c] = typeof v === 'number' && !Number.isFinite(v) ? (Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity') : v;
    }
    return o;
  });
  return JSON.stringify({ experiment: { id: res.experiment.experimentId, name: res.experiment.name }, columns: res.columns, runs: rows }, null, 2) + '\n';
}

export function renderMarkdown(res: CompareResult): string {
  const mdEsc = (s: string) => s.replace(/\|/g, '\\|');
  const lines = [`| ${res.columns.map((c) => mdEsc(headerOf(c))).join(' | ')} |`, `|${res.columns.map((c) => (c.startsWith('metrics.') || c === 'duration' ? '---:' : '---')).join('|')}|`];
  for (const r of res.rows) lines.push(`| ${res.columns.map((c) => mdEsc(cellText(r, c, true))).join(' | ')} |`);
  return lines.join('\n') + '\n';
}

export function render(res: CompareResult, format: CompareFormat): string {
  switch (format) {
    case 'csv':
      return renderCsv(res);
    case 'json':
      return renderJson(res);
    case 'markdown':
      return renderMarkdown(res);
    default:
      return renderTable(res);
  }
}

/** The SVG of one metric's curves over the matched runs that logged it. */
export async function curvesSvg(store: TrackingStore, res: CompareResult, metric: string): Promise<{ svg: string; series: Series[] }> {
  const key = metric.replace(/^metrics?\./, '');
  const series: Series[] = [];
  for (const r of res.rows) {
    if (!r.matched || !(key in r.run.data.metrics)) continue;
    const h = await store.getMetricHistory(r.run.info.runId, key);
    series.push({ name: r.run.info.runName || r.run.info.runId.slice(0, 8), points: h.map((m) => [m.step, m.value] as [number, number]) });
  }
  if (!series.length) throw new UsageError(`no shown run has the metric '${key}'`);
  const svg = buildCurvesSvg(series, { title: `${key} — ${res.experiment.name}`, xLabel: 'step', yLabel: key });
  return { svg, series };
}
