/**
 * The `torch` TensorFlow.js backend: tfjs's model code, tape autodiff and training loop, with every kernel run as
 * the ATen operator PyTorch itself runs, on the CPU or a CUDA device (native/torch's addon; built by
 * `npm run setup:torch`). A kernel the backend lacks fails with tfjs's "Kernel 'X' not registered for backend
 * 'torch'"; nothing falls back to another backend.
 */
import * as tf from '@tensorflow/tfjs';
import { loadTorchAddon, missingOps, torchAddonPath } from './addon.js';
import { TorchBackend, type TorchBackendOptions } from './backend.js';
import { torchKernels } from './kernels/index.js';

export { TorchBackend } from './backend.js';
export { findTorchAddon, torchCacheDir, TORCH_SETUP_FIX } from './addon-path.js';
export { missingOps, torchAddonPath } from './addon.js';

export const TORCH_BACKEND = 'torch';
let kernelsRegistered = false;

/** Names of the kernels the torch backend implements. */
export function torchKernelNames(): string[] {
  return torchKernels.map((k) => k.kernelName);
}

/**
 * Register the `torch` backend (device 'cpu' | 'cuda' | 'cuda:N'). Loads the addon first so that a missing build
 * fails here with its reason; tf.setBackend('torch') selects it afterwards. Registering again with the backend
 * already registered is a no-op when the device is the same and an error otherwise.
 */
export async function registerTorchBackend(opts: Partial<TorchBackendOptions> & { device?: string } = {}): Promise<void> {
  const device = opts.device ?? 'cpu';
  const addon = loadTorchAddon();
  const existing = tf.findBackend(TORCH_BACKEND) as TorchBackend | null;
  if (existing) {
    const want = device === 'cuda' ? 'cuda:0' : device;
    if (existing.device !== want) throw new Error(`the torch backend is already registered on ${existing.device}, not ${want}`);
    if (opts.threads && opts.threads > 0) addon.setNumThreads(opts.threads);
    return;
  }
  // An operator missing from this PyTorch (another version's schemas) is named now, once, and again by the kernel
  // that needs it when it runs (that kernel fails; nothing falls back).
  const missing = missingOps();
  if (missing.length) console.warn(`spark: the torch backend (${torchAddonPath()}) cannot run kernels that need: ${missing.join('; ')}`);
  const backend = new TorchBackend({ device, threads: opts.threads, tf32: opts.tf32 });
  if (!kernelsRegistered) {
    for (const k of torchKernels) tf.registerKernel(k);
    kernelsRegistered = true;
  }
  tf.registerBackend(TORCH_BACKEND, () => backend, 0);
}
