/**
 * Validation and defaults: raw (merged) config → ExperimentConfig, with every problem reported as one located
 * SpecError (`file:line:col: message` + excerpt, or `--set a.b=c: message` when an override wrote the value).
 */
import { statSync } from 'node:fs';
import type { ErrorObject } from 'ajv';
import { SpecError } from '../util/errors.js';
import { roundHalfEven } from '../util/rng.js';
import { loadLayers, ownerOf, setLayers, isPlainObject, type Layer } from './compose.js';
import { expand, experimentSchema, experimentValidator, type SchemaNode } from './schema.js';
import { errorAt, hasPath, locatePath, type ConfigPath } from './source.js';
import { didYouMean } from './suggest.js';
import type { ExperimentConfig } from './types.js';

/** Spec files larger than this are not read again just to locate an error. */
const MAX_SPEC_BYTES = 4 * 1024 * 1024;

/** Where a raw config came from, for error messages. */
export interface ConfigOrigin {
  /** The spec file (used for positions when it can be read, else named in messages). */
  file: string;
  /** `a.b=c` assignments applied on top of it (in order). */
  overrides?: string[];
  /** How overrides are named in messages (default `--set`; a sweep may say `sweep trial 3:`). */
  overrideLabel?: string;
}

/** One problem found in a config, before it is attributed to a file or an override. */
export interface Issue {
  path: Array<string | number>;
  /** Point at the key (unknown/missing keys) or at the value. */
  kind: 'key' | 'value';
  /** `withSubject` = prefix the config path (file origins, or an override that wrote a parent of the path). */
  message: (withSubject: boolean, withDetail: boolean) => string;
  hint?: string;
}

/** `model.encoder.layers[2]`. */
export function pathLabel(p: ConfigPath): string {
  let s = '';
  for (const seg of p) {
    if (typeof seg === 'number') s += `[${seg}]`;
    else if (!/^[A-Za-z0-9_-]+$/.test(seg)) s += `[${JSON.stringify(seg)}]`;
    else s += s ? `.${seg}` : seg;
  }
  return s || '(top level)';
}

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return `a list of ${v.length}`;
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'boolean') return String(v);
  return String(v);
}

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
  null: 'null',
};

function typesPhrase(types: string[]): string {
  const ws = types.map((t) => TYPE_WORDS[t] ?? t);
  return ws.length <= 1 ? (ws[0] ?? 'valid') : `${ws.slice(0, -1).join(', ')} or ${ws[ws.length - 1]}`;
}

function simple(p: Array<string | number>, predicate: string, got: unknown, hint?: string, kind: 'key' | 'value' = 'value'): Issue {
  const detail = got === undefined ? '' : ` (got ${describeValue(got)})`;
  return { path: p, kind, hint, message: (subj, det) => `${subj ? `${pathLabel(p)} ` : ''}${predicate}${det ? detail : ''}` };
}

function instancePath(e: ErrorObject, data: unknown): Array<string | number> {
  const out: Array<string | number> = [];
  let cur: unknown = data;
  for (const raw of e.instancePath.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur) && /^\d+$/.test(seg)) {
      out.push(Number(seg));
      cur = cur[Number(seg)];
    } else {
      out.push(seg);
      cur = isPlainObject(cur) ? cur[seg] : undefined;
    }
  }
  return out;
}

const NAME_RULE = "letters, digits, '.', '_' and '-' only, starting with a letter or digit";

/** A value that is a keyword or an integer (`train.accumulate`: 'auto' or ≥ 1): "must be 'auto' or an integer >= 1". */
function keywordOrInteger(ps: SchemaNode | undefined): string | null {
  const node = ps as { type?: unknown; pattern?: unknown; minimum?: unknown } | undefined;
  const types = Array.isArray(node?.type) ? (node!.type as string[]) : [];
  const m = typeof node?.pattern === 'string' ? /^\^(\w+)\$$/.exec(node.pattern) : null;
  if (!m || !types.includes('integer') || !types.includes('string')) return null;
  return `must be '${m[1]}' or an integer${typeof node?.minimum === 'number' ? ` >= ${node.minimum}` : ''}`;
}

