/**
 * Composition of a spec: `extends:` chains (deep merge of mappings, lists and scalars replaced, later wins) and
 * `--set a.b=c` overrides typed by the schema. Every layer is kept so that an error in the merged result can be
 * traced back to the file (or override) that wrote the offending value.
 */
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { SpecError } from '../util/errors.js';
import { admittedTypes, childAt, rootAt, type SchemaAt } from './schema.js';
import { hasPath, locatePath, readSpec, errorAt, type ConfigPath, type SpecSource } from './source.js';
import { didYouMean } from './suggest.js';

/** One layer of a composed spec, in application order. */
export type Layer =
  | { kind: 'file'; src: SpecSource; abs: string }
  | { kind: 'set'; assignment: string; path: string[]; label: string };

/** Deepest `extends:` nesting accepted. */
export const MAX_EXTENDS_DEPTH = 32;

type Obj = Record<string, unknown>;

export function isPlainObject(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return v === undefined ? v : (structuredClone(v) as T);
}

/**
 * `train.epochs` / `train.steps` are alternatives: a layer that sets one (and not the other) replaces the other
 * inherited from an earlier layer.
 */
const EXCLUSIVE: Array<[string, string, string]> = [['train', 'epochs', 'steps']];

/** Deep merge `src` onto `target` (mutates target): mappings merge, everything else is replaced. */
export function deepMerge(target: Obj, src: Obj, at: string[] = []): Obj {
  for (const [k, v] of Object.entries(src)) {
    const cur = target[k];
    if (isPlainObject(v) && isPlainObject(cur)) deepMerge(cur, v, [...at, k]);
    else target[k] = clone(v);
  }
  for (const [section, a, b] of EXCLUSIVE) {
    if (at.length === 0 && isPlainObject(src[section]) && isPlainObject(target[section])) {
      clearAlternative(target[section] as Obj, src[section] as Obj, a, b);
    }
  }
  return target;
}

function clearAlternative(target: Obj, src: Obj, a: string, b: string): void {
  const setsA = src[a] !== undefined && src[a] !== null;
  const setsB = src[b] !== undefined && src[b] !== null;
  if (setsA && !(b in src)) target[b] = null;
  if (setsB && !(a in src)) target[a] = null;
}

function displayJoin(fromDisplay: string, rel: string): string {
  if (path.isAbsolute(rel)) return rel;
  return path.normalize(path.join(path.dirname(fromDisplay), rel));
}

/**
 * Load a spec file and, recursively, what it extends. Returns the file layers in application order (bases first,
 * the file itself last).
 */
export function loadLayers(file: string, display = file): Layer[] {
  return loadRec(path.resolve(file), display, [], null);
}

/** The `extends:` entry that named a file (where an unreadable base is reported). */
interface ExtendsSite {
  src: SpecSource;
  loc: ReturnType<typeof locatePath>;
}

function loadRec(abs: string, display: string, chain: Array<{ abs: string; display: string }>, from: ExtendsSite | null): Layer[] {
  let src: SpecSource;
  try {
    src = readSpec(abs, display);
  } catch (err) {
    // a missing base is reported at the `extends:` entry that names it
    if (from && err instanceof SpecError && err.line === undefined) {
      throw errorAt(from.src, from.loc, `${err.message.replace(/^cannot read spec/, 'cannot read extended spec')} '${display}'`);
    }
    throw err;
  }
  const here = [...chain, { abs, display }];
  const ext = src.data['extends'];
  const entries: Array<{ rel: string; at: ConfigPath }> = [];
  if (ext !== undefined && ext !== null) {
    if (typeof ext === 'string') entries.push({ rel: ext, at: ['extends'] });
    else if (Array.isArray(ext)) {
      ext.forEach((e, i) => {
        if (typeof e !== 'string' || e.length === 0) {
          throw errorAt(src, locatePath(src, ['extends', i]), `extends[${i}] must be a file path (a non-empty string)`);
        }
        entries.push({ rel: e, at: ['extends', i] });
      });
    } else {
      throw errorAt(src, locatePath(src, ['extends']), 'extends must be a file path or a list of file paths');
    }
  }
  const layers: Layer[] = [];
  for (const { rel, at } of entries) {
    const loc = locatePath(src, at);
    if (rel.length === 0) throw errorAt(src, loc, 'extends must not be empty');
    const childAbs = path.resolve(path.dirname(abs), rel);
    const childDisplay = displayJoin(display, rel);
    const cycleStart = here.findIndex((c) => c.abs === childAbs);
    if (cycleStart >= 0) {
      const names = [...here.slice(cycleStart).map((c) => c.display), childDisplay];
      throw errorAt(src, loc, `extends cycle: ${names.join(' -> ')}`);
    }
    if (here.length >= MAX_EXTENDS_DEPTH) throw errorAt(src, loc, `extends chain deeper than ${MAX_EXTENDS_DEPTH} files`);
    layers.push(...loadRec(childAbs, childDisplay, here, { src, loc }));
  }
  layers.push({ kind: 'file', src, abs });
  return layers;
}

