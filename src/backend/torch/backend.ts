/**
 * `TorchBackend`: a TensorFlow.js KernelBackend whose tensors are ATen tensors held by the native addon
 * (native/torch). A tfjs dataId maps to `{h, refCount}`: `h` is the addon's handle of an at::Tensor on the backend's
 * device (CPU or one CUDA device). Reference counting follows tfjs's cpu backend (write → 1, incRef on aliasing
 * kernels such as Identity, disposeData decrements and frees the native tensor at 0). Kernels (./kernels/) read
 * handles with `h(info)` and wrap the handles the addon returns with `out(h)`.
 *
 * dtypes: float32, int32 and bool (torch.bool; tfjs reads it as Uint8Array). string and complex64 are rejected.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendTimingInfo, DataId, DataType, TensorInfo } from '@tensorflow/tfjs';
import os from 'node:os';
import { UsageError } from '../../util/errors.js';
import { DT, DTYPES, loadTorchAddon, meta, type TorchAddon } from './addon.js';

type BackendValues = Float32Array | Int32Array | Uint8Array | Uint8Array[];

export interface TorchData {
  h: number;
  refCount: number;
}

export interface TorchBackendOptions {
  /** 'cpu' | 'cuda' | 'cuda:N' */
  device: string;
  /** CPU intra-op threads (at::set_num_threads); default: leave PyTorch's default. */
  threads?: number;
  /** TF32 for convolutions (cuDNN) on CUDA; default true, PyTorch's default. Matmuls stay full fp32. */
  tf32?: boolean;
  /**
   * Bytes of freed CPU tensor memory the caching allocator may keep for reuse (native/torch/spark_cpu_cache.h);
   * 0 turns the cache off. Default: `defaultCpuCacheBytes()`.
   */
  cpuCacheBytes?: number;
}

/**
 * The CPU cache cap: SPARK_TORCH_CPU_CACHE_MB (MiB, 0 = off) or a quarter of the machine's memory, at most 8 GiB. A value
 * that is not a number is a UsageError (exit 2).
 */
export function defaultCpuCacheBytes(env: NodeJS.ProcessEnv = process.env): number {
  const v = env['SPARK_TORCH_CPU_CACHE_MB'];
  if (v !== undefined && v !== '') {
    const mb = Number(v);
    if (!Number.isFinite(mb) || mb < 0) throw new UsageError(`SPARK_TORCH_CPU_CACHE_MB must be a number of MiB >= 0, not '${v}'`);
    return Math.floor(mb * 2 ** 20);
  }
  return Math.min(Math.floor(os.totalmem() / 4), 8 * 2 ** 30);
}

function dtypeCode(dtype: DataType): number {
  const c = (DT as Record<string, number>)[dtype];
  if (c === undefined) throw new Error(`torch backend: dtype '${dtype}' is not supported (float32, int32 and bool are)`);
  return c;
}

export class TorchBackend extends tf.KernelBackend {
  readonly addon: TorchAddon;
  readonly device: string;
  private data: tf.DataStorage<TorchData>;
  private disposed = false;

  constructor(opts: TorchBackendOptions) {
    super();
    this.addon = loadTorchAddon();
    if (this.addon.handles() !== 0 && this.addon.device() !== opts.device) {
      throw new Error(`torch backend: the addon still holds ${this.addon.handles()} tensors on ${this.addon.device()}`);
    }
    this.addon.setDevice(opts.device);
    this.device = this.addon.device();
    if (opts.threads && opts.threads > 0) this.addon.setNumThreads(opts.threads);
    // PyTorch's defaults (TF32 convolutions on CUDA, full-fp32 matmuls) are left alone unless TF32 is turned off.
    if (opts.tf32 === false) this.addon.setTf32(false, false);
    // Freed activation buffers are kept for the next step instead of going back to the system (every fresh page
    // costs a fault and a zero-fill). On CUDA the cache only sees small host tensors; PyTorch caches device memory.
    this.addon.cpuCache?.(opts.cpuCacheBytes ?? defaultCpuCacheBytes());
    this.data = new tf.DataStorage(this, tf.engine());
  }

  // ------------------------------------------------------------------------------------------------- kernel helpers

  /** The native handle of a tensor passed to a kernel. */
  h(t: TensorInfo): number {
    return this.data.get(t.dataId).h;
  }

  /** Wrap a handle the last addon call returned as its `k`-th output (shape and dtype from the shared meta buffer). */
  out(h: number, k = 0): TensorInfo {
    let p = 1;
    for (let i = 0; i < k; i++) p += 2 + meta[p + 1]!;
    const dtype = DTYPES[meta[p]!];
    if (dtype === undefined) throw new Error(`torch backend: an operator returned an unsupported dtype (code ${meta[p]})`);
    const rank = meta[p + 1]!;
    const shape = new Array<number>(rank);
    for (let i = 0; i < rank; i++) shape[i] = meta[p + 2 + i]!;
    const dataId = {};
    this.data.set(dataId, { h, refCount: 1 });
    return { dataId, shape, dtype };
  }

  /** Wrap a handle whose shape and dtype the kernel knows. */
  make(h: number, shape: number[], dtype: DataType): TensorInfo {
    const dataId = {};
    this.data.set(dataId, { h, refCount: 1 });
    return { dataId, shape: [...shape], dtype };
  }

