/**
 * Where the compiled torch addon is: `npm run setup:torch` (scripts/setup-torch.mjs) builds
 * `~/.cache/spark/torch/<key>/spark_torch.node` and records `build.json` beside it. `findTorchAddon()` returns the
 * newest such build whose addon file exists, or `path: null` with the reason. `$SPARK_TORCH_ADDON` (checked by the
 * loader, src/backend/torch/addon.ts) overrides it.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const TORCH_SETUP_FIX = 'pip install torch, then npm run setup:torch';

/** The cache folder of the torch addon builds (`$SPARK_CACHE_DIR/torch`, else `~/.cache/spark/torch`). */
export function torchCacheDir(): string {
  const base = process.env['SPARK_CACHE_DIR'] || path.join(process.env['XDG_CACHE_HOME'] || path.join(os.homedir(), '.cache'), 'spark');
  return path.join(base, 'torch');
}

export function findTorchAddon(): { path: string | null; reason: string } {
  const dir = torchCacheDir();
  if (!existsSync(dir)) return { path: null, reason: `the torch addon is not built (no ${dir}); run: ${TORCH_SETUP_FIX}` };
  let best: { file: string; mtime: number } | null = null;
  for (const key of readdirSync(dir)) {
    const meta = path.join(dir, key, 'build.json');
    const file = path.join(dir, key, 'spark_torch.node');
    if (!existsSync(meta) || !existsSync(file)) continue;
    try {
      JSON.parse(readFileSync(meta, 'utf8'));
    } catch {
      continue;
    }
    const mtime = statSync(meta).mtimeMs;
    if (!best || mtime > best.mtime) best = { file, mtime };
  }
  if (!best) return { path: null, reason: `no complete torch addon build under ${dir}; run: ${TORCH_SETUP_FIX}` };
  return { path: best.file, reason: `newest build in ${dir}` };
}
