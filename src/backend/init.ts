/**
 * Backend selection and initialisation: the one entry point every command and test uses.
 *
 * `runtime.backend`:
 *  - `tensorflow`: libtensorflow through @tensorflow/tfjs-node-gpu (when installed and a GPU is visible) or
 *    @tensorflow/tfjs-node (addon built by `npm run setup:native`); BackendError (exit 3) when neither loads.
 *  - `wasm`: @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD) plus spark's training kernels (./wasm-kernels.ts).
 *  - `cpu`: the pure-JS backend (a correctness oracle; tiny models only), with spark's faster filter-gradient kernels.
 *  - `auto`: tfjs-node-gpu with a GPU, else tfjs-node, else wasm (only when its training kernels registered), else
 *    cpu; `BackendInfo.reason` says which and why.
 *
 * Threads: `threads` → TF_NUM_INTRAOP_THREADS (TF_NUM_INTEROP_THREADS=1), set before the addon loads (TF reads them
 * once, so a later call cannot change them); wasm gets setThreadsCount (no effect in Node: tfjs disables wasm
 * threads there), and `threads` reports what is actually used. TF_CPP_MIN_LOG_LEVEL defaults to 2.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { BackendError } from '../util/errors.js';
import { detectNative, loadNative, loadedNative, nvidiaGpuVisible, SETUP_FORCE_FIX, type NativeCandidate, type NativeProvider } from './native.js';
import { registerTensorflowFusedKernels } from './tf-fused-kernels.js';
import { registerCpuTrainingKernels, registerWasmTrainingKernels, wasmTrainingKernelsRegistered } from './wasm-kernels.js';

export type BackendRequest = 'auto' | 'tensorflow' | 'wasm' | 'cpu';
export const BACKEND_REQUESTS: readonly BackendRequest[] = ['auto', 'tensorflow', 'wasm', 'cpu'];

export interface BackendInfo {
  /** tfjs backend name in use: 'tensorflow' (tfjs-node or tfjs-node-gpu), 'wasm' or 'cpu'. */
  name: 'tensorflow' | 'wasm' | 'cpu';
  /** 'tfjs-node-gpu' | 'tfjs-node' | 'wasm' | 'cpu' */
  provider: string;
  /** Why this backend was chosen (for 'auto') or that it was requested. */
  reason: string;
  threads: number;
  /** True for the native TensorFlow backend (fast enough for full-size models). */
  native: boolean;
  /** The request that produced this backend. */
  request?: BackendRequest;
  /** TensorFlow C library version (native only), e.g. '2.21.0'. */
  tfVersion?: string;
  /** The native backend runs on a GPU. */
  gpu?: boolean;
}

const require = createRequire(import.meta.url);
type WasmModule = typeof import('@tensorflow/tfjs-backend-wasm');

let current: BackendInfo | null = null;
/** Intra-op threads the native library was loaded with (fixed for the life of the process). */
let nativeThreads: number | null = null;
let nativeInfo: { provider: NativeProvider; tfVersion: string; gpu: boolean } | null = null;
let wasmThreads: number | null = null;

export function currentBackend(): BackendInfo | null {
  return current;
}

/** Validate a backend name from the CLI or the environment. */
export function parseBackendRequest(value: string, where: string): BackendRequest {
  if ((BACKEND_REQUESTS as readonly string[]).includes(value)) return value as BackendRequest;
  throw new BackendError(`${where}: unknown backend '${value}' (expected one of ${BACKEND_REQUESTS.join(', ')})`);
}

function defaultThreads(): number {
  return os.availableParallelism();
}

function fixText(c: { reason?: string; fix?: string }): string {
  return c.fix ? `${c.reason} (${c.fix})` : (c.reason ?? 'unavailable');
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0]!.slice(0, 300);
}

/** Load one native provider (if not yet) and select the 'tensorflow' backend. */
async function useNative(c: NativeCandidate, threads: number | null | undefined): Promise<{ tfVersion: string; gpu: boolean; threads: number }> {
  if (!nativeInfo) {
    process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '2';
    const n = threads ?? (Number(process.env['TF_NUM_INTRAOP_THREADS']) || defaultThreads());
    process.env['TF_NUM_INTRAOP_THREADS'] = String(n);
    process.env['TF_NUM_INTEROP_THREADS'] ??= '1';
    const res = loadNative(c);
    nativeThreads = n;
    nativeInfo = { provider: c.provider, ...res };
  } else if (nativeInfo.provider !== c.provider) {
    throw new Error(`${nativeInfo.provider} is already loaded in this process`);
  }
  if (!(await tf.setBackend('tensorflow'))) throw new Error('tf.setBackend(\'tensorflow\') failed');
  await tf.ready();
  // spark's fused BatchNorm / LayerNorm / GELU kernels (FusedBatchNormV3 etc.; CPU TensorFlow only)
  registerTensorflowFusedKernels();
  return { tfVersion: nativeInfo.tfVersion, gpu: nativeInfo.gpu, threads: nativeThreads! };
}

/** Select wasm with spark's training kernels. */
async function useWasm(threads: number | null | undefined): Promise<number> {
  const wasm = require('@tensorflow/tfjs-backend-wasm') as WasmModule;
  if (wasmThreads == null) {
    // Must precede the backend's first initialisation. In Node tfjs keeps wasm single-threaded (tfjs#3830).
    if (threads && threads > 1) wasm.setThreadsCount(threads);
  }
  registerWasmTrainingKernels();
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend failed to initialise');
  await tf.ready();
  wasmThreads = wasm.getThreadsCount();
  return wasmThreads;
}

