/**
 * `spark compare`: the runs of one experiment as a table (text, CSV, JSON, Markdown), filtered and ordered with
 * MLflow's syntax (evaluated locally on a file store, passed to runs/search on a server), sweep children grouped
 * under their parent (tag mlflow.parentRunId), params that vary across the shown runs first, then the latest
 * metrics, status and duration. The text table shows what tells the runs apart and fits a width: metrics with the
 * same value in every run are left out, then the least useful columns until it fits, and a closing note names what
 * was left out (`--columns +<col>` adds one back, `--columns all` shows every one). Also the metric curves.
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
  /** Default columns the text table left out: metrics the same in every run, and columns that did not fit the width. */
  hidden?: HiddenColumns;
  /** The width the table was fitted to, when it was. */
  width?: number;
}

/**
 * `--columns`: exactly these columns, the default ones plus these (`+a,b`), or every param and metric (`all`).
 */
export type ColumnsOption = { mode: 'exact'; columns: string[] } | { mode: 'add'; columns: string[] } | { mode: 'all' };

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

/** Every column: run, every param and every metric (constant or not), status, duration. */
export function allColumns(rows: CompareRow[]): string[] {
  const params = new Set<string>();
  const metrics = new Set<string>();
  for (const r of rows) {
    Object.keys(r.run.data.params).forEach((k) => params.add(k));
    Object.keys(r.run.data.metrics).forEach((k) => metrics.add(k));
  }
  return ['run', ...[...params].sort().map((k) => `params.${k}`), ...[...metrics].sort().map((k) => `metrics.${k}`), 'status', 'duration'];
}

/**
 * The params / metrics / tags a filter or order-by clause names (`metrics.loss`, ``metrics.`train/loss` ``,
 * `params."model.mask_ratio"`), as column names.
 */
export function referencedColumns(clauses: string[]): string[] {
  const out: string[] = [];
  const re = /\b(metrics?|params?|tags?)\.(`[^`]+`|"[^"]+"|'[^']+'|[\w./-]+)/g;
  for (const c of clauses) {
    for (const m of c.matchAll(re)) {
      const kind = m[1]!.endsWith('s') ? m[1]! : `${m[1]!}s`;
      const key = /^[`"']/.test(m[2]!) ? m[2]!.slice(1, -1) : m[2]!;
      const col = `${kind}.${key}`;
      if (!out.includes(col)) out.push(col);
    }
  }
  return out;
}

export interface HiddenColumns {
  same: string[];
  width: string[];
}

/** True when at least two rows have the metric and they all hold the same latest value. */
function constantMetric(rows: CompareRow[], key: string): boolean {
  const vals = rows.map((r) => r.run.data.metrics[key]).filter((v): v is number => v !== undefined);
  return vals.length >= 2 && vals.every((v) => Object.is(v, vals[0]));
}

/** Columns a table keeps longest when it must shrink: the run, status and duration, then the headline `loss`. */
const KEEP = ['run', 'status', 'duration', 'metrics.loss'];

/**
 * The columns of the text table: the default ones (run, varying params, metrics, status, duration) without metrics
 * that are the same in every run, plus `focus` (columns the filter, order-by or `--columns +…` name); then, while the
 * table is wider than `width`, the last metric, else the last param, that is neither focused nor in KEEP is left out.
 */
