/**
 * MLflow's rules for keys and values (mlflow/utils/validation.py), and value formatting. A bad key written to the
 * file store breaks MLflow's reader for the whole experiment, so every key is checked before anything is written.
 */
import { TrackingError } from '../util/errors.js';

export const MAX_KEY_LENGTH = 250;
export const MAX_PARAM_VALUE_LENGTH = 6000;
/** Tag values: 5000 up to MLflow 2.16, 8000 from 2.17; the file store keeps the portable 5000. */
export const MAX_TAG_VALUE_LENGTH = 5000;
export const MAX_EXPERIMENT_NAME_LENGTH = 500;
export const MAX_METRICS_PER_BATCH = 1000;
export const MAX_PARAMS_PER_BATCH = 100;
export const MAX_TAGS_PER_BATCH = 100;
export const MAX_ENTITIES_PER_BATCH = 1000;

/** The portable name rule (no ':' so that MLflow ≤ 2.15 reads it). */
const NAME_RE = /^[A-Za-z0-9_.\- /]+$/;

/** True when `name` survives posixpath.normpath unchanged and stays relative. */
function pathIsUnique(name: string): boolean {
  if (name === '.' || name.startsWith('/') || name.endsWith('/') || name.includes('//')) return false;
  return !name.split('/').some((seg) => seg === '.' || seg === '..' || seg === '');
}

export type KeyKind = 'metric' | 'param' | 'tag';

/** Throws TrackingError(INVALID_PARAMETER_VALUE) when `key` is not a valid MLflow metric/param/tag name. */
export function validateKey(kind: KeyKind, key: string): void {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TrackingError(`Invalid ${kind} name: '${String(key)}'. Names may not be empty.`, 'INVALID_PARAMETER_VALUE', 400);
  }
  if (!NAME_RE.test(key)) {
    throw new TrackingError(
      `Invalid ${kind} name: '${key}'. Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), and slashes (/).`,
      'INVALID_PARAMETER_VALUE',
      400,
    );
  }
  if (!pathIsUnique(key)) {
    throw new TrackingError(
      `Invalid ${kind} name: '${key}'. Names cannot resolve to '.', contain '..' or '//', or start or end with '/'.`,
      'INVALID_PARAMETER_VALUE',
      400,
    );
  }
  if (key.length > MAX_KEY_LENGTH) {
    throw new TrackingError(`${kind} name '${key.slice(0, 40)}…' exceeds the maximum length of ${MAX_KEY_LENGTH}`, 'INVALID_PARAMETER_VALUE', 400);
  }
}

/** A key made valid: bad characters become '_', bad path segments collapse (used for keys built from user data). */
export function sanitizeKey(key: string): string {
  let k = key.replace(/[^A-Za-z0-9_.\- /]/g, '_');
  k = k
    .split('/')
    .filter((s) => s !== '' && s !== '.' && s !== '..')
    .join('/');
  if (!k) k = '_';
  return k.slice(0, MAX_KEY_LENGTH);
}

export function truncate(value: string, max: number): string {
  return value.length > max ? value.slice(0, max) : value;
}

/**
 * Numbers formatted like Python's `repr(float)` for non-integers (`1e-05`, `0.00015`, `1e+16`), integers as
 * integers (`3`, `224`). Params logged from Python and from spark then compare equal in filters for all values
 * except integral floats (Python `1.0`, spark `1`: YAML gives JS no way to tell them apart).
 */
export function formatNumber(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return Object.is(x, -0) ? '0' : String(x);
  // shortest round-trip digits and decimal exponent
  const [mant, expStr] = x.toExponential().split('e') as [string, string];
  const exp = Number(expStr);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  const sign = neg ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : String(Math.abs(exp));
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${'0'.repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

/**
 * A param / tag value as MLflow's Python client writes it: `str()` of the equivalent Python value (spec mlflow.md
 * §1.2). Strings as-is; integers as ints (`224`; YAML/PyYAML load spark's resolved config's integral numbers as
 * ints) and other numbers as Python's float repr (`0.0002`, `1e-08`); `None`, `True`/`False`; lists and mappings in
 * Python's repr (`[0.67, 1]`, `{'a': 1}`, strings inside quoted as Python quotes them).
 */
export function formatValue(v: unknown): string {
  return typeof v === 'string' ? v : pythonRepr(v);
}

/** Python's `repr()` of a JSON-like value (see formatValue). */
export function pythonRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') return pythonStrRepr(v);
  if (Array.isArray(v)) return `[${v.map(pythonRepr).join(', ')}]`;
  if (typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .map(([k, x]) => `${pythonStrRepr(k)}: ${pythonRepr(x)}`)
      .join(', ')}}`;
  }
  return String(v);
}

/** Python 3's `repr()` of a str: single quotes unless the text holds ' and no ", backslash escapes. */
export function pythonStrRepr(s: string): string {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === q) out += `\\${q}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else if (c >= 0x80 && c < 0xa0) out += `\\x${c.toString(16)}`;
    else out += ch;
  }
  return q + out + q;
}

/**
 * A param value written by older spark versions (JSON spellings: `[0.67,1]`, `null`, `true`) in the spelling
 * MLflow's Python client uses (`[0.67, 1]`, `None`, `True`); any other value unchanged. What `spark compare`
 * and the local filter use to read old stores.
 */
export function pythonSpelling(value: string): string {
  if (value === 'null') return 'None';
  if (value === 'true') return 'True';
  if (value === 'false') return 'False';
  const t = value.trim();
  if ((t.startsWith('[') && t.endsWith(']')) || (t.startsWith('{') && t.endsWith('}'))) {
    try {
      return pythonRepr(JSON.parse(t) as unknown);
    } catch {
      return value;
    }
  }
  return value;
}

/** Parse a metric value written by Python (`nan`, `inf`, `-inf`, `1.6`) or JS (`NaN`, `Infinity`, `1e+21`). */
export function parseMetricValue(s: string): number {
  const t = s.trim().toLowerCase();
  if (t === 'nan' || t === '+nan' || t === '-nan') return NaN;
  if (t === 'inf' || t === '+inf' || t === 'infinity' || t === '+infinity') return Infinity;
  if (t === '-inf' || t === '-infinity') return -Infinity;
  const n = Number(s);
  if (Number.isNaN(n)) throw new TrackingError(`bad metric value '${s}'`, 'INVALID_PARAMETER_VALUE');
  return n;
}

/**
 * A param value of a run as spark writes it today: runs written by spark (a `spark.*` tag) whose params predate
 * the Python spellings get them normalised (pythonSpelling); other runs' values are returned unchanged.
 */
export function normalisedParam(tags: Record<string, string>, value: string): string {
  return Object.keys(tags).some((k) => k.startsWith('spark.')) ? pythonSpelling(value) : value;
}