  /** Wrap a handle made by any earlier call (asks the addon for its shape). */
  wrap(h: number): TensorInfo {
    this.addon.describe(h);
    return this.out(h);
  }

  /** The same data under another TensorInfo (Identity): one more reference, no copy. */
  alias(t: TensorInfo, shape = t.shape): TensorInfo {
    this.incRef(t.dataId);
    return { dataId: t.dataId, shape: [...shape], dtype: t.dtype };
  }

  /**
   * A tensor derived from handle `h` (e.g. a convolution filter in the layout oneDNN/cuDNN prefer), made once and
   * freed with `h`. Safe because a wrapped handle's contents never change (kernels write only into tensors they
   * have just made and not yet returned).
   */
  derived(h: number, make: () => number): number {
    let d = this.derivedOf.get(h);
    if (d === undefined) {
      d = make();
      this.derivedOf.set(h, d);
    }
    return d;
  }

  private derivedOf = new Map<number, number>();

  /** Free a temporary handle made inside a kernel. */
  free(h: number | number[]): void {
    this.addon.free(h);
  }

  /** A float32/int32/bool tensor from host values, as a kernel-internal handle. */
  constHandle(values: Float32Array | Int32Array | Uint8Array, shape: number[], dtype: DataType): number {
    return this.addon.fromData(values, shape, dtypeCode(dtype));
  }

  disposeIntermediateTensorInfo(t: TensorInfo): void {
    this.disposeData(t.dataId);
  }

  // ------------------------------------------------------------------------------------------------- KernelBackend

  override write(values: BackendValues, shape: number[], dtype: DataType): DataId {
    const dataId = {};
    this.data.set(dataId, { h: this.upload(values, shape, dtype), refCount: 1 });
    return dataId;
  }

  override move(dataId: DataId, values: BackendValues, shape: number[], dtype: DataType, refCount: number): void {
    this.data.set(dataId, { h: this.upload(values, shape, dtype), refCount });
  }

  private upload(values: BackendValues | null, shape: number[], dtype: DataType): number {
    const code = dtypeCode(dtype);
    const n = shape.reduce((a, b) => a * b, 1);
    let v: Float32Array | Int32Array | Uint8Array;
    if (values == null) {
      v = dtype === 'float32' ? new Float32Array(n) : dtype === 'int32' ? new Int32Array(n) : new Uint8Array(n);
    } else if (dtype === 'float32') {
      v = values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
    } else if (dtype === 'int32') {
      v = values instanceof Int32Array ? values : Int32Array.from(values as ArrayLike<number>);
    } else {
      v = values instanceof Uint8Array ? values : Uint8Array.from(values as ArrayLike<number>);
    }
    return this.addon.fromData(v, shape, code);
  }

  override readSync(dataId: DataId): BackendValues {
    return this.addon.toData(this.data.get(dataId).h);
  }

  override async read(dataId: DataId): Promise<BackendValues> {
    return this.readSync(dataId);
  }

  override refCount(dataId: DataId): number {
    return this.data.has(dataId) ? this.data.get(dataId).refCount : 0;
  }

  override incRef(dataId: DataId): void {
    this.data.get(dataId).refCount++;
  }

  decRef(dataId: DataId): void {
    if (this.data.has(dataId)) this.data.get(dataId).refCount--;
  }

  override disposeData(dataId: DataId, force = false): boolean {
    if (!this.data.has(dataId)) return true;
    const d = this.data.get(dataId);
    d.refCount--;
    if (!force && d.refCount > 0) return false;
    const derived = this.derivedOf.get(d.h);
    if (derived !== undefined) {
      this.addon.free(derived);
      this.derivedOf.delete(d.h);
    }
    this.addon.free(d.h);
    this.data.delete(dataId);
    return true;
  }

  override numDataIds(): number {
    return this.data.numDataIds();
  }

  /**
   * numBytesInTorch: bytes of the storages live tensors hold; numBytesCachedCpu: freed CPU blocks the caching
   * allocator keeps for reuse (not tensors; released by `emptyCache()`).
   */
  override memory(): { unreliable: boolean; reasons?: string[]; numBytesInTorch: number; numTorchHandles: number; numBytesCachedCpu: number; device: string } {
    const cached = this.addon.cpuCacheStats?.()[0] ?? 0;
    return { unreliable: false, numBytesInTorch: this.addon.memory(), numTorchHandles: this.addon.handles(), numBytesCachedCpu: cached, device: this.device };
  }

  /** Gives the CPU blocks the caching allocator keeps back to the system. */
  emptyCache(): void {
    this.addon.emptyCpuCache?.();
  }

  override timerAvailable(): boolean {
    return true;
  }

  override async time(f: () => void): Promise<BackendTimingInfo> {
    this.addon.synchronize();
    const t0 = performance.now();
    f();
    this.addon.synchronize();
    return { kernelMs: performance.now() - t0 };
  }

  override floatPrecision(): 32 {
    return 32;
  }

  override epsilon(): number {
    return 1e-7;
  }

  override dispose(): void {
    // The engine disposes every tensor before removing a backend; nothing else is held here.
    this.disposed = true;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }
}
