/**
 * The native TensorFlow providers (@tensorflow/tfjs-node-gpu, @tensorflow/tfjs-node): static detection (no
 * loading), in-process loading, and an isolated probe in a child process (for `spark doctor`).
 *
 * Loading either package registers the 'tensorflow' backend into the same tfjs instance our
 * `import * as tf from '@tensorflow/tfjs'` uses: both resolve @tensorflow/tfjs's CJS main (dist/tf.node.js).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { withQuietStderr } from './quiet-load.js';

const require = createRequire(import.meta.url);

export type NativeProvider = 'tfjs-node-gpu' | 'tfjs-node';
export const SETUP_FIX = 'run `npm run setup:native`';
export const SETUP_FORCE_FIX = 'run `npm run setup:native -- --force`';

export interface NativeCandidate {
  provider: NativeProvider;
  pkg: string;
  installed: boolean;
  /** Package folder (when installed). */
  dir?: string;
  version?: string;
  /** Path of the compiled addon node-pre-gyp would load, and whether it exists. */
  addonPath?: string;
  addonBuilt: boolean;
  /** Usable as far as can be told without loading it. */
  ready: boolean;
  /** Why it is not ready (when !ready). */
  reason?: string;
  fix?: string;
}

/** SPARK_DISABLE_NATIVE=1 hides both native providers (tests, and users who want the portable backends). */
export function nativeDisabled(): boolean {
  const v = process.env['SPARK_DISABLE_NATIVE'];
  return !!v && v !== '0' && v.toLowerCase() !== 'false';
}

/** An NVIDIA GPU is visible to this process (driver loaded, device present). */
export function nvidiaGpuVisible(): boolean {
  try {
    if (existsSync('/proc/driver/nvidia/gpus') && readdirSync('/proc/driver/nvidia/gpus').length > 0) return true;
  } catch {
    /* not readable */
  }
  return existsSync('/dev/nvidia0');
}

function addonPathOf(dir: string): string | undefined {
  try {
    const pj = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
      binary?: { module_name: string; module_path: string; napi_versions: number[] };
    };
    const b = pj.binary;
    if (!b) return undefined;
    const napi = Math.max(...b.napi_versions.filter((v) => v <= Number(process.versions.napi)));
    return path.join(dir, b.module_path.replace('{napi_build_version}', String(napi)), `${b.module_name}.node`);
  } catch {
    return undefined;
  }
}

/** What is installed and built, without loading anything. */
export function detectNative(provider: NativeProvider): NativeCandidate {
  const pkg = `@tensorflow/${provider}`;
  let dir: string;
  try {
    dir = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    return provider === 'tfjs-node-gpu'
      ? { provider, pkg, installed: false, addonBuilt: false, ready: false, reason: `${pkg} not installed (optional peer dependency)`, fix: `npm install ${pkg}@4.22.0 (needs CUDA 11.2 + cuDNN 8.1 and libtensorflow 2.9.1 GPU)` }
      : { provider, pkg, installed: false, addonBuilt: false, ready: false, reason: `${pkg} not installed`, fix: 'run `npm ci`, then `npm run setup:native`' };
  }
  let version: string | undefined;
  try {
    version = (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    /* unreadable */
  }
  const addonPath = addonPathOf(dir);
  const addonBuilt = !!addonPath && existsSync(addonPath);
  const base = { provider, pkg, installed: true, dir, version, addonPath, addonBuilt };
  if (nativeDisabled()) return { ...base, ready: false, reason: `${pkg} disabled by SPARK_DISABLE_NATIVE`, fix: 'unset SPARK_DISABLE_NATIVE' };
  const fix = provider === 'tfjs-node' ? SETUP_FIX : `npm rebuild ${pkg} (with install scripts enabled and libtensorflow 2.9.1 GPU reachable)`;
  if (!addonBuilt) return { ...base, ready: false, reason: `${provider} addon not built`, fix };
  if (!existsSync(path.join(dir, 'deps', 'lib'))) return { ...base, ready: false, reason: `${provider} addon built but libtensorflow is not staged in deps/lib`, fix };
  return { ...base, ready: true };
}

export interface NativeLoad {
  tfVersion: string;
  gpu: boolean;
}

const loaded = new Map<NativeProvider, NativeLoad>();

export function loadedNative(): NativeProvider | null {
  return loaded.size ? [...loaded.keys()][0]! : null;
}

/**
 * Load a native provider into this process (registers and selects the 'tensorflow' backend). Thread counts must
 * already be in the environment (TF reads them when its context is created). Throws the loader's error.
 */
export function loadNative(c: NativeCandidate): NativeLoad {
  const done = loaded.get(c.provider);
  if (done) return done;
  const other = loadedNative();
  if (other) throw new Error(`${other} is already loaded in this process; ${c.provider} cannot be loaded next to it`);
  // tfjs-node finds its addon with node-pre-gyp, which parses process.argv as gyp options: a user's `--dir x`
  // (or --target, --debug, ...) would redirect the lookup. Load it with the bare command line.
  const argv = process.argv;
  process.argv = argv.slice(0, 2);
  let mod: { backend(): { binding?: { TF_Version?: string }; isUsingGpuDevice?: boolean } };
  try {
    // libtensorflow's absl start-up lines ignore TF_CPP_MIN_LOG_LEVEL: kept off the terminal (quiet-load.ts)
    mod = withQuietStderr(() => require(c.pkg) as typeof mod);
  } finally {
    process.argv = argv;
  }
  const be = mod.backend();
  const res = { tfVersion: String(be.binding?.TF_Version ?? 'unknown'), gpu: !!be.isUsingGpuDevice };
  loaded.set(c.provider, res);
  return res;
}

export interface NativeProbe {
  ok: boolean;
  tfVersion?: string;
  gpu?: boolean;
  threads?: number;
  error?: string;
}

const PROBE = `
const t = require(process.argv[1]);
const be = t.backend();
const a = t.tensor2d([1, 2, 3, 4], [2, 2]);
const m = t.matMul(a, a).dataSync();
if (m[0] !== 7 || m[3] !== 22) throw new Error('matmul gives wrong values: ' + Array.from(m));
console.log(JSON.stringify({ tf: be.binding.TF_Version, gpu: !!be.isUsingGpuDevice }));
`;

/** Load the provider in a child process (isolated: a crash or a conflicting load cannot affect this process). */
export function probeNativeInChild(c: NativeCandidate, threads: number): NativeProbe {
  if (!c.dir) return { ok: false, error: c.reason ?? 'not installed' };
  const env = { ...process.env, TF_CPP_MIN_LOG_LEVEL: process.env['TF_CPP_MIN_LOG_LEVEL'] ?? '2', TF_NUM_INTRAOP_THREADS: String(threads), TF_NUM_INTEROP_THREADS: '1' };
  const r = spawnSync(process.execPath, ['-e', PROBE, c.dir], { encoding: 'utf8', env, timeout: 120_000 });
  if (r.status === 0) {
    try {
      const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { tf: string; gpu: boolean };
      return { ok: true, tfVersion: j.tf, gpu: j.gpu, threads };
    } catch {
      /* fall through */
    }
  }
  const err = (r.stderr || r.stdout || r.error?.message || `exit ${r.status}`).trim();
  // The useful line of a Node stack trace is the first "Error: ..." line.
  const line = err.split('\n').find((l) => /Error:/.test(l)) ?? err.split('\n')[0] ?? 'failed to load';
  return { ok: false, error: line.replace(/^\S*Error:\s*/, '').slice(0, 300) };
}
