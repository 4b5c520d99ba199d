/**
 * Where the torch backend's addon is: `$SPARK_TORCH_ADDON`, else the newest build in the cache that
 * `npm run setup:torch` (scripts/setup-torch.mjs) wrote for this Node (module ABI, architecture) and these sources:
 * `<cache>/<key>/spark_torch.node` beside its `build.json`, where <cache> is `$SPARK_TORCH_CACHE`, else
 * `$SPARK_CACHE_DIR/torch`, else `${XDG_CACHE_HOME:-~/.cache}/spark/torch` (scripts/setup-torch.mjs uses the same).
 *
 * Cheap (a few stat/read calls, no python, no dlopen): backend selection and `spark doctor` call it.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../util/paths.js';

export const SETUP_TORCH_FIX = 'npm run setup:torch';
/** The fix when PyTorch itself may be missing too. */
export const TORCH_SETUP_FIX = 'pip install torch, then npm run setup:torch';
const ADDON = 'spark_torch.node';
const SOURCE_RE = /\.(cc|cpp|h|hpp)$/;

/** What scripts/setup-torch.mjs writes beside the addon (fields the backend and doctor read). */
export interface TorchBuildInfo {
  key: string;
  torchVersion: string;
  /** CUDA version of the torch build the addon links (null: CPU only). */
  cudaVersion: string | null;
  cxx11Abi: number;
  /** The python whose torch was built against (doctor asks it for the devices). */
  python: string;
  torchLib: string;
  sourcesHash: string;
  nodeVersion: string;
  nodeModules: string;
  arch: string;
  compiler: string;
  command: string;
  builtAt: string;
}

/** The cache folder of the torch addon builds. */
export function torchCacheDir(): string {
  if (process.env['SPARK_TORCH_CACHE']) return process.env['SPARK_TORCH_CACHE'];
  const base = process.env['SPARK_CACHE_DIR'] || path.join(process.env['XDG_CACHE_HOME'] || path.join(os.homedir(), '.cache'), 'spark');
  return path.join(base, 'torch');
}

/** sha256 over the sorted sources (name NUL content NUL), as scripts/setup-torch.mjs computes it. */
export function hashTorchSources(dir: string): string {
  const h = createHash('sha256');
  for (const n of readdirSync(dir).filter((x) => SOURCE_RE.test(x)).sort()) {
    h.update(n).update('\0').update(readFileSync(path.join(dir, n))).update('\0');
  }
  return h.digest('hex');
}

function checkoutSources(): string | null {
  try {
    const dir = path.join(packageRoot(), 'native', 'torch');
    return existsSync(dir) && readdirSync(dir).some((n) => /\.(cc|cpp)$/.test(n)) ? dir : null;
  } catch {
    return null; // a bundle outside a checkout: any build for this Node will do
  }
}

function readBuild(dir: string): TorchBuildInfo | null {
  try {
    const info = JSON.parse(readFileSync(path.join(dir, 'build.json'), 'utf8')) as TorchBuildInfo;
    return existsSync(path.join(dir, ADDON)) ? info : null;
  } catch {
    return null;
  }
}

export interface TorchAddonLocation {
  path: string | null;
  /** Where it came from, or why there is none (one line, with the fix). */
  reason: string;
  /** The build.json beside it (absent for $SPARK_TORCH_ADDON without one). */
  build?: TorchBuildInfo;
}

/** The addon to load, or null with the reason. `opts` are for tests (defaults: the cache and this checkout's sources). */
export function findTorchAddon(opts: { cacheDir?: string; sourcesDir?: string | null } = {}): TorchAddonLocation {
  const forced = process.env['SPARK_TORCH_ADDON'];
  if (forced) {
    const p = path.resolve(forced);
    if (!existsSync(p) || !statSync(p).isFile()) return { path: null, reason: `SPARK_TORCH_ADDON=${forced}: no such file (unset it, or run \`${SETUP_TORCH_FIX}\`)` };
    const build = readBuild(path.dirname(p));
    return { path: p, reason: `SPARK_TORCH_ADDON=${forced}`, ...(build ? { build } : {}) };
  }
  const cache = opts.cacheDir ?? torchCacheDir();
  const builds: { dir: string; info: TorchBuildInfo }[] = [];
  if (existsSync(cache)) {
    for (const k of readdirSync(cache)) {
      if (k.includes('.tmp-')) continue;
      const info = readBuild(path.join(cache, k));
      if (info) builds.push({ dir: path.join(cache, k), info });
    }
  }
  if (!builds.length) return { path: null, reason: `the torch addon is not built (no build in ${cache}; run \`${SETUP_TORCH_FIX}\`)` };
  const forNode = builds.filter((b) => String(b.info.nodeModules) === process.versions.modules && (b.info.arch ?? process.arch) === process.arch);
  if (!forNode.length) {
    return { path: null, reason: `the torch addon in ${cache} was built for another Node (module ABI ${builds[0]!.info.nodeModules}, this is ${process.versions.modules}; run \`${SETUP_TORCH_FIX}\`)` };
  }
  const src = opts.sourcesDir === undefined ? checkoutSources() : opts.sourcesDir;
  let usable = forNode;
  if (src) {
    const want = hashTorchSources(src);
    usable = forNode.filter((b) => b.info.sourcesHash === want);
    if (!usable.length) return { path: null, reason: `the torch addon in ${cache} was built from other sources than ${src} (run \`${SETUP_TORCH_FIX}\` to rebuild)` };
  }
  // a build whose torch is gone (e.g. made by another clone's .venv-ref, since deleted) cannot load: skip it
  const present = usable.filter((b) => !b.info.torchLib || existsSync(b.info.torchLib));
  if (!present.length) {
    return { path: null, reason: `the torch addon builds in ${cache} link a torch that is no longer there (${usable[0]!.info.torchLib}; run \`${SETUP_TORCH_FIX}\`)` };
  }
  present.sort((a, b) => String(b.info.builtAt).localeCompare(String(a.info.builtAt)));
  const b = present[0]!;
  return {
    path: path.join(b.dir, ADDON),
    reason: `built by setup:torch against torch ${b.info.torchVersion}${b.info.cudaVersion ? ` (CUDA ${b.info.cudaVersion})` : ' (CPU)'}`,
    build: b.info,
  };
}
