/**
 * MLflow's `runs/search` filter language and order_by, evaluated locally (for the file store) with the semantics
 * recorded against MLflow 2.12.2 (test/fixtures/mlflow/filter_semantics_2.12.2.txt, spec §5.2):
 * comparisons joined by AND only; params/tags/string attributes compare as quoted strings (= != LIKE ILIKE),
 * metrics as unquoted numbers on their latest value, `run_id` also IN / NOT IN; a run without the key never
 * matches, even for `!=`. Error messages are MLflow's.
 */
import { TrackingError } from '../util/errors.js';
import type { Run } from './types.js';
import { normalisedParam } from './keys.js';

export type EntityType = 'metric' | 'parameter' | 'tag' | 'attribute' | 'dataset';
export type Comparator = '=' | '!=' | '<' | '<=' | '>' | '>=' | 'LIKE' | 'ILIKE' | 'IN' | 'NOT IN';

export interface Comparison {
  type: EntityType;
  key: string;
  comparator: Comparator;
  /** number for metrics and numeric attributes, string otherwise, string[] for IN / NOT IN. */
  value: number | string | string[];
}

export interface OrderBy {
  type: EntityType;
  key: string;
  ascending: boolean;
}

const TYPE_ALIASES: Record<string, EntityType> = {
  metric: 'metric', metrics: 'metric',
  param: 'parameter', params: 'parameter', parameter: 'parameter', parameters: 'parameter',
  tag: 'tag', tags: 'tag',
  attribute: 'attribute', attributes: 'attribute', attr: 'attribute', run: 'attribute',
  dataset: 'dataset', datasets: 'dataset',
};
const STRING_ATTRIBUTES = ['run_id', 'run_name', 'status', 'user_id', 'artifact_uri', 'lifecycle_stage'];
const NUMERIC_ATTRIBUTES = ['start_time', 'end_time'];
const ATTRIBUTE_ALIASES: Record<string, string> = {
  'run name': 'run_name', 'Run name': 'run_name', 'Run Name': 'run_name',
  created: 'start_time', Created: 'start_time',
};
const DATASET_KEYS = ['name', 'digest', 'context'];
const NUMERIC_COMPARATORS: Comparator[] = ['>', '>=', '!=', '=', '<', '<='];
const STRING_COMPARATORS: Comparator[] = ['!=', '=', 'LIKE', 'ILIKE'];

function invalid(msg: string): TrackingError {
  return new TrackingError(msg, 'INVALID_PARAMETER_VALUE', 400);
}

// ---------------------------------------------------------------------------------------------------- tokenizer

type TokKind = 'word' | 'number' | 'sq' | 'dq' | 'bq' | 'op' | 'lparen' | 'rparen' | 'comma' | 'other';
interface Tok {
  kind: TokKind;
  /** Unquoted text for sq/dq/bq, raw text otherwise. */
  text: string;
  start: number;
  end: number;
}

const NUMBER_RE = /^(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.])/;

