/**
 * The Python interpreter of the PyTorch reference checks: $SPARK_PYTHON, else the repo's `.venv-ref/` made by
 * `npm run setup:reference`, else `python3` on the PATH. Tests that need torch (or timm) skip with the reason when it
 * lacks them.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../../src/util/paths.js';

function pick(): string {
  const env = process.env['SPARK_PYTHON'];
  if (env) return env;
  const venv = path.join(packageRoot(), '.venv-ref', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

export const PYTHON = pick();

const cache = new Map<string, boolean>();

/** True when PYTHON can import every module (checked with find_spec, which does not import them). */
export function pythonHas(...modules: string[]): boolean {
  const key = modules.join(',');
  let ok = cache.get(key);
  if (ok === undefined) {
    const code = `import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in ${JSON.stringify(modules)}) else 1)`;
    ok = spawnSync(PYTHON, ['-c', code], { encoding: 'utf8', timeout: 60_000 }).status === 0;
    cache.set(key, ok);
  }
  return ok;
}

/** The skip reason for a missing reference package. */
export function pythonMissing(what: string): string {
  return `${PYTHON} lacks ${what} (npm run setup:reference installs torch, numpy and timm into .venv-ref, or set SPARK_PYTHON)`;
}
