/**
 * Sweep expansion: the `sweep:` section of a spec (plus `--sweep path=v1,v2` grid axes from the command line) →
 * a list of trials, each fully resolved and validated before anything runs.
 *
 * The rule (also in schemas/sweep.schema.json):
 *   - `grid:` is a cartesian product; axes in spec order, then the command-line `--sweep` axes in argument order
 *     (a `--sweep` axis on a path the spec's grid already has replaces it); the LAST axis varies fastest.
 *   - `zip:` lists of equal length are paired element-wise and form ONE more axis, placed after the grid axes
 *     (so it varies fastest): trials = grid × zip.
 *   - `list:` entries (explicit override maps) are appended after the grid × zip trials, in order.
 *   - Without grid/zip/--sweep, the trials are just the list; with nothing at all there is one trial (the base).
 */
import type { ExperimentConfig } from '../spec/types.js';
import { SpecError, UsageError } from '../util/errors.js';
import { applyOverride as specApplyOverride, resolveConfig as specResolveConfig } from '../spec/index.js';
import type { MetricMode, MetricSpec, Overrides, Trial } from './types.js';
import { trialLabel } from '../ui/trial-label.js';

export interface SpecFns {
  resolveConfig: (raw: object, origin: { file: string; overrides?: string[] }) => ExperimentConfig;
  applyOverride: (raw: object, assignment: string) => object;
}

const defaultFns: SpecFns = {
  resolveConfig: (raw, origin) => specResolveConfig(raw, origin),
  applyOverride: (raw, a) => specApplyOverride(raw, a, '--sweep'),
};

export interface ExpandOptions {
  /** Spec file the raw config came from (for error locations). */
  file?: string;
  /** Injected spec functions (tests); default: the spec module's. */
  fns?: SpecFns;
}

/** The normalised `sweep:` section. */
export interface SweepSection {
  grid: Array<[string, unknown[]]>;
  zip: Array<[string, unknown[]]>;
  list: Overrides[];
  nameTemplate: string | null;
  metrics: MetricSpec[];
}

// ---------------------------------------------------------------------------------------------------------------
// small helpers

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function deepClone<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b));
}

function canon(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canon);
  if (isPlainObject(v)) {
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) o[k] = canon(v[k]);
    return o;
  }
  return v;
}

/** Read a dotted path (`model.mask_ratio`, `train.optimizer.betas.1`); undefined when absent. */
export function getPath(obj: unknown, dotted: string): unknown {
  let cur: unknown = obj;
  for (const seg of dotted.split('.')) {
    if (Array.isArray(cur) && /^\d+$/.test(seg)) cur = cur[Number(seg)];
    else if (isPlainObject(cur)) cur = cur[seg];
    else return undefined;
  }
  return cur;
}

/** Set a dotted path in place, creating objects on the way. */
export function setPath(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const segs = dotted.split('.');
  let cur: unknown = obj;
  for (let i = 0; i < segs.length - 1; i++) {
    const seg = segs[i]!;
    if (Array.isArray(cur) && /^\d+$/.test(seg)) {
      if (!isPlainObject(cur[Number(seg)]) && !Array.isArray(cur[Number(seg)])) cur[Number(seg)] = {};
      cur = cur[Number(seg)];
    } else if (isPlainObject(cur)) {
      if (!isPlainObject(cur[seg]) && !Array.isArray(cur[seg])) cur[seg] = {};
      cur = cur[seg];
    } else {
      throw new UsageError(`cannot set '${dotted}': '${segs.slice(0, i).join('.')}' is not an object`);
    }
  }
  const last = segs[segs.length - 1]!;
  if (Array.isArray(cur) && /^\d+$/.test(last)) cur[Number(last)] = deepClone(value);
  else if (isPlainObject(cur)) cur[last] = deepClone(value);
  else throw new UsageError(`cannot set '${dotted}': its parent is not an object`);
}

const PATH_RE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$/;

