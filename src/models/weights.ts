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
import * as tf from '@tensorflow/tfjs';
import type { EncoderSpec, ModelConfig } from '../spec/types.js';
import { DataError } from '../util/errors.js';
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

/** One tensor of a state (TF or PyTorch layout, as named by the function using it). */
export interface StateTensor {
  shape: number[];
  dtype: 'float32' | 'int32';
  data: Float32Array | Int32Array;
}

/** Anything holding reference-named variables: a SparK model or an encoder. */
export interface HasState {
  params: Map<string, tf.Variable>;
  buffers: Map<string, tf.Variable>;
}

/**
 * Read all params and buffers (reference keys) as plain arrays, in TF layout (checkpoints) or PyTorch layout
 * (export to `.pth`/safetensors for PyTorch users). `num_batches_tracked` is int32 here (int64 in PyTorch).
 */
export function exportState(m: HasState, layout: 'tf' | 'torch' = 'tf'): Map<string, StateTensor> {
  const out = new Map<string, StateTensor>();
  for (const [k, v] of [...m.params, ...m.buffers]) {
    const data = v.dtype === 'int32' ? Int32Array.from(v.dataSync() as Int32Array) : Float32Array.from(v.dataSync() as Float32Array);
    const t = layout === 'torch' ? toTorchLayout(k, v.shape, data) : { shape: [...v.shape], data };
    out.set(k, { shape: t.shape, dtype: v.dtype === 'int32' ? 'int32' : 'float32', data: t.data });
  }
  return out;
}

export interface ImportStateOptions {
  layout?: 'tf' | 'torch';
  /** Throw when a model key is missing from the state or a state key is unknown (default true). */
  strict?: boolean;
  /**
   * Only keys starting with this prefix are used, with the prefix removed (e.g. 'sparse_encoder.sp_cnn.' to load
   * the encoder of a SparK state into a dense encoder).
   */
  prefix?: string;
  /** Keys to ignore in the state (default: the deprecated SparK buffers and 'config'). */
  ignore?: readonly string[];
  /** Where the state came from, for error messages. */
  source?: string;
}

/**
 * Assign values to the model's variables by reference key, converting from PyTorch layout when asked. Shapes are
 * checked; a mismatch (or, when strict, a missing/unexpected key) throws a DataError naming the key and the source.
 * Returns the missing and unexpected keys (non-strict use).
 */
export function importState(m: HasState, state: Map<string, StateTensor> | Record<string, StateTensor>, opts: ImportStateOptions = {}): { loaded: string[]; missing: string[]; unexpected: string[] } {
  const layout = opts.layout ?? 'tf';
  const strict = opts.strict ?? true;
  const src = opts.source ? `${opts.source}: ` : '';
  const ignore = new Set<string>(opts.ignore ?? [...DEPRECATED_SPARK_KEYS, 'config']);
  const entries = state instanceof Map ? [...state.entries()] : Object.entries(state);
  const incoming = new Map<string, StateTensor>();
  for (const [k0, t] of entries) {
    if (ignore.has(k0)) continue;
    if (opts.prefix) {
      if (!k0.startsWith(opts.prefix)) continue;
      incoming.set(k0.slice(opts.prefix.length), t);
    } else incoming.set(k0, t);
  }
  const targets = new Map([...m.params, ...m.buffers]);
  const missing = [...targets.keys()].filter((k) => !incoming.has(k));
  const unexpected = [...incoming.keys()].filter((k) => !targets.has(k));
  if (strict && (missing.length || unexpected.length)) {
    const parts: string[] = [];
    if (missing.length) parts.push(`missing ${missing.length} key(s) (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''})`);
    if (unexpected.length) parts.push(`unexpected ${unexpected.length} key(s) (${unexpected.slice(0, 3).join(', ')}${unexpected.length > 3 ? ', ...' : ''})`);
    throw new DataError(`${src}state does not match the model: ${parts.join('; ')}`);
  }
  // validate every shape before assigning anything
  const plan: Array<[string, StateTensor]> = [];
  for (const [k, t] of incoming) {
    const v = targets.get(k);
    if (!v) continue;
    const conv = layout === 'torch' ? fromTorchLayout(k, t.shape, t.data) : { shape: t.shape, data: t.data };
    const n = conv.shape.reduce((a, b) => a * b, 1);
    if (conv.shape.length !== v.shape.length || conv.shape.some((d, i) => d !== v.shape[i]) || conv.data.length !== n) {
      throw new DataError(`${src}${k}: shape ${JSON.stringify(t.shape)} (${layout} layout) does not fit the model's ${JSON.stringify(layout === 'torch' ? torchShape(k, v.shape) : v.shape)}`);
    }
    plan.push([k, { shape: conv.shape, dtype: t.dtype, data: conv.data }]);
  }
  for (const [k, t] of plan) {
    const v = targets.get(k)!;
    const value = tf.tensor(v.dtype === 'int32' ? Int32Array.from(t.data) : Float32Array.from(t.data), v.shape, v.dtype === 'int32' ? 'int32' : 'float32');
    v.assign(value);
    value.dispose();
  }
  return { loaded: plan.map(([k]) => k), missing, unexpected };
}
