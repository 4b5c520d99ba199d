/**
 * `doctor()`: what each backend can do on this machine, and which one a request would get.
 *
 * The native providers are probed in child processes (loading an addon is irreversible and only one of
 * tfjs-node / tfjs-node-gpu can live in a process); wasm and cpu are checked in-process, and the previously active
 * backend is restored afterwards.
 */
import { tfOpsBuilt } from './tf-native-ops.js';
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BACKEND_REQUESTS, type BackendRequest } from './init.js';
import { detectNative, nativeDisabled, nvidiaGpuVisible, probeNativeInChild, SETUP_FORCE_FIX, type NativeProvider } from './native.js';
import { registerWasmTrainingKernels, wasmTrainingKernelsRegistered } from './wasm-kernels.js';
import { deviceRequest, planTorch, type DeviceRequest } from './torch-load.js';
import { SETUP_TORCH_FIX } from './torch/addon-path.js';
import { packageRoot } from '../util/paths.js';

const require = createRequire(import.meta.url);

export type BackendId = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu' | 'torch';

export interface BackendStatus {
  id: BackendId;
  /** npm package providing it. */
  provider: string;
  /** The package is installed. */
  installed: boolean;
  /** It initialises and computes on this machine. */
  available: boolean;
  /** It can train spark's models (all conv gradient kernels present). */
  trainable: boolean;
  /** Package version. */
  version?: string;
  /** TensorFlow C library version (binding.TF_Version), native only. */
  tfVersion?: string;
  /** Threads it computes with (intra-op threads for native). */
  threads?: number;
  gpu?: boolean;
  /** torch: the device it would run on ('cpu', 'cuda:0', …). */
  device?: string;
  /** torch: PyTorch version (of the python that has it, or the addon's build). */
  torchVersion?: string;
  /** torch: the CUDA devices PyTorch sees. */
  cudaDevices?: { index: number; name: string; memoryGiB: number }[];
  /** Remarks about an available backend (speed, limits). */
  note?: string;
  /** Why it is unavailable. */
  reason?: string;
  /** How to make it available. */
  fix?: string;
}

export interface DoctorReport {
  /** The backend request checked (`--backend`, else $SPARK_BACKEND, else auto). */
  request: BackendRequest;
  /** The torch device request checked (`--device`, else $SPARK_TORCH_DEVICE, else auto). */
  device: DeviceRequest;
  /** What `initBackend(request)` would pick; ok = false when the request cannot be satisfied (exit 3). */
  selected: { ok: boolean; id?: BackendId; reason: string; fix?: string };
  backends: BackendStatus[];
  versions: { node: string; napi: string; v8: string; tfjs: string; 'tfjs-node'?: string; 'tfjs-backend-wasm'?: string; tf?: string };
  system: { platform: string; arch: string; cpus: number; memoryGiB: number; gpuVisible: boolean };
  sharp: { ok: boolean; version?: string; libvips?: string; error?: string };
  env: Record<string, string>;
}

