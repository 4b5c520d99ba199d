/**
 * Backend selection and initialisation: the one entry point every command and test uses.
 *
 * `runtime.backend`:
 *  - `tensorflow`: libtensorflow through @tensorflow/tfjs-node-gpu (when installed and a GPU is visible) or
 *    @tensorflow/tfjs-node (addon built by `npm run setup:native`); BackendError (exit 3) when neither loads.
 *  - `wasm`: @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD) plus spark's training kernels (./wasm-kernels.ts).
 *  - `cpu`: the pure-JS backend (a correctness oracle; tiny models only), with spark's faster filter-gradient kernels.
 *  - `torch`: libtorch through spark's addon (src/backend/torch, built by `npm run setup:torch`) on `device`
 *    (`runtime.device`: auto | cpu | cuda | cuda:N, else $SPARK_TORCH_DEVICE; auto = cuda:0 when the addon's torch
 *    has CUDA and a GPU is visible, else cpu). `tf32` (default true) allows TF32 convolutions on CUDA.
 *  - `auto`: torch on CUDA when the addon is built against a CUDA torch and a GPU is visible (and the device request
 *    is not cpu), else tfjs-node-gpu with a GPU, else tfjs-node, else wasm (only when its training kernels
 *    registered), else cpu; `BackendInfo.reason` says which and why.
 *
 * Threads: `threads` → TF_NUM_INTRAOP_THREADS (TF_NUM_INTEROP_THREADS=1), set before the addon loads (TF reads them
 * once, so a later call cannot change them); wasm gets setThreadsCount (no effect in Node: tfjs disables wasm
 * threads there), and `threads` reports what is actually used. TF_CPP_MIN_LOG_LEVEL defaults to 2.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { BackendError } from '../util/errors.js';
import { detectNative, loadNative, loadedNative, nativeDisabled, nvidiaGpuVisible, SETUP_FORCE_FIX, type NativeCandidate, type NativeProvider } from './native.js';
import { deviceRequest, planTorch, registerTorch } from './torch-load.js';
import { registerTensorflowFusedKernels } from './tf-fused-kernels.js';
import { registerCpuTrainingKernels, registerWasmTrainingKernels, wasmTrainingKernelsRegistered } from './wasm-kernels.js';

export type BackendRequest = 'auto' | 'tensorflow' | 'torch' | 'wasm' | 'cpu';
export const BACKEND_REQUESTS: readonly BackendRequest[] = ['auto', 'tensorflow', 'torch', 'wasm', 'cpu'];

export interface BackendInfo {
  /** tfjs backend name in use: 'tensorflow' (tfjs-node or tfjs-node-gpu), 'torch', 'wasm' or 'cpu'. */
  name: 'tensorflow' | 'torch' | 'wasm' | 'cpu';
  /** 'tfjs-node-gpu' | 'tfjs-node' | 'libtorch' | 'wasm' | 'cpu' */
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
  /** torch only: the device tensors live on ('cpu', 'cuda:0', …). */
  device?: string;
  /** torch only: PyTorch version the addon was built against. */
  torchVersion?: string;
}

export interface BackendOptions {
  threads?: number | null;
  /** torch: auto | cpu | cuda | cuda:N (null/undefined: $SPARK_TORCH_DEVICE, else auto). */
  device?: string | null;
  /** torch on CUDA: TF32 convolutions (PyTorch's default). Default true. */
  tf32?: boolean;
}

const require = createRequire(import.meta.url);
type WasmModule = typeof import('@tensorflow/tfjs-backend-wasm');

/** The backend options of a spec's `runtime` section. */
export function runtimeBackendOptions(r: { threads: number | null; device?: string; tf32?: boolean }): BackendOptions {
  return { threads: r.threads, device: r.device ?? null, tf32: r.tf32 ?? true };
}

let current: BackendInfo | null = null;
/** Intra-op threads the native library was loaded with (fixed for the life of the process). */
let nativeThreads: number | null = null;
let nativeInfo: { provider: NativeProvider; tfVersion: string; gpu: boolean } | null = null;
let wasmThreads: number | null = null;
/** Device the torch backend was registered on in this process (it stays there). */
let torchDevice: string | null = null;

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
    process.env['SPARK_TF_OPS_THREADS'] ??= String(n); // spark's own TensorFlow ops (tf-native-ops.ts)
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