/** Translate one ajv error; null for meta-errors that only repeat another (if/then). */
export function issueFromAjv(e: ErrorObject, data: unknown): Issue | null {
  const p = instancePath(e, data);
  const ps = e.parentSchema as SchemaNode | undefined;
  const params = e.params as Record<string, unknown>;
  const either = keywordOrInteger(ps);
  if (either && (e.keyword === 'type' || e.keyword === 'pattern')) return simple(p, either, e.data);
  const got = e.data;
  if (e.propertyName !== undefined && e.keyword !== 'propertyNames') {
    // a rule on the key itself (JSON Schema propertyNames)
    const key = e.propertyName;
    const rule = e.keyword === 'pattern' ? `must match ${String(params['pattern'])}` : (e.message ?? 'is not allowed');
    return { path: [...p, key], kind: 'key', message: () => `key '${key}' ${p.length ? `in ${pathLabel(p)} ` : ''}${rule}` };
  }
  switch (e.keyword) {
    case 'propertyNames':
    case 'if':
    case 'anyOf':
    case 'oneOf':
    case 'allOf':
      return null;
    case 'required': {
      const missing = String(params['missingProperty']);
      const hint = p.length === 0 && missing === 'name' ? 'every experiment needs a name' : undefined;
      return { path: p, kind: 'key', hint, message: () => `missing required field '${missing}'${p.length ? ` in ${pathLabel(p)}` : ''}` };
    }
    case 'additionalProperties': {
      const key = String(params['additionalProperty']);
      const known = Object.keys(ps?.properties ?? {});
      return {
        path: [...p, key],
        kind: 'key',
        hint: didYouMean(key, known),
        message: () => `unknown key '${key}' ${p.length ? `in ${pathLabel(p)}` : 'at the top level'}`,
      };
    }
    case 'type': {
      const t = params['type'];
      const types = Array.isArray(t) ? (t as string[]) : String(t).split(',');
      const hint =
        types.length === 1 && types[0] === 'string' && (typeof got === 'number' || typeof got === 'boolean')
          ? `quote it: '${String(got)}'`
          : undefined;
      return simple(p, `must be ${typesPhrase(types)}`, got, hint);
    }
    case 'enum': {
      const allowed = (params['allowedValues'] as unknown[]) ?? [];
      const hint = typeof got === 'string' ? didYouMean(got, allowed.map(String)) : undefined;
      return simple(p, `must be one of: ${allowed.map((a) => String(a)).join(', ')}`, got, hint);
    }
    case 'const':
      return simple(p, `must be ${JSON.stringify(params['allowedValue'])}`, got);
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return simple(p, `must be ${String(params['comparison'])} ${String(params['limit'])}`, got);
    case 'multipleOf': {
      const m = Number(params['multipleOf']);
      let hint: string | undefined;
      if (typeof got === 'number' && Number.isFinite(got)) {
        const lo = Math.floor(got / m) * m;
        const hi = lo + m;
        hint = lo > 0 ? `nearest: ${lo} or ${hi}` : `nearest: ${hi}`;
      }
      return simple(p, `must be a multiple of ${m}`, got, hint);
    }
    case 'minItems':
    case 'maxItems': {
      const n = Number(params['limit']);
      const exact = ps && ps.minItems !== undefined && ps.minItems === ps.maxItems;
      const pred = exact
        ? `must be a list of exactly ${n} item${n === 1 ? '' : 's'}`
        : e.keyword === 'minItems'
          ? `must have at least ${n} item${n === 1 ? '' : 's'}`
          : `must have at most ${n} item${n === 1 ? '' : 's'}`;
      return simple(p, pred, got);
    }
    case 'minLength': {
      const n = Number(params['limit']);
      return simple(p, n <= 1 ? 'must not be empty' : `must be at least ${n} characters long`, undefined);
    }
    case 'maxLength':
      return simple(p, `must be at most ${String(params['limit'])} characters long`, undefined);
    case 'pattern':
      return simple(p, p.length === 1 && p[0] === 'name' ? `must use ${NAME_RULE}` : `must match the pattern ${String(params['pattern'])}`, got);
    default:
      return simple(p, e.message ?? `fails the '${e.keyword}' rule`, got);
  }
}

