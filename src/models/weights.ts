/**
 * Reference names and the ONE layout-conversion table between PyTorch state dicts and the TF layouts used here
 * (spec §8.2, §8.4). Pure functions over plain arrays: no tensors needed, so import/export and checkpoints can use
 * them directly.
 *
 * | kind           | PyTorch         | TF.js (here)    | permutation torch → TF |
 * |----------------|-----------------|-----------------|------------------------|
 * | conv           | O×I×kH×kW       | [kH, kW, I, O]  | (2, 3, 1, 0)           |
 * | depthwise      | C×1×k×k         | [k, k, C, 1]    | (2, 3, 0, 1)           |
 * | linear         | O×I             | [I, O]          | (1, 0)                 |
 * | convTranspose  | I×O×kH×kW       | [kH, kW, O, I]  | (2, 3, 1, 0)           |
 * | token          | 1×C×1×1         | [1, 1, 1, C]    | (0, 2, 3, 1)           |
 * | vector/scalar  | same            | same            | —                      |
 */
import type { EncoderSpec, ModelConfig } from '../spec/types.js';
import type { LayoutKind, TensorDef } from './params.js';
import { buildEncoder, buildSparK } from './spark.js';

/** The layout kind of a reference key (and its rank). */
export function layoutOf(name: string, rank: number): LayoutKind {
  if (rank === 0) return 'scalar';
  if (rank === 1) return 'vector';
  if (/(^|\.)mask_tokens\.\d+$/.test(name)) return 'token';
  if (rank === 2) return 'linear';
  if (rank === 4) {
    if (/(^|\.)up_sample\.weight$/.test(name)) return 'convTranspose';
    if (/(^|\.)dwconv\.weight$/.test(name)) return 'depthwise';
    return 'conv';
  }
  throw new Error(`no layout rule for '${name}' of rank ${rank}`);
}

/** torch dims → TF dims, as the permutation `tfShape[i] = torchShape[perm[i]]`. */
const TORCH_TO_TF: Record<LayoutKind, number[] | null> = {
  conv: [2, 3, 1, 0],
  depthwise: [2, 3, 0, 1],
  linear: [1, 0],
  convTranspose: [2, 3, 1, 0],
  token: [0, 2, 3, 1],
  vector: null,
  scalar: null,
};

/** Transpose a row-major array: out has shape `shape.perm` (outShape[i] = shape[perm[i]]). */
export function permute<T extends Float32Array | Int32Array | Float64Array>(data: T, shape: readonly number[], perm: readonly number[]): { shape: number[]; data: T } {
  const rank = shape.length;
  if (perm.length !== rank) throw new Error(`permute: rank ${rank} vs perm ${perm.length}`);
  const outShape = perm.map((p) => shape[p]!);
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`permute: ${data.length} values for shape ${JSON.stringify(shape)}`);
  const inStrides = new Array<number>(rank);
  let s = 1;
  for (let i = rank - 1; i >= 0; i--) {
    inStrides[i] = s;
    s *= shape[i]!;
  }
  const stridesOut = perm.map((p) => inStrides[p]!); // input stride for each output axis
  const out = new (data.constructor as new (n: number) => T)(n);
  const idx = new Array<number>(rank).fill(0);
  let src = 0;
  for (let o = 0; o < n; o++) {
    out[o] = data[src]!;
    // increment the output multi-index (row-major), tracking the source offset
    for (let ax = rank - 1; ax >= 0; ax--) {
      idx[ax]!++;
      src += stridesOut[ax]!;
      if (idx[ax]! < outShape[ax]!) break;
      src -= stridesOut[ax]! * outShape[ax]!;
      idx[ax] = 0;
    }
  }
  return { shape: outShape, data: out };
}

function invert(perm: readonly number[]): number[] {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}

/** TF layout → PyTorch layout for the tensor named `name` (shape is the TF shape). */
export function toTorchLayout<T extends Float32Array | Int32Array | Float64Array>(name: string, shape: readonly number[], data: T, kind?: LayoutKind): { shape: number[]; data: T } {
  const k = kind ?? layoutOf(name, shape.length);
  const perm = TORCH_TO_TF[k];
  if (!perm) return { shape: [...shape], data };
  return permute(data, shape, invert(perm));
}

