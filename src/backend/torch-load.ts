/**
 * Loading the torch backend (src/backend/torch/, the libtorch addon) for selection, doctor and the self-check.
 *
 * The module is imported dynamically, so that a checkout without it, or an addon that is not built or does not load,
 * ends in a BackendError (exit 3) naming the cause and the fix, never a crash, and the other backends never load it.
 * Device requests: `auto | cpu | cuda | cuda:N` (`runtime.device`, else $SPARK_TORCH_DEVICE).
 */
import { BackendError, SparkError } from '../util/errors.js';
import { findTorchAddon, SETUP_TORCH_FIX, type TorchAddonLocation } from './torch/addon-path.js';
import { nvidiaGpuVisible } from './native.js';

export type DeviceRequest = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
export const DEVICE_RE = /^(auto|cpu|cuda|cuda:\d+)$/;

/** What src/backend/torch/index.ts exports (torch-core's side of the interface). */
export interface TorchBackendModule {
  registerTorchBackend(opts: { device: string; tf32?: boolean; threads?: number }): unknown;
}

/** Validate a device request from the spec, the CLI or the environment. */
export function parseDeviceRequest(value: string, where: string): DeviceRequest {
  if (DEVICE_RE.test(value)) return value as DeviceRequest;
  throw new BackendError(`${where}: unknown device '${value}' (expected auto, cpu, cuda or cuda:N)`);
}

/** The device request in force: the given one (spec / CLI), else $SPARK_TORCH_DEVICE, else auto. */
export function deviceRequest(given?: string | null): DeviceRequest {
  if (given && given !== 'auto') return parseDeviceRequest(given, 'runtime.device');
  const env = process.env['SPARK_TORCH_DEVICE'];
  return env ? parseDeviceRequest(env, 'SPARK_TORCH_DEVICE') : 'auto';
}

export interface TorchPlan {
  /** The addon, or null with `reason`. */
  addon: TorchAddonLocation;
  /** The device the backend would run on ('cpu', 'cuda:0', …); null when unusable. */
  device: string | null;
  /** Why this device (or why none). */
  reason: string;
  /** The torch build has CUDA and an NVIDIA GPU is visible. */
  cuda: boolean;
}

/** Without loading anything: which device a request would get, and whether the backend can run at all. */
export function planTorch(request: DeviceRequest): TorchPlan {
  const addon = findTorchAddon();
  if (!addon.path) return { addon, device: null, reason: addon.reason, cuda: false };
  const cudaBuild = addon.build ? addon.build.cudaVersion != null : true; // $SPARK_TORCH_ADDON without build.json: ask the addon
  const gpu = nvidiaGpuVisible();
  const cuda = cudaBuild && gpu;
  if (request === 'cpu') return { addon, device: 'cpu', reason: 'device cpu requested', cuda };
  if (request === 'auto') {
    return cuda
      ? { addon, device: 'cuda:0', reason: `torch ${addon.build?.torchVersion ?? ''} has CUDA ${addon.build?.cudaVersion ?? ''} and a GPU is visible`.replace(/  +/g, ' '), cuda }
      : { addon, device: 'cpu', reason: cudaBuild ? 'no NVIDIA GPU visible' : `torch ${addon.build?.torchVersion} is a CPU build`, cuda };
  }
  const device = request === 'cuda' ? 'cuda:0' : request;
  if (!cudaBuild) {
    return { addon, device: null, reason: `device ${request} requested, but the addon was built against torch ${addon.build?.torchVersion}, a CPU build (install a CUDA build of torch, then \`${SETUP_TORCH_FIX}\`)`, cuda };
  }
  if (!gpu) return { addon, device: null, reason: `device ${request} requested, but no NVIDIA GPU is visible (no /dev/nvidia0)`, cuda };
  return { addon, device, reason: `device ${request} requested`, cuda };
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0]!.slice(0, 300);
}

/** Import src/backend/torch/index.js; a BackendError when it is missing or fails to load. */
export async function importTorchBackend(): Promise<TorchBackendModule> {
  try {
    // A literal specifier, so that bundlers (bench/gpu/prepare.sh) include the backend.
    // @ts-ignore -- the module is src/backend/torch/index.ts (the backend itself); absent in partial checkouts
    const m = (await import('./torch/index.js')) as TorchBackendModule;
    if (typeof m.registerTorchBackend !== 'function') throw new Error('it exports no registerTorchBackend');
    return m;
  } catch (e) {
    if (e instanceof BackendError) throw e;
    throw new BackendError(`backend 'torch' is unusable: its module (src/backend/torch) did not load: ${firstLine(e)} (fix: npm run build)`, 'npm run build');
  }
}

/** Register the 'torch' tfjs backend on `device` (not selecting it); `threads`: libtorch's intra-op threads (CPU). */
export async function registerTorch(device: string, tf32: boolean, threads?: number | null): Promise<void> {
  const m = await importTorchBackend();
  try {
    await m.registerTorchBackend({ device, tf32, ...(threads ? { threads } : {}) });
  } catch (e) {
    if (e instanceof SparkError) throw e; // already says what is wrong (a BackendError, or bad input such as an env value)
    throw new BackendError(`backend 'torch' is unusable: ${firstLine(e)} (fix: ${SETUP_TORCH_FIX})`, SETUP_TORCH_FIX);
  }
}