export function tableColumns(rows: CompareRow[], o: { focus?: string[]; width?: number } = {}): { columns: string[]; hidden: HiddenColumns } {
  const focus = o.focus ?? [];
  const defaults = defaultColumns(rows);
  const hidden: HiddenColumns = { same: [], width: [] };
  let cols = defaults.filter((c) => {
    const drop = c.startsWith('metrics.') && !focus.includes(c) && constantMetric(rows, c.slice('metrics.'.length));
    if (drop) hidden.same.push(c);
    return !drop;
  });
  // focused columns the defaults lack go with their kind (params before metrics), attributes and tags before status
  for (const f of focus) {
    if (cols.includes(f)) continue;
    const kindOf = (c: string) => (c.startsWith('params.') ? 1 : c.startsWith('metrics.') ? 2 : c === 'status' || c === 'duration' ? 4 : c === 'run' ? 0 : 3);
    let at = cols.findIndex((c) => kindOf(c) > kindOf(f));
    if (at < 0) at = cols.length;
    cols = [...cols.slice(0, at), f, ...cols.slice(at)];
    hidden.same = hidden.same.filter((c) => c !== f);
  }
  if (o.width !== undefined) {
    const droppable = (prefix: string) => cols.filter((c) => c.startsWith(prefix) && !focus.includes(c) && !KEEP.includes(c));
    const widths = new Map(cols.map((c) => [c, columnWidth(rows, c)]));
    const total = () => cols.reduce((n, c) => n + widths.get(c)!, 0) + 2 * (cols.length - 1);
    while (total() > o.width) {
      const next = droppable('metrics.').pop() ?? droppable('params.').pop() ?? droppable('tags.').pop();
      if (!next) break;
      cols = cols.filter((c) => c !== next);
      hidden.width.unshift(next);
    }
  }
  return { columns: cols, hidden };
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

/** `--columns` text: `all`, `+a,b` (added to the defaults) or `a,b` (exactly these). */
export function parseColumnsOption(spec: string): ColumnsOption {
  const t = spec.trim();
  if (t === 'all') return { mode: 'all' };
  if (t.startsWith('+')) return { mode: 'add', columns: parseColumns(t.slice(1)) };
  return { mode: 'exact', columns: parseColumns(t) };
}

/**
 * The runs of an experiment and the columns to show: `columns` as given; else, with `width` (the text table), the
 * table's columns fitted to it (tableColumns); else every varying param and every metric (defaultColumns).
 */
export async function collectRuns(
  store: TrackingStore,
  o: { experiment: string; filter?: string; orderBy?: string[]; columns?: string[] | ColumnsOption; width?: number },
): Promise<CompareResult> {
  const experiment = await findExperiment(store, o.experiment);
  // runs left RUNNING by a process that is gone (spark's run folders on this machine) are marked FAILED first
  const runs = await Promise.all((await searchAllRuns(store, [experiment.experimentId], o.filter ?? '', o.orderBy ?? [])).map((r) => reconcileStoreRun(store, r)));
  const rows = (await groupRuns(store, runs)).map((r) => ({ ...r, run: withCurrentSpellings(r.run) }));
  const opt: ColumnsOption | undefined = Array.isArray(o.columns) ? (o.columns.length ? { mode: 'exact', columns: o.columns } : undefined) : o.columns;
  if (opt?.mode === 'exact') return { experiment, rows, columns: opt.columns };
  if (opt?.mode === 'all') return { experiment, rows, columns: allColumns(rows) };
  const added = opt?.mode === 'add' ? opt.columns : [];
  if (o.width === undefined) {
    const cols = defaultColumns(rows);
    for (const c of added) if (!cols.includes(c)) cols.splice(cols.length - 2, 0, c);
    return { experiment, rows, columns: cols };
  }
  const focus = [...referencedColumns([o.filter ?? '', ...(o.orderBy ?? [])]), ...added];
  const t = tableColumns(rows, { focus, width: o.width });
  return { experiment, rows, columns: t.columns, hidden: t.hidden, width: o.width };
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

/** The width of a column in the text table (header and every cell). */
function columnWidth(rows: CompareRow[], col: string): number {
  return Math.max(headerOf(col).length, ...rows.map((r) => cellText(r, col, true).length));
}

export function renderTable(res: CompareResult): string {
  const head = res.columns.map(headerOf);
  const body = res.rows.map((r) => res.columns.map((c) => cellText(r, c, true)));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const numeric = res.columns.map((c) => c.startsWith('metrics.') || c === 'duration');
  const line = (cells: string[]) => cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...body.map(line)];
  out.push('', `${res.rows.filter((r) => r.matched).length} run(s) in experiment '${res.experiment.name}' (${res.experiment.experimentId})`);
  const h = res.hidden;
  if (h && h.same.length + h.width.length) {
    // as many names as fit the width, then how many there are
    const note = (lead: string, cols: string[]): string => {
      const max = res.width ?? Infinity;
      for (let n = cols.length; n > 1; n--) {
        const line = `${lead}${cols.slice(0, n).join(', ')}${n < cols.length ? `, … (${cols.length})` : ''}`;
        if (line.length <= max) return line;
      }
      return `${lead}${cols[0]}${cols.length > 1 ? `, … (${cols.length})` : ''}`;
    };
    if (h.same.length) out.push(note('not shown, the same in every run: ', h.same));
    if (h.width.length) out.push(note(`not shown, beyond ${res.width} characters: `, h.width));
    const hint = `--columns +${h.width[0] ?? h.same[0]} adds a column, --columns all shows every one`;
    out.push(hint.length <= (res.width ?? Infinity) ? hint : '--columns +<column> adds one, --columns all shows every one');
  }
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