type Obj = Record<string, unknown>;

/** `oneOf`/`anyOf` branches each report their `type`: fold those at one place into one error listing all types. */
function mergeTypeErrors(errors: ErrorObject[]): ErrorObject[] {
  const byPath = new Map<string, ErrorObject>();
  const out: ErrorObject[] = [];
  for (const e of errors) {
    if (e.keyword !== 'type') {
      out.push(e);
      continue;
    }
    const t = (e.params as { type: string | string[] }).type;
    const types = Array.isArray(t) ? t : String(t).split(',');
    const prev = byPath.get(e.instancePath);
    if (prev) {
      const pt = (prev.params as { type: string[] }).type;
      for (const x of types) if (!pt.includes(x)) pt.push(x);
    } else {
      const merged = { ...e, params: { type: [...types] } };
      byPath.set(e.instancePath, merged);
      out.push(merged);
    }
  }
  // A failed `type` stops the other keywords of its schema, so a more specific error at or under the same place
  // comes from another branch that did match the type: that one is the useful message.
  return out.filter(
    (e) =>
      e.keyword !== 'type' ||
      !out.some(
        (o) =>
          o !== e &&
          o.keyword !== 'type' &&
          !['if', 'oneOf', 'anyOf', 'allOf', 'propertyNames'].includes(o.keyword) &&
          (o.instancePath === e.instancePath || o.instancePath.startsWith(e.instancePath + '/')),
      ),
  );
}

function genericIssue(e: ErrorObject, data: unknown): Issue {
  const p = instancePath(e, data);
  const what = e.keyword === 'oneOf' ? 'must match exactly one of the allowed forms' : e.keyword === 'anyOf' ? 'must match one of the allowed forms' : (e.message ?? 'is invalid');
  return simple(p, what, e.data);
}

/**
 * Checks across fields that the schema cannot express, in order of importance. `written(path)` tells whether a
 * spec or override wrote the value (so a message can blame the written side of a conflict, not a default).
 */
export function semanticIssues(cfg: ExperimentConfig, written: (p: ConfigPath) => boolean = () => true): Issue[] {
  const out: Issue[] = [];
  const t = cfg.train;
  if (t.epochs != null && t.steps != null) {
    out.push({
      path: ['train', 'steps'],
      kind: 'key',
      hint: 'set the other one to null',
      message: () => `set only one of train.epochs (${t.epochs}) and train.steps (${t.steps})`,
    });
  }
  if (cfg.data.source === 'imagefolder' && cfg.data.root == null) {
    out.push({
      path: ['data', 'source'],
      kind: 'value',
      hint: 'set data.root to the image folder',
      message: () => `data.root is required when data.source is 'imagefolder'`,
    });
  }
  for (const key of ['crop_scale', 'crop_ratio'] as const) {
    const [lo, hi] = cfg.data[key];
    if (lo > hi) out.push(simple(['data', key], `must be [min, max] with min <= max`, undefined));
  }
  const f = cfg.data.input_size / 32;
  const cells = f * f;
  const keep = roundHalfEven(cells * (1 - cfg.model.mask_ratio));
  // masking only matters for pre-training (fine-tuning and probes run the dense encoder)
  if (cfg.task === 'pretrain' && (keep < 1 || keep >= cells)) {
    const what = keep < 1 ? 'leaves no visible cell' : 'masks no cell';
    const p = written(['model', 'mask_ratio']) || !written(['data', 'input_size']) ? ['model', 'mask_ratio'] : ['data', 'input_size'];
    out.push({
      path: p,
      kind: 'value',
      hint: 'change model.mask_ratio or data.input_size',
      message: () =>
        `mask ratio ${cfg.model.mask_ratio} ${what} at input ${cfg.data.input_size} ` +
        `(${f}×${f} grid: round(${cells}×${+(1 - cfg.model.mask_ratio).toFixed(6)}) = ${keep} visible)`,
    });
  }
  if (t.warmup_steps == null && t.epochs != null && t.warmup_epochs >= t.epochs) {
    out.push(
      written(['train', 'warmup_epochs']) || !written(['train', 'epochs'])
        ? simple(['train', 'warmup_epochs'], `must be < train.epochs (${t.epochs})`, t.warmup_epochs)
        : simple(['train', 'epochs'], `must be > train.warmup_epochs (${t.warmup_epochs}, the default)`, t.epochs, 'set train.warmup_epochs or train.warmup_steps'),
    );
  }
  if (typeof t.accumulate === 'number' && t.batch_size % t.accumulate !== 0) {
    out.push({
      path: ['train', 'accumulate'],
      kind: 'value',
      hint: "use a divisor of train.batch_size, or 'auto'",
      message: () => `train.accumulate (${t.accumulate}) must divide train.batch_size (${t.batch_size}) into equal micro-batches`,
    });
  }
  if (t.warmup_steps != null && t.steps != null && t.warmup_steps >= t.steps) {
    out.push(simple(['train', 'warmup_steps'], `must be < train.steps (${t.steps})`, t.warmup_steps));
  }
  return out;
}

