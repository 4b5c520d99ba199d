/**
 * Backend selection and initialisation. PLACEHOLDER API owned by the backend module: `initBackend` must stay
 * the one entry point every command and test uses. (Full selection logic, wasm kernels and doctor live here.)
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { BackendError } from '../util/errors.js';

export type BackendRequest = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

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
}

let current: BackendInfo | null = null;
const require = createRequire(import.meta.url);

export function currentBackend(): BackendInfo | null {
  return current;
}

/** Initialise the requested backend once per process (later calls return the first result if compatible). */
export async function initBackend(req: BackendRequest = 'auto', opts: { threads?: number | null } = {}): Promise<BackendInfo> {
  if (current && (req === 'auto' || req === current.name)) return current;
  const threads = opts.threads ?? (await import('node:os')).availableParallelism();
  if (req === 'tensorflow' || req === 'auto') {
    process.env['TF_NUM_INTRAOP_THREADS'] ??= String(threads);
    process.env['TF_NUM_INTEROP_THREADS'] ??= '1';
    process.env['TF_CPP_MIN_LOG_LEVEL'] ??= '2';
    try {
      require('@tensorflow/tfjs-node');
      await tf.setBackend('tensorflow');
      await tf.ready();
      current = { name: 'tensorflow', provider: 'tfjs-node', reason: req === 'auto' ? 'tfjs-node addon is built' : 'requested', threads, native: true };
      return current;
    } catch (e) {
      if (req === 'tensorflow') {
        throw new BackendError(`backend 'tensorflow' is unusable: ${(e as Error).message.split('\n')[0]}`, 'run `npm run setup:native`');
      }
    }
  }
  await tf.setBackend('cpu');
  await tf.ready();
  current = { name: 'cpu', provider: 'cpu', reason: req === 'auto' ? 'native backend not available' : 'requested', threads: 1, native: false };
  return current;
}