/** PyTorch layout → TF layout for the tensor named `name` (shape is the PyTorch shape). */
export function fromTorchLayout<T extends Float32Array | Int32Array | Float64Array>(name: string, shape: readonly number[], data: T, kind?: LayoutKind): { shape: number[]; data: T } {
  const k = kind ?? layoutOf(name, shape.length);
  const perm = TORCH_TO_TF[k];
  if (!perm) return { shape: [...shape], data };
  return permute(data, shape, perm);
}

/** Shape in PyTorch layout of a tensor given its TF shape. */
export function torchShape(name: string, tfShape: readonly number[], kind?: LayoutKind): number[] {
  const k = kind ?? layoutOf(name, tfShape.length);
  const perm = TORCH_TO_TF[k];
  if (!perm) return [...tfShape];
  const inv = invert(perm);
  return inv.map((p) => tfShape[p]!);
}

export interface StateEntry {
  key: string;
  /** PyTorch shape. */
  torchShape: number[];
  /** TF shape (as stored here). */
  tfShape: number[];
  role: 'param' | 'buffer' | 'deprecated' | 'config';
  /** 'int64' for num_batches_tracked in PyTorch (int32 here). */
  dtype: 'float32' | 'int64' | 'object';
}

function toEntries(defs: readonly TensorDef[]): StateEntry[] {
  return defs.map((d) => ({
    key: d.key,
    torchShape: torchShape(d.key, d.shape, d.layout),
    tfShape: [...d.shape],
    role: d.role,
    dtype: d.dtype === 'int32' ? 'int64' : 'float32',
  }));
}

/** The encoder state-dict entries (timm ResNet / official ConvNeXt keys, no head), in reference order. */
export function encoderStateEntries(spec: EncoderSpec, opts: { numClasses?: number } = {}): StateEntry[] {
  const enc = buildEncoder(spec, { seed: 0, shapesOnly: true, numClasses: opts.numClasses ?? 0 });
  return toEntries(enc.defs);
}

/** The encoder state-dict keys (spec §8.2; R50 318, CNX-S/B/L 340). */
export function encoderStateKeys(spec: EncoderSpec, opts: { numClasses?: number } = {}): string[] {
  return encoderStateEntries(spec, opts).map((e) => e.key);
}

/** Keys of the reference SparK state dict that this port does not hold (deprecated buffers + 'config'). */
export const DEPRECATED_SPARK_KEYS = ['imn_m', 'imn_s', 'norm_black'] as const;

/**
 * The full with-decoder SparK state dict ('module', spec §8.2): `imn_m`, `imn_s`, `norm_black` (deprecated, never
 * used), the model's params and buffers, and `'config'` (R50 426 entries, CNX-S 434, CNX-B/L 436).
 */
export function sparkStateEntries(model: ModelConfig, inputSize: number): StateEntry[] {
  const m = buildSparK(model, inputSize, 0, { shapesOnly: true });
  return [
    { key: 'imn_m', torchShape: [1, 3, 1, 1], tfShape: [1, 1, 1, 3], role: 'deprecated', dtype: 'float32' },
    { key: 'imn_s', torchShape: [1, 3, 1, 1], tfShape: [1, 1, 1, 3], role: 'deprecated', dtype: 'float32' },
    { key: 'norm_black', torchShape: [1, 3, inputSize, inputSize], tfShape: [1, inputSize, inputSize, 3], role: 'deprecated', dtype: 'float32' },
    ...toEntries(m.defs),
    { key: 'config', torchShape: [], tfShape: [], role: 'config', dtype: 'object' },
  ];
}

export function sparkStateKeys(model: ModelConfig, inputSize: number): string[] {
  return sparkStateEntries(model, inputSize).map((e) => e.key);
}

/** The `'config'` entry of a with-decoder state dict (spec §8.1). */
export function sparkConfigEntry(model: ModelConfig, inputSize: number, sbn = false): Record<string, unknown> {
  const m = buildSparK(model, inputSize, 0, { shapesOnly: true });
  return {
    mask_ratio: model.mask_ratio,
    densify_norm_str: m.densifyNorm === 'none' ? '' : m.densifyNorm,
    sbn,
    hierarchy: 4,
    'sparse_encoder.input_size': inputSize,
    'dense_decoder.width': model.decoder.width,
  };
}