function tokenize(s: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const start = i;
    if (c === "'" || c === '"' || c === '`') {
      let j = i + 1;
      let text = '';
      for (;;) {
        if (j >= s.length) throw invalid(`Invalid filter string: unterminated quoted string starting at position ${start}: ${s.slice(start)}`);
        if (s[j] === c) {
          if (s[j + 1] === c && c !== '`') {
            text += c;
            j += 2;
            continue;
          }
          break;
        }
        if (s[j] === '\\' && j + 1 < s.length && s[j + 1] === c) {
          text += c;
          j += 2;
          continue;
        }
        text += s[j];
        j++;
      }
      out.push({ kind: c === "'" ? 'sq' : c === '"' ? 'dq' : 'bq', text, start, end: j + 1 });
      i = j + 1;
      continue;
    }
    const two = s.slice(i, i + 2);
    if (two === '!=' || two === '<>' || two === '<=' || two === '>=' || two === '==') {
      out.push({ kind: 'op', text: two === '<>' ? '!=' : two === '==' ? '=' : two, start, end: i + 2 });
      i += 2;
      continue;
    }
    if (c === '=' || c === '<' || c === '>') {
      out.push({ kind: 'op', text: c, start, end: i + 1 });
      i++;
      continue;
    }
    if (c === '(' || c === ')' || c === ',') {
      out.push({ kind: c === '(' ? 'lparen' : c === ')' ? 'rparen' : 'comma', text: c, start, end: i + 1 });
      i++;
      continue;
    }
    const num = /[0-9.]/.test(c) ? NUMBER_RE.exec(s.slice(i)) : null;
    if (num) {
      out.push({ kind: 'number', text: num[0], start, end: i + num[0].length });
      i += num[0].length;
      continue;
    }
    const w = /^[\p{L}\p{N}_.]+/u.exec(s.slice(i));
    if (w) {
      out.push({ kind: 'word', text: w[0], start, end: i + w[0].length });
      i += w[0].length;
      continue;
    }
    out.push({ kind: 'other', text: c, start, end: i + 1 });
    i++;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------- identifiers

interface Ident {
  type: EntityType;
  key: string;
}

/** Parse the tokens of an identifier; null when they do not form one. */
function parseIdentifier(toks: Tok[]): Ident | null {
  let typeWord: string | null = null;
  let key: string;
  if (toks.length === 1 && toks[0]!.kind === 'word') {
    const w = toks[0]!.text;
    const dot = w.indexOf('.');
    if (dot < 0) key = w;
    else {
      typeWord = w.slice(0, dot);
      key = w.slice(dot + 1);
      if (!key || !typeWord) return null;
    }
  } else if (toks.length === 1 && (toks[0]!.kind === 'bq' || toks[0]!.kind === 'dq')) {
    key = toks[0]!.text;
  } else if (
    toks.length === 2 &&
    toks[0]!.kind === 'word' &&
    toks[0]!.text.endsWith('.') &&
    toks[0]!.text.indexOf('.') === toks[0]!.text.length - 1 &&
    (toks[1]!.kind === 'bq' || toks[1]!.kind === 'dq') &&
    toks[1]!.start === toks[0]!.end
  ) {
    typeWord = toks[0]!.text.slice(0, -1);
    key = toks[1]!.text;
  } else return null;
  let type: EntityType = 'attribute';
  if (typeWord !== null) {
    const t = TYPE_ALIASES[typeWord.toLowerCase()];
    if (!t) {
      throw invalid(`Invalid entity type '${typeWord}'. Valid values are ['metric', 'parameter', 'tag', 'attribute', 'dataset']`);
    }
    type = t;
  }
  if (type === 'attribute') {
    key = ATTRIBUTE_ALIASES[key] ?? key;
    if (!STRING_ATTRIBUTES.includes(key) && !NUMERIC_ATTRIBUTES.includes(key)) {
      throw invalid(`Invalid attribute key '${key}' specified. Valid keys are '${JSON.stringify([...STRING_ATTRIBUTES, ...NUMERIC_ATTRIBUTES])}'`);
    }
  }
  if (type === 'dataset' && !DATASET_KEYS.includes(key)) {
    throw invalid(`Invalid dataset key '${key}' specified. Valid keys are '${JSON.stringify(DATASET_KEYS)}'`);
  }
  return { type, key };
}

// ---------------------------------------------------------------------------------------------------- filter

function splitClauses(src: string, toks: Tok[]): Tok[][] {
  const clauses: Tok[][] = [[]];
  let depth = 0;
  for (const t of toks) {
    if (t.kind === 'lparen') depth++;
    if (t.kind === 'rparen') depth--;
    if (t.kind === 'word' && depth === 0) {
      const u = t.text.toUpperCase();
      if (u === 'AND') {
        clauses.push([]);
        continue;
      }
      if (u === 'OR') throw invalid(`Invalid clause(s) in filter string: '${t.text}'`);
    }
    clauses[clauses.length - 1]!.push(t);
  }
  for (const c of clauses) {
    if (c.length === 0) throw invalid(`Invalid filter '${src}'. Could not be parsed.`);
  }
  return clauses;
}

function raw(src: string, toks: Tok[]): string {
  return toks.length ? src.slice(toks[0]!.start, toks[toks.length - 1]!.end) : '';
}

/** Parse a filter string into comparisons (AND-ed). Empty → []. Throws TrackingError(INVALID_PARAMETER_VALUE). */
export function parseFilter(filter: string | null | undefined): Comparison[] {
  const src = (filter ?? '').trim();
  if (!src) return [];
  const toks = tokenize(src);
  const out: Comparison[] = [];
  for (const clause of splitClauses(src, toks)) {
    // locate the comparator
    let ci = -1;
    let comparator: Comparator | null = null;
    let clen = 1;
    for (let i = 0; i < clause.length; i++) {
      const t = clause[i]!;
      if (t.kind === 'op') {
        ci = i;
        comparator = t.text as Comparator;
        break;
      }
      if (t.kind === 'word') {
        const u = t.text.toUpperCase();
        if (u === 'LIKE' || u === 'ILIKE' || u === 'IN') {
          ci = i;
          comparator = u as Comparator;
          break;
        }
        if (u === 'NOT' && clause[i + 1]?.kind === 'word' && clause[i + 1]!.text.toUpperCase() === 'IN') {
          ci = i;
          comparator = 'NOT IN';
          clen = 2;
          break;
        }
      }
    }
    if (ci < 0 || !comparator) throw invalid(`Invalid clause(s) in filter string: '${raw(src, clause)}'`);
    const left = clause.slice(0, ci);
    const right = clause.slice(ci + clen);
    if (left.length === 0) throw invalid(`Invalid comparison clause. Expected 'Identifier' found '${raw(src, clause)}'`);
    const ident = parseIdentifier(left);
    if (!ident) throw invalid(`Invalid comparison clause. Expected 'Identifier' found '${raw(src, left)}'`);
    if (right.length === 0) throw invalid(`Invalid comparison clause. Expected 3 tokens found 2`);
    out.push(buildComparison(src, ident, comparator, right));
  }
  return out;
}

function parseNumberValue(toks: Tok[]): number | null {
  if (toks.length === 1 && toks[0]!.kind === 'number') return Number(toks[0]!.text);
  if (toks.length === 2 && toks[0]!.kind === 'other' && (toks[0]!.text === '-' || toks[0]!.text === '+') && toks[1]!.kind === 'number') {
    const n = Number(toks[1]!.text);
    return toks[0]!.text === '-' ? -n : n;
  }
  return null;
}

function parseStringValue(toks: Tok[]): string | null {
  if (toks.length === 1 && (toks[0]!.kind === 'sq' || toks[0]!.kind === 'dq')) return toks[0]!.text;
  return null;
}

function parseList(toks: Tok[]): string[] | null {
  if (toks.length < 2 || toks[0]!.kind !== 'lparen' || toks[toks.length - 1]!.kind !== 'rparen') return null;
  const inner = toks.slice(1, -1);
  const vals: string[] = [];
  for (let i = 0; i < inner.length; i++) {
    const t = inner[i]!;
    if (i % 2 === 1) {
      if (t.kind !== 'comma') return null;
      continue;
    }
    if (t.kind !== 'sq' && t.kind !== 'dq') return null;
    vals.push(t.text);
  }
  if (inner.length > 0 && inner[inner.length - 1]!.kind === 'comma') return null;
  return vals;
}

function buildComparison(src: string, id: Ident, comparator: Comparator, right: Tok[]): Comparison {
  const rawValue = raw(src, right);
  const checkComparator = (allowed: Comparator[]) => {
    if (!allowed.includes(comparator)) {
      throw invalid(`Invalid comparator '${comparator}' not one of '${JSON.stringify(allowed).replace(/"/g, "'").replace(/,/g, ', ')}'`);
    }
  };
  if (id.type === 'metric') {
    const n = parseNumberValue(right);
    if (n === null) throw invalid(`Expected numeric value type for metric. Found ${rawValue}`);
    checkComparator(NUMERIC_COMPARATORS);
    return { ...id, comparator, value: n };
  }
  if (id.type === 'parameter' || id.type === 'tag') {
    const s = parseStringValue(right);
    if (s === null) throw invalid(`Expected a quoted string value for ${id.type} (e.g. 'my-value'). Got value ${rawValue}`);
    checkComparator(STRING_COMPARATORS);
    return { ...id, comparator, value: s };
  }
  if (id.type === 'attribute' && NUMERIC_ATTRIBUTES.includes(id.key)) {
    const n = parseNumberValue(right);
    if (n === null || !Number.isInteger(n)) throw invalid(`Expected numeric value type for numeric attribute: ${id.key}. Found ${rawValue}`);
    checkComparator(NUMERIC_COMPARATORS);
    return { ...id, comparator, value: n };
  }
  // string attributes and datasets
  const list = parseList(right);
  if (list) {
    if (id.type === 'attribute' && id.key !== 'run_id') {
      throw invalid(`Only the 'run_id' attribute supports comparison with a list of quoted string values.`);
    }
    if (comparator !== 'IN' && comparator !== 'NOT IN') {
      throw invalid(`Invalid comparator '${comparator}' for a list of values: use IN or NOT IN`);
    }
    return { ...id, comparator, value: list };
  }
  if (comparator === 'IN' || comparator === 'NOT IN') {
    throw invalid(`While parsing a list in the query, expected a non-empty list of string values, but got ${rawValue}`);
  }
  const s = parseStringValue(right);
  if (s === null) {
    throw invalid(
      id.type === 'attribute'
        ? `Expected a quoted string value for attributes. Got value ${rawValue}`
        : `Expected a quoted string value for dataset attributes. Got value ${rawValue}`,
    );
  }
  checkComparator(STRING_COMPARATORS);
  return { ...id, comparator, value: s };
}

// ---------------------------------------------------------------------------------------------------- evaluation

const likeCache = new Map<string, RegExp>();
/** SQL LIKE → anchored RegExp: `%` any run, `_` one character, everything else literal. */
export function likeToRegExp(pattern: string, caseInsensitive: boolean): RegExp {
  const k = `${caseInsensitive ? 'i' : 's'}:${pattern}`;
  let re = likeCache.get(k);
  if (!re) {
    let body = '';
    for (const ch of pattern) {
      if (ch === '%') body += '[\\s\\S]*';
      else if (ch === '_') body += '[\\s\\S]';
      else body += ch.replace(/[.*+?^${}()|[\]\\\/]/g, '\\$&');
    }
    re = new RegExp(`^${body}$`, caseInsensitive ? 'iu' : 'u');
    if (likeCache.size > 1000) likeCache.clear();
    likeCache.set(k, re);
  }
  return re;
}

function attributeValue(run: Run, key: string): string | number | null {
  const i = run.info;
  switch (key) {
    case 'run_id': return i.runId;
    case 'run_name': return i.runName;
    case 'status': return i.status;
    case 'user_id': return i.userId;
    case 'artifact_uri': return i.artifactUri;
    case 'lifecycle_stage': return i.lifecycleStage;
    case 'start_time': return i.startTime;
    case 'end_time': return i.endTime;
    default: return null;
  }
}

function compareNumbers(a: number, op: Comparator, b: number): boolean {
  switch (op) {
    case '=': return a === b;
    case '!=': return a !== b;
    case '<': return a < b;
    case '<=': return a <= b;
    case '>': return a > b;
    case '>=': return a >= b;
    default: return false;
  }
}

function compareStrings(a: string, op: Comparator, b: string | string[]): boolean {
  switch (op) {
    case '=': return a === b;
    case '!=': return a !== b;
    case 'LIKE': return likeToRegExp(b as string, false).test(a);
    case 'ILIKE': return likeToRegExp(b as string, true).test(a);
    case 'IN': return (b as string[]).includes(a);
    case 'NOT IN': return !(b as string[]).includes(a);
    default: return false;
  }
}

export function matchesComparison(run: Run, c: Comparison): boolean {
  switch (c.type) {
    case 'metric': {
      const v = run.data.metrics[c.key];
      return v !== undefined && compareNumbers(v, c.comparator, c.value as number);
    }
    case 'parameter': {
      const v = run.data.params[c.key];
      if (v === undefined) return false;
      // a spark run written before params took Python's spellings matches in either spelling
      const now = normalisedParam(run.data.tags, v);
      const a = compareStrings(v, c.comparator, c.value as string);
      if (now === v) return a;
      const b = compareStrings(now, c.comparator, c.value as string);
      return c.comparator === '!=' ? a && b : a || b;
    }
    case 'tag': {
      const v = run.data.tags[c.key];
      return v !== undefined && compareStrings(v, c.comparator, c.value as string);
    }
    case 'attribute': {
      const v = attributeValue(run, c.key);
      if (v === null || v === undefined) return false;
      if (typeof v === 'number') return compareNumbers(v, c.comparator, c.value as number);
      return compareStrings(v, c.comparator, c.value as string | string[]);
    }
    case 'dataset':
      return false; // spark logs no dataset inputs
  }
}

export function runMatches(run: Run, comparisons: Comparison[]): boolean {
  return comparisons.every((c) => matchesComparison(run, c));
}

/** Filter runs with an MLflow filter string. */
export function filterRuns(runs: Run[], filter: string | null | undefined): Run[] {
  const cs = parseFilter(filter);
  return cs.length ? runs.filter((r) => runMatches(r, cs)) : runs.slice();
}

// ---------------------------------------------------------------------------------------------------- order_by

export function parseOrderBy(clause: string): OrderBy {
  const src = clause.trim();
  let toks: Tok[];
  try {
    toks = tokenize(src);
  } catch {
    throw invalid(`Invalid order_by clause '${clause}'. Could not be parsed.`);
  }
  let ascending = true;
  const last = toks[toks.length - 1];
  if (last && last.kind === 'word' && toks.length > 1 && /^(ASC|DESC)$/i.test(last.text)) {
    ascending = last.text.toUpperCase() === 'ASC';
    toks = toks.slice(0, -1);
  }
  let id: Ident | null;
  try {
    id = parseIdentifier(toks);
  } catch (e) {
    throw invalid(`Invalid order_by clause '${clause}'. ${(e as Error).message}`);
  }
  if (!id || id.type === 'dataset') throw invalid(`Invalid order_by clause '${clause}'. Could not be parsed.`);
  return { ...id, ascending };
}

function sortValue(run: Run, o: OrderBy): string | number | null | undefined {
  switch (o.type) {
    case 'metric': return run.data.metrics[o.key];
    case 'parameter': return run.data.params[o.key];
    case 'tag': return run.data.tags[o.key];
    default: return attributeValue(run, o.key);
  }
}

/**
 * MLflow's ordering: base order start_time DESC then run_id; then each order_by clause, last first, as a stable
 * sort. Missing values go last in both directions, NaN just before them.
 */
export function sortRuns(runs: Run[], orderBy: string[] | null | undefined): Run[] {
  let out = runs.slice().sort((a, b) => b.info.startTime - a.info.startTime || (a.info.runId < b.info.runId ? -1 : a.info.runId > b.info.runId ? 1 : 0));
  const clauses = (orderBy ?? []).filter((s) => s.trim()).map(parseOrderBy);
  for (const o of clauses.reverse()) {
    const rank = (v: unknown) => (v === null || v === undefined ? 2 : typeof v === 'number' && Number.isNaN(v) ? 1 : 0);
    out = out.slice().sort((a, b) => {
      const va = sortValue(a, o);
      const vb = sortValue(b, o);
      const ra = rank(va);
      const rb = rank(vb);
      if (ra !== rb) return ra - rb;
      if (ra !== 0) return 0;
      const c = (va as string | number) < (vb as string | number) ? -1 : (va as string | number) > (vb as string | number) ? 1 : 0;
      return o.ascending ? c : -c;
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------- pages

export const SEARCH_MAX_RESULTS_DEFAULT = 1000;
export const SEARCH_MAX_RESULTS_THRESHOLD = 50000;

export function paginate<T>(items: T[], pageToken: string | null | undefined, maxResults: number): { items: T[]; nextPageToken?: string } {
  if (!Number.isInteger(maxResults) || maxResults <= 0 || maxResults > SEARCH_MAX_RESULTS_THRESHOLD) {
    throw invalid(`Invalid value for request parameter max_results. It must be at most ${SEARCH_MAX_RESULTS_THRESHOLD}, but got value ${maxResults}`);
  }
  let offset = 0;
  if (pageToken) {
    try {
      const o = JSON.parse(Buffer.from(pageToken, 'base64').toString('utf8')) as { offset?: unknown };
      if (typeof o.offset !== 'number' || !Number.isInteger(o.offset) || o.offset < 0) throw new Error('bad offset');
      offset = o.offset;
    } catch {
      throw invalid(`Invalid page token, could not base64-decode`);
    }
  }
  const end = offset + maxResults;
  const page = items.slice(offset, end);
  return end < items.length ? { items: page, nextPageToken: Buffer.from(JSON.stringify({ offset: end })).toString('base64') } : { items: page };
}
