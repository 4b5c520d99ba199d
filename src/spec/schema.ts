/**
 * The experiment JSON Schema (schemas/experiment.schema.json, with sweep/finetune sub-schemas): loading, the
 * compiled ajv validator (which also applies defaults), and navigation by config path for `--set` typing and
 * "did you mean" suggestions.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { schemasDir } from '../util/paths.js';

/** A JSON Schema node (only the keywords this module reads are typed). */
export interface SchemaNode {
  $ref?: string;
  type?: string | string[];
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean | SchemaNode;
  required?: string[];
  items?: SchemaNode;
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  description?: string;
  allOf?: SchemaNode[];
  anyOf?: SchemaNode[];
  oneOf?: SchemaNode[];
  if?: SchemaNode;
  then?: SchemaNode;
  else?: SchemaNode;
  $defs?: Record<string, SchemaNode>;
  minItems?: number;
  maxItems?: number;
  [k: string]: unknown;
}

/** Sub-schemas referenced by file name from the experiment schema. */
export const SUB_SCHEMAS = ['sweep.schema.json', 'finetune.schema.json'] as const;
export const EXPERIMENT_SCHEMA = 'experiment.schema.json';

let cache: { schemas: Map<string, SchemaNode>; validate: ValidateFunction } | null = null;

function readSchema(name: string): SchemaNode {
  const file = path.join(schemasDir(), name);
  return JSON.parse(readFileSync(file, 'utf8')) as SchemaNode;
}

function load(): { schemas: Map<string, SchemaNode>; validate: ValidateFunction } {
  if (cache) return cache;
  const schemas = new Map<string, SchemaNode>();
  const ajv = new Ajv2020({ allErrors: true, useDefaults: true, verbose: true, strict: true, allowUnionTypes: true });
  for (const name of SUB_SCHEMAS) {
    const s = readSchema(name);
    schemas.set(name, s);
    // a root `default` is meaningless to ajv (strict mode refuses it); the default applies where the schema is
    // referenced, in experiment.schema.json
    const { default: _d, ...forAjv } = s;
    // registered under its file name, which is how the experiment schema refers to it (unless it has its own $id)
    ajv.addSchema(forAjv, typeof s['$id'] === 'string' ? undefined : name);
  }
  const root = readSchema(EXPERIMENT_SCHEMA);
  schemas.set(EXPERIMENT_SCHEMA, root);
  const validate = ajv.compile(root);
  cache = { schemas, validate };
  return cache;
}

/** The experiment schema (parsed JSON). */
export function experimentSchema(): SchemaNode {
  return load().schemas.get(EXPERIMENT_SCHEMA)!;
}

/** The compiled validator; it mutates its input (fills defaults). */
export function experimentValidator(): ValidateFunction {
  return load().validate;
}

/** Resolve a `$ref` (local `#/$defs/x` in `doc`, or a sub-schema file name) to its schema and its document. */
export function deref(node: SchemaNode, doc: SchemaNode): { node: SchemaNode; doc: SchemaNode } {
  let cur = node;
  let curDoc = doc;
  for (let guard = 0; cur.$ref && guard < 32; guard++) {
    const ref = cur.$ref;
    const hash = ref.indexOf('#');
    const file = hash < 0 ? ref : ref.slice(0, hash);
    const pointer = hash < 0 ? '' : ref.slice(hash + 1);
    if (file) {
      const base = path.basename(file);
      const s = load().schemas.get(base);
      if (!s) throw new Error(`schema reference to unknown file '${ref}'`);
      curDoc = s;
    }
    let target: unknown = curDoc;
    for (const part of pointer.split('/').filter(Boolean)) target = (target as Record<string, unknown>)[decodeURIComponent(part)];
    if (!target || typeof target !== 'object') throw new Error(`unresolvable schema reference '${ref}'`);
    const { $ref: _ref, ...siblings } = cur;
    // the target's own $ref (if any) survives the spread and is followed on the next turn
    cur = { ...(target as SchemaNode), ...siblings };
  }
  return { node: cur, doc: curDoc };
}

