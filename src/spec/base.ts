/**
 * Base files: partial specs that full specs build on with `extends:` (`experiments/_base_imagenet.yaml`). A file is
 * a base when its name starts with `_`, or when another spec of the same check extends it. `spark validate` checks
 * a base as far as it can be checked alone (YAML, its own `extends:` chain, `--set`, keys, types and ranges) instead
 * of failing it for what only the specs extending it supply (`name`, …).
 */
import path from 'node:path';
import { SpecError } from '../util/errors.js';
import { loadLayers, type Layer } from './compose.js';
import { composeSpec } from './load.js';
import { checkPartialWithLayers } from './resolve.js';

/** True for a file named as a base (`_base_imagenet.yaml`). */
export function isBaseName(file: string): boolean {
  return path.basename(file).startsWith('_');
}

/**
 * The absolute paths of the files that `files` extend (directly or through their chain), mapped to the files that
 * extend them. Specs whose chain cannot be read are left out (their own check reports why).
 */
export function extendedBy(files: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const f of files) {
    let layers: Layer[];
    try {
      layers = loadLayers(f);
    } catch (e) {
      if (e instanceof SpecError) continue;
      throw e;
    }
    const self = path.resolve(f);
    for (const l of layers) {
      if (l.kind !== 'file' || l.abs === self) continue;
      const list = out.get(l.abs) ?? [];
      if (!list.includes(f)) list.push(f);
      out.set(l.abs, list);
    }
  }
  return out;
}

/** Check a base file alone: everything except required fields and the cross-field rules of a full spec. */
export function checkBaseSpec(file: string, opts: { set?: string[] } = {}): void {
  const { layers, raw } = composeSpec(file, opts.set);
  checkPartialWithLayers(raw, layers, file);
}