async function useCpu(): Promise<void> {
  // Its filter-gradient kernels are scalar loops 30-40x slower than its forward convs; spark's decompositions replace them.
  registerCpuTrainingKernels();
  if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend failed to initialise');
  await tf.ready();
  // The cpu backend prints a "use tfjs-node" banner on first use; spark reports the backend choice itself.
  (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
}

/** Which native candidate an explicit or automatic request tries, and why the others are skipped. */
function nativeChoice(): { pick: NativeCandidate | null; notes: string[]; failures: NativeCandidate[] } {
  const notes: string[] = [];
  const failures: NativeCandidate[] = [];
  const loadedAlready = loadedNative();
  const gpu = detectNative('tfjs-node-gpu');
  const cpu = detectNative('tfjs-node');
  if (loadedAlready) return { pick: loadedAlready === 'tfjs-node-gpu' ? gpu : cpu, notes, failures };
  if (gpu.ready && nvidiaGpuVisible()) return { pick: gpu, notes, failures };
  notes.push(gpu.ready ? 'tfjs-node-gpu installed but no NVIDIA GPU visible' : gpu.installed ? fixText(gpu) : 'tfjs-node-gpu not installed');
  if (cpu.ready) return { pick: cpu, notes, failures };
  failures.push(cpu);
  return { pick: null, notes, failures };
}

/** Initialise the requested backend (later calls return the current one when it satisfies the request). */
export async function initBackend(req: BackendRequest = 'auto', opts: { threads?: number | null } = {}): Promise<BackendInfo> {
  if (current && (req === 'auto' ? current.request === 'auto' || current.native : req === current.name)) {
    if (tf.getBackend() !== current.name) await tf.setBackend(current.name);
    return current;
  }
  const threads = opts.threads ?? null;

  if (req === 'tensorflow' || req === 'auto') {
    const { pick, notes, failures } = nativeChoice();
    let loadError: string | null = null;
    if (pick) {
      try {
        const r = await useNative(pick, threads);
        const why = pick.provider === 'tfjs-node-gpu'
          ? (r.gpu ? 'tfjs-node-gpu sees a GPU' : 'tfjs-node-gpu loaded but sees no GPU: TensorFlow runs on the CPU')
          : `tfjs-node addon built and loaded${notes.length ? `; ${notes.join('; ')}` : ''}`;
        current = {
          name: 'tensorflow', provider: pick.provider, request: req, native: true, threads: r.threads, tfVersion: r.tfVersion, gpu: r.gpu,
          reason: `${req === 'auto' ? '' : 'requested; '}${why} (TensorFlow ${r.tfVersion}, ${r.threads} intra-op threads)`,
        };
        return current;
      } catch (e) {
        loadError = `${pick.provider} failed to load: ${firstLine(e)}`;
        if (req === 'tensorflow') {
          throw new BackendError(`backend 'tensorflow' is unusable: ${loadError} (fix: ${SETUP_FORCE_FIX})`, SETUP_FORCE_FIX);
        }
      }
    } else if (req === 'tensorflow') {
      const c = failures[0]!;
      throw new BackendError(`backend 'tensorflow' is unusable: ${c.reason} (fix: ${c.fix})`, c.fix);
    }
    // auto: fall through to the portable backends, remembering why.
    const why = [loadError ? `${loadError} (${SETUP_FORCE_FIX})` : fixText(failures[0] ?? {}), ...notes.filter((n) => !n.includes('not installed'))];
    try {
      const t = await useWasm(threads);
      if (wasmTrainingKernelsRegistered()) {
        current = {
          name: 'wasm', provider: 'wasm', request: req, native: false, threads: t,
          reason: `${why.join('; ')}; using wasm (XNNPACK + spark's training kernels; ${t} thread${t === 1 ? '' : 's'}: tfjs keeps wasm single-threaded in Node)`,
        };
        return current;
      }
      why.push('wasm training kernels could not be registered');
    } catch (e) {
      why.push(`wasm failed: ${firstLine(e)}`);
    }
    await useCpu();
    current = {
      name: 'cpu', provider: 'cpu', request: req, native: false, threads: 1,
      reason: `${why.join('; ')}; using the pure-JS cpu backend (slow: tiny models only)`,
    };
    return current;
  }

  if (req === 'wasm') {
    try {
      const t = await useWasm(threads);
      current = {
        name: 'wasm', provider: 'wasm', request: req, native: false, threads: t,
        reason: `requested (XNNPACK + spark's training kernels; ${t} thread${t === 1 ? '' : 's'})`,
      };
      return current;
    } catch (e) {
      throw new BackendError(`backend 'wasm' is unusable: ${firstLine(e)} (fix: reinstall with \`npm ci\`)`, 'npm ci');
    }
  }

  if (req === 'cpu') {
    await useCpu();
    current = { name: 'cpu', provider: 'cpu', request: req, native: false, threads: 1, reason: 'requested (pure-JS: tiny models only)' };
    return current;
  }
  throw new BackendError(`unknown backend '${String(req)}' (expected one of ${BACKEND_REQUESTS.join(', ')})`);
}
