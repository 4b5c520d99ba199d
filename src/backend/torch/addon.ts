/**
 * The native side of the torch backend: loading native/torch's addon and calling ATen operators by schema name.
 *
 * `loadTorchAddon()` loads `$SPARK_TORCH_ADDON`, else the build `findTorchAddon()` names. Operators are declared by
 * the kernel modules with `aten(name, overload, sig)` (sig: one letter per schema argument, see
 * native/torch/spark_torch.cc) and resolved once when the addon is loaded; a schema this PyTorch lacks is recorded
 * and reported by name when a kernel needs it (`missingOps()` lists them all).
 */
import { createRequire } from 'node:module';
import { findTorchAddon } from './addon-path.js';

const require = createRequire(import.meta.url);

export interface TorchAddon {
  init(meta: Int32Array): void;
  resolve(name: string, overload: string): number;
  schema(id: number): string;
  call(id: number, sig: string, ...args: unknown[]): number | number[];
  fromData(values: Float32Array | Int32Array | Uint8Array, shape: number[], dtype: number): number;
  toData(h: number): Float32Array | Int32Array | Uint8Array;
  free(h: number | number[]): void;
  describe(h: number): void;
  handles(): number;
  memory(): number;
  setDevice(d: string): void;
  device(): string;
  cudaDeviceCount(): number;
  synchronize(): void;
  setNumThreads(n: number): void;
  numThreads(): number;
  setTf32(conv: boolean, matmul: boolean): void;
  version(): string;
  /**
   * The fused optimizer on float32 CPU tensors (native/torch/spark_torch.cc): kind 0 LAMB, 1 AdamW; `lists` =
   * params, grads, m, v handles; returns params', m', v' handles. Absent in addons built before it.
   */
  optimCpu?(kind: 0 | 1, lists: number[], clip: number, hyper: number[], apply: number, adapt: boolean, trustClip: boolean): number[];
  /** √(Σ Σ g²) of float32 CPU tensors, accumulated in double: a new float32 scalar handle. */
  globalNormCpu?(grads: number[]): number;
  /** dy where 0 < y (< 6 when `six`), else dy·0, one pass over float32 CPU tensors: a new handle. */
  activationGradCpu?(dy: number, y: number, six: boolean): number;
  /** The exact GELU's gradient over float32 CPU tensors (native/torch/spark_gelu.h): a new handle. */
  geluGradCpu?(dy: number, x: number): number;
  /**
   * Installs the caching CPU allocator (native/torch/spark_cpu_cache.h) with a cap on the bytes it keeps free;
   * 0 keeps nothing (and empties it). Absent in addons built before it.
   */
  cpuCache?(limitBytes: number): void;
  /** [cached bytes, peak cached bytes, hits, misses, released, installed (1|0)] */
  cpuCacheStats?(): number[];
  emptyCpuCache?(): void;
}

/** dtype codes shared with the addon. */
export const DT = { float32: 0, int32: 1, bool: 2 } as const;
export const DTYPES = ['float32', 'int32', 'bool'] as const;
export type TorchDtype = (typeof DTYPES)[number];

/** A declared ATen operator: resolved id (−1 when missing), call signature, and the name for errors. */
export interface AtenOp {
  readonly name: string;
  readonly overload: string;
  readonly sig: string;
  id: number;
}

const declared: AtenOp[] = [];
const missing: string[] = [];
let addon: TorchAddon | null = null;
let addonPath: string | null = null;
/** Output descriptions of the last call: [count, (dtype, rank, ...dims)*]. */
export const meta = new Int32Array(1 << 16);

/** Declare an ATen operator (resolved when the addon loads, or now if it is loaded). */
export function aten(name: string, overload: string, sig: string): AtenOp {
  const op: AtenOp = { name: `aten::${name}`, overload, sig, id: -1 };
  declared.push(op);
  if (addon) resolveOp(op);
  return op;
}

function opLabel(op: AtenOp): string {
  return op.overload ? `${op.name}.${op.overload}` : op.name;
}

function resolveOp(op: AtenOp): void {
  try {
    op.id = addon!.resolve(op.name, op.overload);
  } catch (e) {
    op.id = -1;
    missing.push(String((e as Error).message));
  }
}

/** Load the addon once (throws with the reason when it is not built or fails to load). */
export function loadTorchAddon(): TorchAddon {
  if (addon) return addon;
  const env = process.env['SPARK_TORCH_ADDON'];
  const file = env || findTorchAddon().path;
  if (!file) throw new Error(findTorchAddon().reason);
  let a: TorchAddon;
  try {
    a = require(file) as TorchAddon;
  } catch (e) {
    throw new Error(`cannot load the torch addon ${file}${env ? ' ($SPARK_TORCH_ADDON)' : ''}: ${String((e as Error).message).split('\n')[0]}`);
  }
  a.init(meta);
  addon = a;
  addonPath = file;
  for (const op of declared) resolveOp(op);
  return a;
}

export function torchAddonPath(): string | null {
  return addonPath;
}

/** The ATen schemas declared by the kernels that this PyTorch does not have (empty when all resolved). */
export function missingOps(): string[] {
  return [...missing];
}

/** Run a declared operator; returns the output handle(s). */
export function run(op: AtenOp, ...args: unknown[]): number {
  if (op.id < 0) throw new Error(`ATen operator ${opLabel(op)} is not available in this PyTorch (${addon ? addon.version() : 'addon not loaded'})`);
  return addon!.call(op.id, op.sig, ...args) as number;
}

/** Run a declared operator with several tensor outputs. */
export function runMulti(op: AtenOp, ...args: unknown[]): number[] {
  if (op.id < 0) throw new Error(`ATen operator ${opLabel(op)} is not available in this PyTorch (${addon ? addon.version() : 'addon not loaded'})`);
  const r = addon!.call(op.id, op.sig, ...args);
  return typeof r === 'number' ? [r] : r;
}
