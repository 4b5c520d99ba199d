/**
 * The params of a sweep's parent MLflow run: the base config's values except the swept keys, which are logged as the
 * sweep definition instead (`sweep.model.mask_ratio = [0.4, 0.6, 0.75]`, the values in trial order, each once), so
 * the parent never matches a trial filter such as ``params.`model.mask_ratio` = '0.6'``.
 *
 * Values are written as MLflow's Python client writes a list: Python's `str()` of it (`[0.4, 0.6, 0.75]`,
 * `['resnet_mini', 'convnext_mini']`, `None`, `True`). `pythonRepr` here is local to the sweep module until the track
 * module's param formatter (src/track/params.ts) is used for both.
 */
import { MAX_PARAM_VALUE_LENGTH, sanitizeKey, truncate } from '../track/keys.js';
import type { Overrides } from './types.js';

/** Python's repr of a float given as a JS number (shortest round-trip digits, Python's exponent rules). */
function pythonFloat(n: number): string {
  if (Number.isNaN(n)) return 'nan';
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : '-inf';
  if (Number.isInteger(n) && Math.abs(n) < 1e16) return String(n); // YAML `1` is an int in Python: no `.0`
  const [mant, expS] = Math.abs(n).toExponential().split('e') as [string, string];
  const exp = Number(expS);
  const digits = mant.replace('.', '');
  const sign = n < 0 ? '-' : '';
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
    const int = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
    const frac = digits.slice(exp + 1);
    return `${sign}${int}.${frac || '0'}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
}

function pythonString(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === quote) out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return quote + out + quote;
}

/** Python's `repr` of a YAML-loaded value (as an element of a list: strings quoted). */
export function pythonRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return pythonFloat(v);
  if (typeof v === 'string') return pythonString(v);
  if (Array.isArray(v)) return `[${v.map(pythonRepr).join(', ')}]`;
  if (typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .map(([k, x]) => `${pythonString(k)}: ${pythonRepr(x)}`)
      .join(', ')}}`;
  }
  return String(v);
}

/** The swept config paths (every path some trial overrides), in first-seen order. */
export function sweptPaths(overrides: readonly Overrides[]): string[] {
  const out: string[] = [];
  for (const o of overrides) for (const k of Object.keys(o)) if (!out.includes(k)) out.push(k);
  return out;
}

/** `sweep.<path>` → the values the trials take, in trial order, each once, as a Python list. */
export function sweepDefinitionParams(overrides: readonly Overrides[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of sweptPaths(overrides)) {
    const seen = new Set<string>();
    const values: unknown[] = [];
    for (const o of overrides) {
      if (!(k in o)) continue;
      const id = JSON.stringify(o[k]);
      if (seen.has(id)) continue;
      seen.add(id);
      values.push(o[k]);
    }
    out[sanitizeKey(`sweep.${k}`)] = truncate(pythonRepr(values), MAX_PARAM_VALUE_LENGTH);
  }
  return out;
}

/**
 * The parent run's params: `base` (the base config as params) without the swept keys (a swept key `model.encoder`
 * also drops `model.encoder.*`) and without anything the base logs under `sweep`, plus the sweep definition and
 * `sweep.trials`.
 */
export function parentParams(base: Record<string, string>, overrides: readonly Overrides[]): Record<string, string> {
  const swept = sweptPaths(overrides);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (k === 'sweep' || k.startsWith('sweep.')) continue;
    if (swept.some((p) => k === p || k.startsWith(p + '.'))) continue;
    out[k] = v;
  }
  Object.assign(out, sweepDefinitionParams(overrides));
  out['sweep.trials'] = String(overrides.length);
  return out;
}