/** Merge the file layers into one raw config (without `extends`). */
export function mergeLayers(layers: Layer[]): Obj {
  const out: Obj = {};
  for (const l of layers) {
    if (l.kind !== 'file') continue;
    const { extends: _e, ...data } = l.src.data;
    deepMerge(out, data);
  }
  return out;
}

/** A parsed `--set` assignment. */
export interface Assignment {
  path: string[];
  value: unknown;
  text: string;
}

const NUMBER_RE = /^[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

/** Turn the text of an override value into a value of a type the schema admits at that position. */
function parseValue(text: string, at: SchemaAt, origin: string): unknown {
  const t = text.trim();
  const yamlValue = (): unknown => {
    try {
      return parseYaml(t === '' ? '""' : t, { uniqueKeys: true, maxAliasCount: 10 });
    } catch (err) {
      const msg = String((err as Error).message).split('\n')[0]!.replace(/\s+at line \d+.*$/, '');
      throw new SpecError(`cannot parse the value '${text}': ${msg}`, origin, undefined, undefined, undefined, 'lists are written [a, b], mappings {k: v}');
    }
  };
  if (t.startsWith('[') || t.startsWith('{')) return yamlValue();
  const types = admittedTypes(at);
  if (!types) return yamlValue();
  if (types.has('null') && (t === 'null' || t === '~')) return null;
  if (types.has('boolean') && /^(true|false)$/i.test(t)) return t.toLowerCase() === 'true';
  if ((types.has('number') || types.has('integer')) && NUMBER_RE.test(t)) return Number(t.replace(/_/g, ''));
  if (types.has('string')) {
    if ((t.startsWith('"') && t.endsWith('"')) || (t.startsWith("'") && t.endsWith("'"))) return yamlValue();
    return text;
  }
  // not an admitted form: parse as YAML so validation reports the type it actually has
  return yamlValue();
}

/** Parse `a.b=c` against the schema: the path must exist (or lie in a free-form section); the value is typed. */
export function parseAssignment(assignment: string, label = '--set'): Assignment {
  const origin = `${label} ${assignment}`;
  const eq = assignment.indexOf('=');
  if (eq < 0) {
    throw new SpecError(`expected KEY=VALUE`, origin, undefined, undefined, undefined, 'e.g. --set model.mask_ratio=0.75');
  }
  const key = assignment.slice(0, eq).trim();
  const valueText = assignment.slice(eq + 1);
  const segs = key.split('.');
  if (key === '' || segs.some((s) => s.trim() === '')) {
    throw new SpecError(`'${key}' is not a config path (keys separated by dots, e.g. model.mask_ratio)`, origin);
  }
  if (segs[0] === 'extends') throw new SpecError('extends cannot be overridden with --set', origin);
  let at = rootAt();
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    const r = childAt(at, seg);
    if (!r.ok) {
      const where = i === 0 ? 'at the top level' : `in ${segs.slice(0, i).join('.')}`;
      if (r.reason === 'list') {
        throw new SpecError(`cannot set inside a list`, origin, undefined, undefined, undefined, `set the whole list, e.g. ${segs.slice(0, i).join('.')}=[…]`);
      }
      throw new SpecError(`unknown key '${seg}' ${where}`, origin, undefined, undefined, undefined, didYouMean(seg, r.known));
    }
    at = r.at;
  }
  return { path: segs, value: parseValue(valueText, at, origin), text: assignment };
}

/** Apply one `a.b=c` override to a raw config, returning a new object (the input is not modified). */
export function applyOverride(raw: object, assignment: string, label = '--set'): Obj {
  const a = parseAssignment(assignment, label);
  const out = clone(raw) as Obj;
  let cur: Obj = out;
  for (const seg of a.path.slice(0, -1)) {
    if (!isPlainObject(cur[seg])) cur[seg] = {};
    cur = cur[seg] as Obj;
  }
  const last = a.path[a.path.length - 1]!;
  cur[last] = clone(a.value);
  for (const [section, x, y] of EXCLUSIVE) {
    if (a.path.length === 2 && a.path[0] === section && (last === x || last === y)) {
      clearAlternative(cur, { [last]: a.value }, x, y);
    }
  }
  return out;
}

/**
 * The layer that wrote the value at `path` (last writer wins), or null. An override also owns the mappings above
 * the value it sets (`--set model.encoder.family=convnext` is to blame for what is then missing in model.encoder).
 */
export function ownerOf(layers: Layer[], p: ConfigPath): Layer | null {
  for (let i = layers.length - 1; i >= 0; i--) {
    const l = layers[i]!;
    if (l.kind === 'set') {
      const n = Math.min(l.path.length, p.length);
      if (p.length > 0 && l.path.slice(0, n).every((s, j) => String(p[j]) === s)) return l;
    } else if (hasPath(l.src.data, p)) return l;
  }
  return null;
}

/** `set` layers for a list of assignments (used for locating errors). */
export function setLayers(assignments: string[], label = '--set'): Layer[] {
  return assignments.map((assignment) => {
    const eq = assignment.indexOf('=');
    const key = eq < 0 ? assignment : assignment.slice(0, eq);
    return { kind: 'set' as const, assignment, path: key.trim().split('.'), label };
  });
}