function lastFileLayer(layers: Layer[]): Extract<Layer, { kind: 'file' }> | null {
  for (let i = layers.length - 1; i >= 0; i--) {
    const l = layers[i]!;
    if (l.kind === 'file') return l;
  }
  return null;
}

/** Attribute an issue to the layer that wrote it and build the SpecError. */
export function issueToError(issue: Issue, layers: Layer[], fallbackFile: string): SpecError {
  for (let n = issue.path.length; n >= 0; n--) {
    const p = issue.path.slice(0, n);
    const owner = n === 0 ? lastFileLayer(layers) : ownerOf(layers, p);
    if (!owner) continue;
    if (owner.kind === 'set') {
      const same = owner.path.length === issue.path.length && owner.path.every((s, i) => String(issue.path[i]) === s);
      return new SpecError(issue.message(!same, false), `${owner.label} ${owner.assignment}`, undefined, undefined, undefined, issue.hint);
    }
    const loc = locatePath(owner.src, p, n === issue.path.length ? issue.kind : 'key');
    return errorAt(owner.src, loc, issue.message(true, true), issue.hint);
  }
  return new SpecError(issue.message(true, true), fallbackFile, undefined, undefined, undefined, issue.hint);
}

function issueRank(issue: Issue, layers: Layer[]): [number, number, number] {
  for (let n = issue.path.length; n >= 0; n--) {
    const p = issue.path.slice(0, n);
    const owner = n === 0 ? lastFileLayer(layers) : ownerOf(layers, p);
    if (!owner) continue;
    const idx = layers.indexOf(owner);
    if (owner.kind === 'set') return [idx, 0, 0];
    const loc = locatePath(owner.src, p, n === issue.path.length ? issue.kind : 'key');
    return [idx, loc?.line ?? 0, loc?.col ?? 0];
  }
  return [Number.MAX_SAFE_INTEGER, 0, 0];
}

/** Pick the issue to report: the first in layer order, then in file order. */
export function firstIssue(issues: Issue[], layers: Layer[]): Issue {
  const ranked = issues.map((i) => ({ i, r: issueRank(i, layers) }));
  ranked.sort((a, b) => a.r[0] - b.r[0] || a.r[1] - b.r[1] || a.r[2] - b.r[2]);
  return ranked[0]!.i;
}

/**
 * Validate a raw config against the schema, fill defaults and run the cross-field checks. `layers` locate errors;
 * the input is not modified.
 */
