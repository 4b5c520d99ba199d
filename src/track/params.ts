/**
 * What a run logs besides metrics: the resolved config flattened to params, and MLflow's system tags.
 *
 * Params are written exactly as `mlflow.log_params` writes the equivalent Python config (PyYAML load of the
 * resolved config, flattened to dotted keys: nested mappings only, lists and empty mappings stay values): `str()`
 * of the Python value (keys.ts formatValue): `0.0002`, `1e-08`, `224`, `None`, `True`, `[0.67, 1]`, `{}`.
 * Filters compare params as strings, so write e.g. `params.model.mask_ratio = '0.6'`,
 * ``params.`data.crop_scale` = '[0.67, 1]'`` or `params.model.drop_path = 'None'`.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import type { ExperimentConfig } from '../spec/types.js';
import { formatValue, sanitizeKey, truncate, MAX_PARAM_VALUE_LENGTH } from './keys.js';

/** Top-level config sections not logged as params (tracking → tags, sweep → the parent run, description → note). */
const SKIP_SECTIONS = new Set(['tracking', 'sweep', 'description']);

/** Flatten an object to dotted keys (nested mappings; lists and empty mappings are values, in Python's repr). */
export function flattenParams(obj: unknown, prefix = '', out: Record<string, string> = {}): Record<string, string> {
  if (obj !== null && typeof obj === 'object' && !Array.isArray(obj) && (!prefix || Object.values(obj).some((v) => v !== undefined))) {
    for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
      if (v === undefined) continue;
      flattenParams(v, prefix ? `${prefix}.${k}` : k, out);
    }
    return out;
  }
  if (!prefix) return out;
  out[sanitizeKey(prefix)] = truncate(formatValue(obj), MAX_PARAM_VALUE_LENGTH);
  return out;
}

/** Every resolved config value as a param (`model.mask_ratio`, `train.optimizer.base_lr`, `model.encoder.layers`). */
export function configParams(config: ExperimentConfig): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [section, value] of Object.entries(config as unknown as Record<string, unknown>)) {
    if (SKIP_SECTIONS.has(section) || value === undefined) continue;
    if (section === 'finetune' && value === null) continue;
    flattenParams(value, section, out);
  }
  return out;
}

function git(cwd: string, args: string[]): string | null {
  try {
    return execFileSync('git', args, { cwd, timeout: 3000, stdio: ['ignore', 'pipe', 'ignore'], encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

export function currentUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env['USER'] ?? process.env['USERNAME'] ?? 'unknown';
  }
}

/** mlflow.* system tags of a run (spec mlflow.md §1.5). */
export function systemTags(opts: { runName: string; specPath: string | null; parentRunId?: string | null; note?: string | null }): Record<string, string> {
  const tags: Record<string, string> = {
    'mlflow.runName': opts.runName,
    'mlflow.user': currentUser(),
    'mlflow.source.name': opts.specPath ? path.resolve(opts.specPath) : 'spark',
    'mlflow.source.type': 'LOCAL',
  };
  const cwd = opts.specPath ? path.dirname(path.resolve(opts.specPath)) : process.cwd();
  const commit = git(cwd, ['rev-parse', 'HEAD']);
  if (commit) {
    tags['mlflow.source.git.commit'] = commit;
    const branch = git(cwd, ['rev-parse', '--abbrev-ref', 'HEAD']);
    if (branch && branch !== 'HEAD') tags['mlflow.source.git.branch'] = branch;
  }
  if (opts.parentRunId) tags['mlflow.parentRunId'] = opts.parentRunId;
  if (opts.note) tags['mlflow.note.content'] = opts.note;
  return tags;
}