/** A value as text: in trial names, MLflow params and the summary table. */
export function formatValue(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(formatValue).join(',')}]`;
  if (isPlainObject(v)) {
    if (typeof v['name'] === 'string' && v['name']) return v['name'];
    const rest = Object.entries(v).filter(([k]) => k !== 'family');
    const inner = rest.map(([k, x]) => `${k}=${formatValue(x)}`).join(',');
    return typeof v['family'] === 'string' ? `${v['family']}(${inner})` : `{${inner}}`;
  }
  return String(v);
}

/** A value in a `--set`-style assignment: YAML flow (JSON) for structures, plain text for scalars. */
export function assignmentValue(v: unknown): string {
  if (typeof v === 'string') return /^[\w./:+-]*$/.test(v) && v !== '' ? v : JSON.stringify(v);
  return JSON.stringify(v);
}

// ---------------------------------------------------------------------------------------------------------------
// command-line axes

/** Split on commas that are not inside brackets, braces or quotes. */
export function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quote: string | null = null;
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      cur += c;
      if (c === '\\' && quote === '"' && i + 1 < s.length) cur += s[++i]!;
      else if (c === quote) quote = null;
      continue;
    }
    if (c === '"' || c === "'") quote = c;
    else if (c === '[' || c === '{') depth++;
    else if (c === ']' || c === '}') depth--;
    if (c === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += c;
  }
  out.push(cur.trim());
  return out;
}

/**
 * Parse `--sweep path=v1,v2,...` into a grid axis. Values are split on top-level commas (so `[0.2,1]` is one array
 * value) and typed by the schema through the spec module's `applyOverride` on the base config.
 */
export function parseCliSweep(arg: string, baseRaw: object, fns: SpecFns = defaultFns): [string, unknown[]] {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new UsageError(`--sweep ${arg}: expected path=value1,value2,...`);
  const path = arg.slice(0, eq).trim();
  const rest = arg.slice(eq + 1);
  if (!PATH_RE.test(path)) throw new UsageError(`--sweep ${arg}: '${path}' is not a dotted config path`);
  if (path === 'sweep' || path.startsWith('sweep.')) throw new UsageError(`--sweep ${arg}: the sweep section itself cannot be swept`);
  const parts = splitTopLevel(rest);
  if (parts.some((p) => p === '')) throw new UsageError(`--sweep ${arg}: empty value (values are comma-separated)`);
  const values = parts.map((p) => {
    const typed = fns.applyOverride(deepClone(baseRaw), `${path}=${p}`);
    return getPath(typed, path);
  });
  return [path, values];
}

// ---------------------------------------------------------------------------------------------------------------
// the sweep section

function specErr(file: string, msg: string): SpecError {
  return new SpecError(msg, file);
}

function parseMetrics(file: string, metric: unknown, mode: unknown): MetricSpec[] {
  const defMode: MetricMode = mode === 'max' ? 'max' : 'min';
  if (mode !== undefined && mode !== 'min' && mode !== 'max') throw specErr(file, `sweep.mode: must be 'min' or 'max'`);
  const one = (m: unknown, where: string): MetricSpec => {
    if (typeof m === 'string' && m) return { name: m, mode: defMode };
    if (isPlainObject(m) && typeof m['name'] === 'string' && m['name']) {
      const md = m['mode'] ?? defMode;
      if (md !== 'min' && md !== 'max') throw specErr(file, `${where}.mode: must be 'min' or 'max'`);
      return { name: m['name'], mode: md };
    }
    throw specErr(file, `${where}: expected a metric name or {name, mode}`);
  };
  if (metric === undefined || metric === null) return [{ name: 'loss', mode: defMode }];
  if (Array.isArray(metric)) {
    if (!metric.length) throw specErr(file, 'sweep.metric: must not be empty');
    return metric.map((m, i) => one(m, `sweep.metric[${i}]`));
  }
  return [one(metric, 'sweep.metric')];
}

/** Normalise and check the `sweep:` section of a raw config (structure only; values are checked per trial). */
export function parseSweepSection(raw: object, file = '<spec>'): SweepSection {
  const s = (raw as Record<string, unknown>)['sweep'];
  const out: SweepSection = { grid: [], zip: [], list: [], nameTemplate: null, metrics: parseMetrics(file, undefined, undefined) };
  if (s === undefined || s === null) return out;
  if (!isPlainObject(s)) throw specErr(file, 'sweep: must be a mapping (grid / zip / list / name_template / metric)');
  const known = new Set(['grid', 'zip', 'list', 'name_template', 'metric', 'mode']);
  for (const k of Object.keys(s)) if (!known.has(k)) throw specErr(file, `sweep.${k}: unknown key (expected one of ${[...known].join(', ')})`);
  const axes = (key: 'grid' | 'zip'): Array<[string, unknown[]]> => {
    const v = s[key];
    if (v === undefined || v === null) return [];
    if (!isPlainObject(v)) throw specErr(file, `sweep.${key}: must map config paths to lists of values`);
    return Object.entries(v).map(([p, vals]) => {
      if (!PATH_RE.test(p)) throw specErr(file, `sweep.${key}.${p}: not a dotted config path`);
      if (p === 'sweep' || p.startsWith('sweep.')) throw specErr(file, `sweep.${key}.${p}: the sweep section itself cannot be swept`);
      if (!Array.isArray(vals) || vals.length === 0) throw specErr(file, `sweep.${key}.${p}: must be a non-empty list of values`);
      return [p, vals];
    });
  };
  out.grid = axes('grid');
  out.zip = axes('zip');
  if (out.zip.length) {
    const n = out.zip[0]![1].length;
    for (const [p, vals] of out.zip) {
      if (vals.length !== n) throw specErr(file, `sweep.zip.${p}: has ${vals.length} values but sweep.zip.${out.zip[0]![0]} has ${n} (zip lists must have equal lengths)`);
    }
  }
  for (const [p] of out.zip) if (out.grid.some(([g]) => g === p)) throw specErr(file, `sweep.zip.${p}: also in sweep.grid (a path can be swept only once)`);
  const list = s['list'];
  if (list !== undefined && list !== null) {
    if (!Array.isArray(list)) throw specErr(file, 'sweep.list: must be a list of override maps');
    out.list = list.map((e, i) => {
      if (!isPlainObject(e)) throw specErr(file, `sweep.list[${i}]: must be a map of config path → value`);
      for (const p of Object.keys(e)) if (!PATH_RE.test(p)) throw specErr(file, `sweep.list[${i}].${p}: not a dotted config path`);
      return { ...e };
    });
  }
  if (s['name_template'] !== undefined && s['name_template'] !== null) {
    if (typeof s['name_template'] !== 'string' || !s['name_template']) throw specErr(file, 'sweep.name_template: must be a non-empty string');
    out.nameTemplate = s['name_template'];
  }
  out.metrics = parseMetrics(file, s['metric'], s['mode']);
  return out;
}

/** Raw override maps in trial order (before validation). */
export function expandOverrides(section: SweepSection, cliAxes: Array<[string, unknown[]]> = []): Overrides[] {
  const grid: Array<[string, unknown[]]> = section.grid.map(([p, v]) => [p, v]);
  for (const [p, vals] of cliAxes) {
    if (section.zip.some(([z]) => z === p)) throw new UsageError(`--sweep ${p}=...: '${p}' is already swept by sweep.zip`);
    const at = grid.findIndex(([g]) => g === p);
    if (at >= 0) grid[at] = [p, vals];
    else grid.push([p, vals]);
  }
  // axes: each grid key is one axis; the zip group is one more axis (fastest)
  const axes: Overrides[][] = grid.map(([p, vals]) => vals.map((v) => ({ [p]: v })));
  if (section.zip.length) {
    const n = section.zip[0]![1].length;
    axes.push(Array.from({ length: n }, (_, i) => Object.fromEntries(section.zip.map(([p, vals]) => [p, vals[i]]))));
  }
  let product: Overrides[] = [];
  if (axes.length) {
    product = [{}];
    for (const axis of axes) {
      const next: Overrides[] = [];
      for (const prefix of product) for (const o of axis) next.push({ ...prefix, ...o });
      product = next;
    }
  }
  const all = [...product, ...section.list.map((o) => ({ ...o }))];
  return all.length ? all : [{}];
}

/** Paths whose value is not the same in every trial (absent counts as a distinct value), in first-seen order. */
export function varyingPaths(all: Overrides[]): string[] {
  const paths: string[] = [];
  for (const o of all) for (const p of Object.keys(o)) if (!paths.includes(p)) paths.push(p);
  return paths.filter((p) => {
    const first = all[0]![p];
    const firstHas = p in all[0]!;
    return all.some((o) => (p in o) !== firstHas || !deepEqual(o[p], first));
  });
}

/** Short labels for paths: the last segment, or the full path where two paths share a last segment. */
export function shortLabels(paths: string[]): Record<string, string> {
  const last = (p: string) => p.split('.').pop()!;
  const out: Record<string, string> = {};
  for (const p of paths) out[p] = paths.filter((q) => last(q) === last(p)).length > 1 ? p : last(p);
  return out;
}

/**
 * A trial's name: from `name_template` (placeholders `{index}`, `{name}` = the default name, `{<dotted path>}` = the
 * trial's value for that path, from its overrides or else its resolved config), or by default
 * `label=value,...` over the varying paths the trial sets.
 */
export function trialName(index: number, overrides: Overrides, varying: string[], template: string | null, config?: object): string {
  const labels = shortLabels(varying);
  const parts = varying.filter((p) => p in overrides).map((p) => `${labels[p]}=${formatValue(overrides[p])}`);
  const def = parts.length ? parts.join(',') : Object.keys(overrides).length ? Object.entries(overrides).map(([p, v]) => `${shortLabels(Object.keys(overrides))[p]}=${formatValue(v)}`).join(',') : `trial-${index}`;
  if (!template) return def;
  return template.replace(/\{([^{}]+)\}/g, (m, key: string) => {
    const k = key.trim();
    if (k === 'index') return String(index);
    if (k === 'name') return def;
    if (k in overrides) return formatValue(overrides[k]);
    const v = config ? getPath(config, k) : undefined;
    return v === undefined ? m : formatValue(v);
  });
}

/**
 * Make an error message name the override it is about: kept as is when it already quotes an assignment, prefixed
 * with `--set path=value: ` when it mentions one override's path, else followed by the list of overrides.
 */
export function blameOverride(msg: string, overrides: Overrides, assignments: string[]): string {
  if (!assignments.length || assignments.some((a) => msg.includes(a))) return msg;
  const paths = Object.keys(overrides);
  const hit = paths.findIndex((p) => msg.includes(p) || msg.includes('/' + p.split('.').join('/')));
  if (hit >= 0) return `--set ${assignments[hit]}: ${msg}`;
  return `${msg} [overrides: ${assignments.map((a) => `--set ${a}`).join(' ')}]`;
}

/** Message of any error. */
function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Expand a raw (merged, pre-default) config into validated trials. Every trial is resolved before this returns;
 * the first invalid one throws a SpecError naming the trial and its overrides, e.g.
 * `trial 4/4 (mask_ratio=1.2): --set model.mask_ratio=1.2: must be < 1` (trials counted from 1, as people do).
 */
export function expandSweep(raw: object, cli: string[] = [], opts: ExpandOptions = {}): Trial[] {
  const fns = opts.fns ?? defaultFns;
  const file = opts.file ?? '<spec>';
  const section = parseSweepSection(raw, file);
  const base = deepClone(raw) as Record<string, unknown>;
  delete base['sweep'];
  const cliAxes = cli.map((a) => parseCliSweep(a, base, fns));
  const all = expandOverrides(section, cliAxes);
  const varying = varyingPaths(all);
  const trials: Trial[] = [];
  const seen = new Map<string, number>();
  all.forEach((overrides, index) => {
    const trialRaw = deepClone(base);
    const assignments = Object.entries(overrides).map(([p, v]) => `${p}=${assignmentValue(v)}`);
    let name = trialName(index, overrides, varying, section.nameTemplate, trialRaw);
    const label = name;
    try {
      for (const [p, v] of Object.entries(overrides)) {
        if (p === 'sweep' || p.startsWith('sweep.')) throw new SpecError(`'${p}': the sweep section itself cannot be swept`, file);
        setPath(trialRaw, p, v);
      }
      const tracking = isPlainObject(trialRaw['tracking']) ? trialRaw['tracking'] : {};
      trialRaw['tracking'] = tracking;
      if (!('tracking.run_name' in overrides)) tracking['run_name'] = name;
      const config = fns.resolveConfig(trialRaw, { file, overrides: assignments });
      if (section.nameTemplate) {
        name = trialName(index, overrides, varying, section.nameTemplate, config);
        if (!('tracking.run_name' in overrides)) config.tracking.run_name = name;
      }
      const n = (seen.get(name) ?? 0) + 1;
      seen.set(name, n);
      if (n > 1) {
        name = `${name}#${index}`;
        if (!('tracking.run_name' in overrides)) config.tracking.run_name = name;
      }
      config.sweep = null;
      const params: Record<string, string> = {};
      for (const p of varying) if (p in overrides) params[p] = formatValue(overrides[p]);
      trials.push({ index, name, overrides, params, config });
    } catch (e) {
      const who = `${trialLabel(index, all.length)} (${label})`;
      if (e instanceof SpecError && e.line === undefined && /^--(set|sweep) /.test(e.file)) {
        // an override's own error: `trial 4/4 (mask_ratio=1.2): --set model.mask_ratio=1.2: must be < 1`
        throw new SpecError(e.format(), who);
      }
      const msg = blameOverride(messageOf(e), overrides, assignments);
      const inner = e instanceof SpecError ? e : null;
      if (inner && inner.line !== undefined) throw new SpecError(`${who}: ${msg}`, inner.file, inner.line, inner.col, inner.excerpt, inner.hint);
      throw new SpecError(inner ? `${inner.file}: ${msg}` : msg, who, undefined, undefined, undefined, inner?.hint);
    }
  });
  return trials;
}

/** Ranking metrics of a raw config's sweep section (default: `loss`, min). */
export function sweepMetrics(raw: object, file?: string): MetricSpec[] {
  return parseSweepSection(raw, file).metrics;
}
