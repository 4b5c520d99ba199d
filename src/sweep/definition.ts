/**
 * The params of a sweep's parent MLflow run: the base config's values except the swept keys, which are logged as the
 * sweep definition instead (`sweep.model.mask_ratio = [0.4, 0.6, 0.75]`, the values in trial order, each once), so
 * the parent never matches a trial filter such as ``params.`model.mask_ratio` = '0.6'``.
 *
 * Values are written as MLflow's Python client writes a list: Python's `str()` of it (`[0.4, 0.6, 0.75]`,
 * `['resnet_mini', 'convnext_mini']`, `None`, `True`), by the track module's `pythonRepr` (the one every param uses).
 */
import { MAX_PARAM_VALUE_LENGTH, pythonRepr, sanitizeKey, truncate } from '../track/keys.js';
import type { Overrides } from './types.js';

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