export function resolveWithLayers(raw: object, layers: Layer[], fallbackFile: string): ExperimentConfig {
  if (!isPlainObject(raw)) throw new SpecError('a config must be a mapping', fallbackFile);
  const data = structuredClone(raw) as Obj;
  const validate = experimentValidator();
  if (!validate(data)) {
    const errors = mergeTypeErrors(validate.errors ?? []);
    let issues = errors.map((e) => issueFromAjv(e, data)).filter((x): x is Issue => x !== null);
    // only combinator errors (e.g. a value matching two `oneOf` forms): report the combinator itself
    if (!issues.length && errors.length) issues = [genericIssue(errors[0]!, data)];
    if (issues.length) throw issueToError(firstIssue(issues, layers), layers, fallbackFile);
  }
  delete data['extends'];
  // `steps` given without `epochs`: the epochs default does not apply
  const rawTrain = isPlainObject((raw as Obj)['train']) ? ((raw as Obj)['train'] as Obj) : {};
  const train = data['train'] as Obj;
  if (rawTrain['steps'] != null && !('epochs' in rawTrain)) train['epochs'] = null;
  const cfg = data as unknown as ExperimentConfig;
  const semantic = semanticIssues(cfg, (p) => hasPath(raw, p));
  if (semantic.length) throw issueToError(semantic[0]!, layers, fallbackFile);
  return orderLike(cfg, experimentSchema()) as ExperimentConfig;
}

/**
 * Check a partial config (a base file that full specs extend) as far as it can be checked alone: every schema rule
 * (keys, types, ranges, enums) except required fields, which a spec extending it may add; the cross-field checks
 * need the full spec and are left to the specs that extend it. Throws the first located SpecError.
 */
export function checkPartialWithLayers(raw: object, layers: Layer[], fallbackFile: string): void {
  if (!isPlainObject(raw)) throw new SpecError('a config must be a mapping', fallbackFile);
  const data = structuredClone(raw) as Obj;
  const validate = experimentValidator();
  if (validate(data)) return;
  // type errors are folded while the `required` errors of other branches are still there to outrank them
  const errors = mergeTypeErrors(validate.errors ?? []).filter((e) => e.keyword !== 'required');
  const issues = errors.map((e) => issueFromAjv(e, data)).filter((x): x is Issue => x !== null);
  if (issues.length) throw issueToError(firstIssue(issues, layers), layers, fallbackFile);
}

/**
 * Validate + defaults for a raw config (e.g. a sweep trial). Positions come from `origin.file` when it can be read;
 * values written by `origin.overrides` are reported as `--set a.b=c: message`.
 */
export function resolveConfig(raw: object, origin: ConfigOrigin): ExperimentConfig {
  let layers: Layer[] = [];
  // positions only from something that looks like a spec (origin.file may name e.g. an imported checkpoint)
  if (/\.ya?ml$/i.test(origin.file)) {
    try {
      if (statSync(origin.file).size <= MAX_SPEC_BYTES) layers = loadLayers(origin.file);
    } catch {
      layers = [];
    }
  }
  layers = [...layers, ...setLayers(origin.overrides ?? [], origin.overrideLabel ?? '--set')];
  return resolveWithLayers(raw, layers, origin.file);
}

/** Rebuild mappings with keys in the schema's property order (free-form keys after, as written). */
function orderLike(value: unknown, schema: SchemaNode | null, doc: SchemaNode = experimentSchema()): unknown {
  if (!isPlainObject(value)) return value;
  const props: Record<string, { node: SchemaNode; doc: SchemaNode }> = {};
  if (schema) for (const p of expand(schema, doc)) for (const [k, s] of Object.entries(p.node.properties ?? {})) props[k] ??= { node: s, doc: p.doc };
  const out: Obj = {};
  for (const k of Object.keys(props)) if (k in value) out[k] = orderLike(value[k], props[k]!.node, props[k]!.doc);
  for (const [k, v] of Object.entries(value)) if (!(k in out)) out[k] = v;
  return out;
}