/**
 * A schema node expanded into every sub-schema that constrains the same instance: `$ref`, `allOf`, `anyOf`,
 * `oneOf`, `then` and `else` (the `if` condition itself is not a constraint).
 */
export function expand(node: SchemaNode, doc: SchemaNode): Array<{ node: SchemaNode; doc: SchemaNode }> {
  const out: Array<{ node: SchemaNode; doc: SchemaNode }> = [];
  const visit = (n: SchemaNode, d: SchemaNode, depth: number) => {
    if (depth > 16) return;
    const r = deref(n, d);
    out.push(r);
    for (const k of ['allOf', 'anyOf', 'oneOf'] as const) for (const s of r.node[k] ?? []) visit(s, r.doc, depth + 1);
    if (r.node.then) visit(r.node.then, r.doc, depth + 1);
    if (r.node.else) visit(r.node.else, r.doc, depth + 1);
  };
  visit(node, doc, 0);
  return out;
}

export interface SchemaAt {
  /** The expanded sub-schemas at the path (empty when the path is free-form, e.g. inside `sweep:`). */
  parts: Array<{ node: SchemaNode; doc: SchemaNode }>;
  /** True when the schema does not constrain the value (free-form mapping content). */
  free: boolean;
}

/** Types a schema position admits (`type` keywords plus types implied by enum/const), or null when unconstrained. */
export function admittedTypes(at: SchemaAt): Set<string> | null {
  if (at.free) return null;
  const types = new Set<string>();
  let constrained = false;
  for (const { node } of at.parts) {
    if (node.type) {
      constrained = true;
      for (const t of Array.isArray(node.type) ? node.type : [node.type]) types.add(t);
    }
    for (const v of node.enum ?? (node.const !== undefined ? [node.const] : [])) {
      constrained = true;
      types.add(v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? 'number' : typeof v);
    }
  }
  return constrained ? types : null;
}

export type ChildLookup =
  | { ok: true; at: SchemaAt }
  | { ok: false; reason: 'unknown'; known: string[] }
  | { ok: false; reason: 'list' };

/** The schema of a mapping key under a schema position. */
export function childAt(at: SchemaAt, key: string): ChildLookup {
  if (at.free) return { ok: true, at: { parts: [], free: true } };
  const found: Array<{ node: SchemaNode; doc: SchemaNode }> = [];
  const known = new Set<string>();
  let closed = false;
  let openSchema: { node: SchemaNode; doc: SchemaNode } | null = null;
  let listOnly = at.parts.length > 0;
  for (const p of at.parts) {
    const t = p.node.type;
    const types = t === undefined ? null : Array.isArray(t) ? t : [t];
    if (!types || types.includes('object')) listOnly = false;
    for (const [k, s] of Object.entries(p.node.properties ?? {})) {
      known.add(k);
      if (k === key) found.push({ node: s, doc: p.doc });
    }
    const ap = p.node.additionalProperties;
    if (ap === false) closed = true;
    else if (ap && typeof ap === 'object') openSchema = { node: ap, doc: p.doc };
  }
  if (found.length) return { ok: true, at: { parts: found.flatMap((f) => expand(f.node, f.doc)), free: false } };
  if (listOnly) return { ok: false, reason: 'list' };
  if (openSchema) return { ok: true, at: { parts: expand(openSchema.node, openSchema.doc), free: false } };
  if (closed) return { ok: false, reason: 'unknown', known: [...known] };
  return { ok: true, at: { parts: [], free: true } };
}

/** The schema position of the experiment root. */
export function rootAt(): SchemaAt {
  const root = experimentSchema();
  return { parts: expand(root, root), free: false };
}

/** Property names allowed at a schema node (for suggestions in unknown-key errors). */
export function propertyNames(node: SchemaNode | undefined, doc: SchemaNode = experimentSchema()): string[] {
  if (!node) return [];
  const names = new Set<string>();
  for (const p of expand(node, doc)) for (const k of Object.keys(p.node.properties ?? {})) names.add(k);
  return [...names];
}