function pkgVersion(name: string): string | undefined {
  try {
    const file = require.resolve(`${name}/package.json`);
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

/** spark's own TensorFlow ops (native/tf): built, or why not (the backend works without them, slower). */
function opsNote(): string {
  const o = tfOpsBuilt();
  return o.built ? '; spark ops built' : `; spark ops ${o.reason.replace(/^not built /, 'not built ')} — optimizer and norms run slower without them`;
}

function nativeStatus(provider: NativeProvider, threads: number): BackendStatus {
  const id: BackendId = provider === 'tfjs-node-gpu' ? 'tensorflow-gpu' : 'tensorflow';
  const c = detectNative(provider);
  const base = { id, provider: c.pkg, installed: c.installed, version: c.version };
  if (provider === 'tfjs-node-gpu' && c.ready && !nvidiaGpuVisible()) {
    return { ...base, available: false, trainable: false, reason: 'no NVIDIA GPU visible (no /dev/nvidia0)', fix: 'install the NVIDIA driver, or run in a container with GPU access' };
  }
  if (!c.ready) return { ...base, available: false, trainable: false, reason: c.reason, fix: c.fix };
  const p = probeNativeInChild(c, threads);
  if (!p.ok) {
    return { ...base, available: false, trainable: false, reason: `${provider} failed to load: ${p.error}`, fix: provider === 'tfjs-node' ? SETUP_FORCE_FIX : c.fix };
  }
  if (provider === 'tfjs-node-gpu' && !p.gpu) {
    return { ...base, available: false, trainable: false, tfVersion: p.tfVersion, reason: 'tfjs-node-gpu loads but TensorFlow sees no GPU', fix: 'install CUDA 11.2 and cuDNN 8.1 (libtensorflow 2.9.1 GPU needs them)' };
  }
  return {
    ...base, available: true, trainable: true, tfVersion: p.tfVersion, threads: p.threads, gpu: p.gpu,
    note: p.gpu ? 'GPU' : `libtensorflow on the CPU (oneDNN)${opsNote()}`,
  };
}

async function wasmStatus(threads: number): Promise<BackendStatus> {
  const version = pkgVersion('@tensorflow/tfjs-backend-wasm');
  const base = { id: 'wasm' as const, provider: '@tensorflow/tfjs-backend-wasm', installed: !!version, version };
  if (!version) return { ...base, available: false, trainable: false, reason: 'not installed', fix: 'npm ci' };
  const prev = tf.engine().backendName;
  try {
    const wasm = require('@tensorflow/tfjs-backend-wasm') as typeof import('@tensorflow/tfjs-backend-wasm');
    if (!tf.findBackend('wasm') && threads > 1) wasm.setThreadsCount(threads);
    registerWasmTrainingKernels();
    if (!(await tf.setBackend('wasm'))) throw new Error('initialisation failed');
    await tf.ready();
    // A conv gradient exercises the registered training kernels.
    const ok = tf.tidy(() => {
      const x = tf.ones([1, 5, 5, 2]) as tf.Tensor4D;
      const w = tf.ones([3, 3, 2, 1]) as tf.Tensor4D;
      const [dw] = tf.grads((a: tf.Tensor) => tf.sum(tf.conv2d(x, a as tf.Tensor4D, 1, 'valid')))([w]);
      return dw!.dataSync()[0] === 9;
    });
    const trainable = ok && wasmTrainingKernelsRegistered();
    const t = wasm.getThreadsCount();
    return {
      ...base, available: true, trainable, threads: t,
      note: `XNNPACK + SIMD, spark's training kernels${trainable ? '' : ' NOT'} registered; single-threaded in Node (tfjs#3830); 4 GB heap`,
      ...(trainable ? {} : { reason: 'conv gradient check failed', fix: 'report this as a bug' }),
    };
  } catch (e) {
    return { ...base, available: false, trainable: false, reason: String((e as Error).message).split('\n')[0], fix: 'npm ci' };
  } finally {
    if (prev && prev !== 'wasm') await tf.setBackend(prev);
  }
}

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

const PY_TORCH_INFO = `
import json
try:
    import torch
except Exception as e:
    print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
    raise SystemExit(0)
devs = []
try:
    if torch.version.cuda and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devs.append({"index": i, "name": p.name, "memoryGiB": round(p.total_memory / 2**30, 1)})
except Exception:
    pass
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "devices": devs}))
`;

/** PyTorch version and CUDA devices, asked of the python the addon was built with (else the one setup:torch would use). */
function torchPython(python: string | undefined): { python: string; torch?: string; cuda?: string | null; devices: NonNullable<BackendStatus['cudaDevices']>; error?: string } {
  let py = python ?? process.env['SPARK_TORCH_PYTHON'];
  if (!py) {
    let venv: string | null = null;
    try {
      venv = path.join(packageRoot(), '.venv-ref', 'bin', 'python');
    } catch {
      /* not in a checkout */
    }
    py = venv && existsSync(venv) ? venv : 'python3';
  }
  const r = spawnSync(py, ['-c', PY_TORCH_INFO], { encoding: 'utf8', timeout: 120_000 });
  if (r.error) return { python: py, devices: [], error: `${py}: ${r.error.message}` };
  try {
    const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { torch?: string; cuda?: string | null; devices?: NonNullable<BackendStatus['cudaDevices']>; error?: string };
    return { python: py, ...(j.torch ? { torch: j.torch } : {}), cuda: j.cuda ?? null, devices: j.devices ?? [], ...(j.error ? { error: j.error } : {}) };
  } catch {
    return { python: py, devices: [], error: `${py} failed: ${(r.stderr || '').trim().split('\n').pop() ?? `exit ${r.status}`}` };
  }
}

/** The torch backend: module, addon, PyTorch and devices; when usable, its self-check runs in a child process. */
function torchStatus(device: DeviceRequest): BackendStatus {
  const base = { id: 'torch' as const, provider: 'libtorch (spark addon)' };
  const here = path.dirname(fileURLToPath(import.meta.url));
  const installed = existsSync(path.join(here, 'torch', `index${EXT}`));
  const plan = planTorch(device);
  const py = torchPython(plan.addon.build?.python);
  const info = {
    ...(py.torch ? { torchVersion: py.torch, version: py.torch } : plan.addon.build ? { torchVersion: plan.addon.build.torchVersion, version: plan.addon.build.torchVersion } : {}),
    ...(py.devices.length ? { cudaDevices: py.devices } : {}),
  };
  const noTorch = py.error ? `no PyTorch in ${py.python} (${py.error})` : null;
  if (!installed) {
    return { ...base, ...info, installed, available: false, trainable: false, reason: `the torch backend's module is missing (${path.join(here, 'torch')})`, fix: 'npm run build (in a checkout that has src/backend/torch)' };
  }
  if (!plan.addon.path) {
    return {
      ...base, ...info, installed, available: false, trainable: false,
      reason: noTorch ? `${plan.reason}; ${noTorch}` : plan.reason,
      fix: noTorch ? `pip install torch (a CUDA build for GPUs), then ${SETUP_TORCH_FIX}` : SETUP_TORCH_FIX,
    };
  }
  if (!plan.device) return { ...base, ...info, installed, available: false, trainable: false, reason: plan.reason, fix: device === 'auto' ? SETUP_TORCH_FIX : 'use runtime.device: cpu, or a CUDA build of torch on a GPU machine' };
  const url = new URL(`./torch-check${EXT}`, import.meta.url).href;
  const code = `const m = await import(${JSON.stringify(url)}); console.log(JSON.stringify(await m.torchSelfCheck({ device: ${JSON.stringify(plan.device)} })));`;
  const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' } });
  let check: { ok: boolean; message: string; fix?: string } | null = null;
  try {
    check = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { ok: boolean; message: string; fix?: string };
  } catch {
    check = { ok: false, message: `the self-check crashed: ${(r.stderr || '').trim().split('\n').pop() ?? `exit ${r.status}`}` };
  }
  if (!check.ok) {
    return { ...base, ...info, installed, available: false, trainable: false, device: plan.device, reason: `torch on ${plan.device}: ${check.message}`, fix: check.fix ?? `${SETUP_TORCH_FIX} -- --force` };
  }
  return {
    ...base, ...info, installed, available: true, trainable: true, device: plan.device, gpu: plan.device.startsWith('cuda'),
    note: `${plan.reason}; addon ${plan.addon.path}`,
  };
}

async function sharpStatus(): Promise<DoctorReport['sharp']> {
  try {
    const sharp = require('sharp') as { versions: { vips: string; sharp?: string } };
    return { ok: true, version: sharp.versions.sharp ?? pkgVersion('sharp'), libvips: sharp.versions.vips };
  } catch (e) {
    return { ok: false, error: String((e as Error).message).split('\n')[0], version: pkgVersion('sharp') };
  }
}

/** Which backend `initBackend(request)` would select, given the statuses. */
export function selectFrom(request: BackendRequest, backends: BackendStatus[]): DoctorReport['selected'] {
  const by = (id: BackendId) => backends.find((b) => b.id === id)!;
  const torch = backends.find((b) => b.id === 'torch');
  if (request === 'torch') {
    if (torch?.available) return { ok: true, id: 'torch', reason: `requested; torch on ${torch.device} (PyTorch ${torch.torchVersion})` };
    return { ok: false, reason: `backend 'torch' is unusable: ${torch?.reason ?? 'not checked'}`, ...(torch?.fix ? { fix: torch.fix } : {}) };
  }
  if (request === 'auto' && torch?.available && torch.device?.startsWith('cuda') && !nativeDisabled()) {
    return { ok: true, id: 'torch', reason: `torch on ${torch.device}: PyTorch ${torch.torchVersion} with CUDA, addon built` };
  }
  const gpu = by('tensorflow-gpu');
  const tfn = by('tensorflow');
  const wasm = by('wasm');
  const native = gpu.available ? gpu : tfn.available ? tfn : null;
  if (request === 'tensorflow') {
    if (native) return { ok: true, id: native.id, reason: `requested; ${native.provider} (TensorFlow ${native.tfVersion})` };
    return { ok: false, reason: `backend 'tensorflow' is unusable: ${tfn.reason}`, fix: tfn.fix };
  }
  if (request === 'wasm') {
    return wasm.available ? { ok: true, id: 'wasm', reason: 'requested' } : { ok: false, reason: `backend 'wasm' is unusable: ${wasm.reason}`, fix: wasm.fix };
  }
  if (request === 'cpu') return { ok: true, id: 'cpu', reason: 'requested' };
  if (native) return { ok: true, id: native.id, reason: `${native.provider} available (TensorFlow ${native.tfVersion})` };
  const why = `${tfn.reason}${tfn.fix ? ` (fix: ${tfn.fix})` : ''}`;
  if (wasm.available && wasm.trainable) return { ok: true, id: 'wasm', reason: `${why}; wasm with spark's training kernels`, fix: tfn.fix };
  return { ok: true, id: 'cpu', reason: `${why}; wasm ${wasm.available ? 'cannot train' : 'unavailable'}; pure-JS cpu (tiny models only)`, fix: tfn.fix };
}

export async function doctor(opts: { request?: BackendRequest; threads?: number; device?: DeviceRequest } = {}): Promise<DoctorReport> {
  const envReq = process.env['SPARK_BACKEND'];
  const request: BackendRequest = opts.request
    ?? ((BACKEND_REQUESTS as readonly string[]).includes(envReq ?? '') ? (envReq as BackendRequest) : 'auto');
  const threads = opts.threads ?? (Number(process.env['TF_NUM_INTRAOP_THREADS']) || os.availableParallelism());
  const device = opts.device ?? deviceRequest(null);
  const backends: BackendStatus[] = [
    nativeStatus('tfjs-node-gpu', threads),
    nativeStatus('tfjs-node', threads),
    await wasmStatus(threads),
    {
      id: 'cpu', provider: '@tensorflow/tfjs-backend-cpu', installed: true, available: true, trainable: true, threads: 1,
      version: pkgVersion('@tensorflow/tfjs-backend-cpu'), note: 'pure JS, single-threaded: a correctness oracle for tiny models',
    },
    torchStatus(device),
  ];
  const env: Record<string, string> = {};
  for (const k of ['SPARK_BACKEND', 'SPARK_DISABLE_NATIVE', 'TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS', 'TF_CPP_MIN_LOG_LEVEL', 'CUDA_VISIBLE_DEVICES', 'SPARK_TORCH_DEVICE', 'SPARK_TORCH_PYTHON', 'SPARK_TORCH_ADDON', 'SPARK_TORCH_CACHE']) {
    const v = process.env[k];
    if (v != null) env[k] = v;
  }
  const tfnVersion = backends[1]!.version;
  const tfVersion = backends.find((b) => b.tfVersion)?.tfVersion;
  return {
    request,
    device,
    selected: selectFrom(request, backends),
    backends,
    versions: {
      node: process.versions.node, napi: process.versions.napi ?? '?', v8: process.versions.v8, tfjs: tf.version.tfjs,
      ...(tfnVersion ? { 'tfjs-node': tfnVersion } : {}),
      ...(backends[2]!.version ? { 'tfjs-backend-wasm': backends[2]!.version } : {}),
      ...(tfVersion ? { tf: tfVersion } : {}),
    },
    system: {
      platform: `${process.platform} ${os.release()}`, arch: process.arch, cpus: os.availableParallelism(),
      memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10, gpuVisible: nvidiaGpuVisible(),
    },
    sharp: await sharpStatus(),
    env,
  };
}

/** Plain-text rendering of a report (the `spark doctor` output). */
export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = [];
  const v = r.versions;
  lines.push(`node ${v.node} (napi ${v.napi}), tfjs ${v.tfjs}${v['tfjs-node'] ? `, tfjs-node ${v['tfjs-node']}` : ''}${v.tf ? `, TensorFlow ${v.tf}` : ''}`);
  lines.push(`system: ${r.system.platform} ${r.system.arch}, ${r.system.cpus} cpus, ${r.system.memoryGiB} GiB${r.system.gpuVisible ? ', NVIDIA GPU visible' : ''}`);
  lines.push('');
  lines.push('backends:');
  for (const b of r.backends) {
    const mark = b.available ? (b.trainable ? 'ok ' : 'no-train') : '-- ';
    const ver = [b.version && `${b.provider}@${b.version}`, b.tfVersion && `TF ${b.tfVersion}`, b.threads != null && `${b.threads} thread${b.threads === 1 ? '' : 's'}`].filter(Boolean).join(', ');
    const torchVer = b.id === 'torch' ? [b.torchVersion && `PyTorch ${b.torchVersion}`, b.device && `device ${b.device}`].filter(Boolean).join(', ') : '';
    lines.push(`  ${mark.padEnd(4)} ${b.id.padEnd(15)} ${b.available ? `${torchVer || ver}${b.note ? ` — ${b.note}` : ''}` : `${b.reason ?? 'unavailable'}${b.torchVersion ? ` [PyTorch ${b.torchVersion}]` : ''}`}`);
    if (!b.available && b.fix) lines.push(`       ${''.padEnd(15)} fix: ${b.fix}`);
    for (const d of b.cudaDevices ?? []) lines.push(`       ${''.padEnd(15)} cuda:${d.index} ${d.name}, ${d.memoryGiB} GiB`);
  }
  lines.push('');
  lines.push(r.sharp.ok ? `images: sharp ${r.sharp.version}, libvips ${r.sharp.libvips}` : `images: sharp unusable: ${r.sharp.error}`);
  if (Object.keys(r.env).length) lines.push(`env: ${Object.entries(r.env).map(([k, x]) => `${k}=${x}`).join(' ')}`);
  lines.push('');
  const s = r.selected;
  lines.push(s.ok ? `backend '${r.request}' → ${s.id}: ${s.reason}` : `UNUSABLE: ${s.reason}`);
  const torch = r.backends.find((b) => b.id === 'torch');
  if (s.ok && s.id !== 'torch' && r.request === 'auto' && torch && !torch.available) lines.push(`  torch: ${torch.reason}`);
  if (s.fix && (!s.ok || s.id !== 'tensorflow')) lines.push(`  fix: ${s.fix}`);
  return lines.join('\n');
}
