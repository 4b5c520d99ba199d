/**
 * A spec file parsed with source positions: YAML → plain data plus a way back from a config path
 * (`['model', 'mask_ratio']`) to `line:col` in the file, and the excerpt (source line + caret) that SpecError prints.
 */
import { readFileSync } from 'node:fs';
import {
  LineCounter,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  parseDocument,
  visit,
  type Document,
  type Node,
} from 'yaml';
import { SpecError } from '../util/errors.js';

/** A path into a config: mapping keys and list indices. */
export type ConfigPath = ReadonlyArray<string | number>;

/** Aliases expanded beyond this count make loading fail (billion-laughs protection). */
export const MAX_ALIAS_COUNT = 100;

export interface SpecSource {
  /** The file as it is displayed in messages (as given by the user / joined from `extends:`). */
  file: string;
  text: string;
  doc: Document.Parsed;
  lineCounter: LineCounter;
  /** The top-level mapping as plain data. */
  data: Record<string, unknown>;
}

export interface Location {
  line: number;
  col: number;
  /** Characters to underline on that line (≥ 1). */
  len: number;
}

/** `   3 | text` then a caret line under `col` (1-based), `len` carets wide. */
export function formatExcerpt(text: string, line: number, col: number, len = 1): string {
  const lines = text.split(/\r?\n/);
  const src = lines[line - 1];
  if (src === undefined) return '';
  const num = String(line);
  const pad = ' '.repeat(num.length);
  const width = Math.max(1, Math.min(len, src.length - (col - 1)));
  // keep tabs so the caret lines up with the source line in a terminal
  const lead = src.slice(0, col - 1).replace(/[^\t]/g, ' ');
  return ` ${num} | ${src}\n ${pad} | ${lead}${'^'.repeat(width)}`;
}

/** Convert a character offset to a location. */
export function offsetLocation(src: { text: string; lineCounter: LineCounter }, start: number, end?: number): Location {
  const { line, col } = src.lineCounter.linePos(Math.max(0, Math.min(start, src.text.length)));
  const lineEnd = src.text.indexOf('\n', start);
  const stop = Math.min(end ?? start + 1, lineEnd < 0 ? src.text.length : lineEnd);
  return { line, col, len: Math.max(1, stop - start) };
}

/** A SpecError at a character offset of a source. */
export function errorAtOffset(
  src: { file: string; text: string; lineCounter: LineCounter },
  start: number,
  end: number | undefined,
  message: string,
  hint?: string,
): SpecError {
  const loc = offsetLocation(src, start, end);
  return new SpecError(message, src.file, loc.line, loc.col, formatExcerpt(src.text, loc.line, loc.col, loc.len), hint);
}

/** A SpecError at a located node (or at the file when `loc` is null). */
export function errorAt(src: SpecSource, loc: Location | null, message: string, hint?: string): SpecError {
  if (!loc) return new SpecError(message, src.file, undefined, undefined, undefined, hint);
  return new SpecError(message, src.file, loc.line, loc.col, formatExcerpt(src.text, loc.line, loc.col, loc.len), hint);
}

function nodeRange(node: Node | null | undefined): [number, number] | null {
  const r = (node as { range?: [number, number, number] } | null | undefined)?.range;
  return r ? [r[0], r[1]] : null;
}

/**
 * Where a path is written in a source. `kind = 'key'` points at the last key (`mask_ratio:`), `'value'` at its
 * value. When the path only partly exists, the deepest existing part is returned with `exact = false`.
 */
export function locatePath(src: SpecSource, path: ConfigPath, kind: 'key' | 'value' = 'value'): (Location & { exact: boolean }) | null {
  let node: unknown = src.doc.contents;
  let keyNode: unknown = null;
  let depth = 0;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(src.doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (!pair) break;
      keyNode = pair.key;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (item == null) break;
      keyNode = null;
      node = item;
    } else break;
    depth++;
  }
  const exact = depth === path.length;
  let target: unknown = node;
  if ((kind === 'key' || !nodeRange(node as Node)) && keyNode) target = keyNode;
  // a `key:` with no value has a zero-width null scalar: point at the key instead
  const r = nodeRange(target as Node);
  if (r && r[1] === r[0] && keyNode && target !== keyNode) target = keyNode;
  const range = nodeRange(target as Node);
  if (!range) return null;
  return { ...offsetLocation(src, range[0], range[1]), exact };
}

/** Whether plain data has a value (possibly null) at a path. */
export function hasPath(data: unknown, path: ConfigPath): boolean {
  let cur: unknown = data;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return false;
    if (!Object.prototype.hasOwnProperty.call(cur, seg)) return false;
    cur = (cur as Record<string | number, unknown>)[seg];
  }
  return true;
}

function describeNodeKind(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `a ${typeof v} (${JSON.stringify(v)})`;
}

/** Parse YAML text into a source; throws a located SpecError for every kind of malformed input. */
export function parseSpec(text: string, file: string): SpecSource {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter,
    uniqueKeys: true,
    prettyErrors: false,
    merge: true,
    keepSourceTokens: false,
  });
  const base = { file, text, lineCounter };
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) {
    const [start, end] = problem.pos;
    if (problem.code === 'DUPLICATE_KEY') {
      const key = (/^\s*("[^"]*"|'[^']*'|[^:\n]*?)\s*:/.exec(text.slice(start)) ?? [])[1] ?? '';
      const k = key.replace(/^["']|["']$/g, '');
      throw errorAtOffset(base, start, start + key.length, `duplicate key '${k}'`, 'each key may appear only once in a mapping');
    }
    if (problem.code === 'MULTIPLE_DOCS') {
      throw errorAtOffset(base, start, end, 'a spec holds one YAML document (found a second one)', "remove the '---' separator");
    }
    const msg = problem.message.replace(/\s+at line \d+, column \d+.*$/s, '').trim();
    throw errorAtOffset(base, start, end, `YAML syntax error: ${msg}`);
  }
  const contents = doc.contents;
  if (contents === null || (isScalar(contents) && contents.value === null)) {
    throw new SpecError('the spec is empty (expected a mapping with at least `name:`)', file, 1, 1);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    if (err instanceof ReferenceError || /alias/i.test(String((err as Error)?.message))) {
      // point at the first alias: with exponential expansion every alias is suspect, the first is the root of it
      let first: [number, number] | null = null;
      visit(doc, {
        Alias(_k, node) {
          if (!first && node.range) first = [node.range[0], node.range[1]];
          return first ? visit.BREAK : undefined;
        },
      });
      const [s, e] = first ?? [0, 1];
      throw errorAtOffset(
        base,
        s,
        e,
        `too many alias expansions (more than ${MAX_ALIAS_COUNT}): refusing a possible alias bomb`,
        'write the values out instead of nesting anchors',
      );
    }
    throw err;
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    const r = nodeRange(contents as Node) ?? [0, 1];
    throw errorAtOffset(base, r[0], r[1], `the top level of a spec must be a mapping of keys, got ${describeNodeKind(data)}`);
  }
  return { file, text, doc, lineCounter, data: data as Record<string, unknown> };
}

/** Read and parse a spec file; a missing/unreadable file is a SpecError naming it. */
export function readSpec(absPath: string, display: string): SpecSource {
  let text: string;
  try {
    text = readFileSync(absPath, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new SpecError(`cannot read spec: ${why}`, display);
  }
  return parseSpec(text, display);
}