/** Register (once per process) and select the torch backend on the planned device. */
async function useTorch(device: string, tf32: boolean, threads: number | null): Promise<void> {
  if (torchDevice && torchDevice !== device) {
    throw new BackendError(`backend 'torch' is already on ${torchDevice} in this process; it cannot move to ${device}`);
  }
  if (!torchDevice) {
    await registerTorch(device, tf32, threads);
    torchDevice = device;
  }
  if (!(await tf.setBackend('torch'))) throw new BackendError(`backend 'torch' is unusable: tf.setBackend('torch') failed on ${device}`);
  await tf.ready();
}

function torchInfo(req: BackendRequest, device: string, why: string, build: { torchVersion?: string; cudaVersion?: string | null } | undefined, threads: number | null): BackendInfo {
  const v = build?.torchVersion;
  return {
    name: 'torch', provider: 'libtorch', request: req, native: true, threads: threads ?? defaultThreads(), device, gpu: device.startsWith('cuda'),
    ...(v ? { torchVersion: v } : {}),
    reason: `${req === 'auto' ? '' : 'requested; '}torch on ${device}: ${why}${v ? ` (PyTorch ${v})` : ''}`,
  };
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

/**
 * What `initBackend(req, opts)` would pick, without loading anything (for `spark run --dry-run`): the backend, the
 * device for torch, and why; or 'UNUSABLE: <why>'.
 */
export function previewBackend(req: BackendRequest, opts: BackendOptions = {}): string {
  if (req === 'wasm' || req === 'cpu') return `${req} (requested)`;
  let dreq;
  try {
    dreq = deviceRequest(opts.device);
  } catch (e) {
    return `UNUSABLE: ${firstLine(e)}`;
  }
  const tf32 = opts.tf32 ?? true;
  if (req === 'torch' || (req === 'auto' && !nativeDisabled() && dreq !== 'cpu')) {
    const plan = planTorch(dreq);
    const tf32Text = plan.device?.startsWith('cuda') ? `, TF32 ${tf32 ? 'on' : 'off'}` : '';
    if (plan.device && (req === 'torch' || plan.device.startsWith('cuda'))) {
      return `torch on ${plan.device}${tf32Text}: ${plan.reason}${plan.addon.build ? ` (PyTorch ${plan.addon.build.torchVersion})` : ''}`;
    }
    if (req === 'torch') return `UNUSABLE: backend 'torch': ${plan.reason}`;
  }
  const { pick, notes, failures } = nativeChoice();
  if (pick) return `tensorflow (${pick.provider}${pick.provider === 'tfjs-node' ? ', CPU' : ''})`;
  if (req === 'tensorflow') return `UNUSABLE: backend 'tensorflow': ${fixText(failures[0] ?? {})}`;
  return `wasm, else cpu (${[fixText(failures[0] ?? {}), ...notes].join('; ')})`;
}

/** Initialise the requested backend (later calls return the current one when it satisfies the request). */
export async function initBackend(req: BackendRequest = 'auto', opts: BackendOptions = {}): Promise<BackendInfo> {
  if (current && (req === 'auto' ? current.request === 'auto' || current.native : req === current.name)) {
    if (tf.getBackend() !== current.name) await tf.setBackend(current.name);
    return current;
  }
  const threads = opts.threads ?? null;
  const tf32 = opts.tf32 ?? true;

  if (req === 'torch') {
    const plan = planTorch(deviceRequest(opts.device));
    if (!plan.device) {
      const fix = plan.addon.path ? undefined : 'npm run setup:torch';
      throw new BackendError(`backend 'torch' is unusable: ${plan.reason}`, fix);
    }
    await useTorch(plan.device, tf32, threads);
    current = torchInfo(req, plan.device, plan.reason, plan.addon.build, threads);
    return current;
  }

  // auto: torch on CUDA first (when its addon is built against a CUDA torch and a GPU is visible).
  const autoNotes: string[] = [];
  if (req === 'auto' && !nativeDisabled()) {
    const dreq = deviceRequest(opts.device);
    const plan = dreq === 'cpu' ? null : planTorch(dreq);
    if (plan?.device && plan.device.startsWith('cuda')) {
      try {
        await useTorch(plan.device, tf32, threads);
        current = torchInfo(req, plan.device, plan.reason, plan.addon.build, threads);
        return current;
      } catch (e) {
        autoNotes.push(`torch on ${plan.device} failed: ${firstLine(e)}`);
      }
    }
  }

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
          reason: `${req === 'auto' ? '' : 'requested; '}${autoNotes.map((n) => `${n}; `).join('')}${why} (TensorFlow ${r.tfVersion}, ${r.threads} intra-op threads)`,
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
    const why = [...autoNotes, loadError ? `${loadError} (${SETUP_FORCE_FIX})` : fixText(failures[0] ?? {}), ...notes.filter((n) => !n.includes('not installed'))];
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
