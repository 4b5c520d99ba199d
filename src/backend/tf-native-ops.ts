/**
 * spark's own TensorFlow ops (native/tf/spark_tf_ops.cc, built by `npm run setup:native`) behind tfjs kernels of the
 * 'tensorflow' backend: the fused optimizer kernels of src/train/fused-optim.ts (`SparkLambUpdate`,
 * `SparkAdamWUpdate`, `SparkGlobalNorm`: one TensorFlow op per parameter group instead of ~25 elementwise ops per
 * parameter) and exact GELU forward / backward (`SparkGelu`, `SparkGeluGrad`: one pass instead of a chain of 5–9
 * ops), LayerNorm forward / backward (one pass per row instead of ~10 ops), and masked BatchNorm (used by
 * tf-fused-kernels.ts). The addon registers the ops with the TensorFlow that tfjs-node loaded (TensorFlow's C op/kernel API); the
 * kernels here run them through tfjs-node's binding like any other op.
 *
 * Optional: without the addon (not built, or SPARK_TF_NATIVE_OPS=0) the portable composites run, as before.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { packageRoot } from '../util/paths.js';
import { GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD } from './fused-kernel-names.js';

interface Meta {
  id: number;
  shape: number[];
  dtype: number;
}
interface Attr {
  name: string;
  type: number;
  value: boolean | number | object | string | number[];
}
interface Binding {
  TF_FLOAT: number;
  TF_BOOL: number;
  TF_ATTR_INT: number;
  TF_ATTR_BOOL: number;
  TF_ATTR_FLOAT: number;
  createTensor(shape: number[], dtype: number, values: Float32Array): number;
  deleteTensor(id: number): void;
  executeOp(name: string, attrs: Attr[], inputs: number[], numOutputs: number): Meta[];
}
interface NodeBackend {
  binding: Binding;
  getInputTensorIds(tensors: tf.TensorInfo[]): number[];
  createOutputTensor(m: Meta): tf.Tensor;
}

export const TF_OPS_ADDON = 'spark_tf_ops.node';
const SOURCE = path.join('native', 'tf', 'spark_tf_ops.cc');

/** Where setup:native puts the ops addon (beside the libtensorflow it links) and its stamp. */
export function tfOpsDir(root = packageRoot()): string {
  return path.join(root, 'node_modules', '@tensorflow', 'tfjs-node', 'deps', 'spark-ops');
}

/** sha256 of the ops source (the stamp records the one it was built from). */
export function tfOpsSourceHash(root = packageRoot()): string | null {
  const src = path.join(root, SOURCE);
  return existsSync(src) ? createHash('sha256').update(readFileSync(src)).digest('hex') : null;
}

export interface TfOpsStatus {
  loaded: boolean;
  /** What was loaded, or why not (one line). */
  reason: string;
  ops: string[];
}

/** Whether the ops addon is built for this checkout's source (a file check only: nothing is loaded). */
export function tfOpsBuilt(root = packageRoot()): { built: boolean; reason: string } {
  const dir = tfOpsDir(root);
  const file = path.join(dir, TF_OPS_ADDON);
  if (!existsSync(file)) return { built: false, reason: 'not built (run `npm run setup:native`)' };
  try {
    const stamp = JSON.parse(readFileSync(path.join(dir, 'stamp.json'), 'utf8')) as { sourceHash?: string };
    const want = tfOpsSourceHash(root);
    if (want && stamp.sourceHash !== want) return { built: false, reason: `built from other sources than ${SOURCE} (run \`npm run setup:native\`)` };
  } catch {
    return { built: false, reason: 'no build stamp (run `npm run setup:native`)' };
  }
  return { built: true, reason: file };
}

let status: TfOpsStatus | null = null;

/** Load the ops addon once (after tfjs-node, whose libtensorflow it registers with). */
export function loadTfOps(): TfOpsStatus {
  if (status) return status;
  if (process.env['SPARK_TF_NATIVE_OPS'] === '0') return (status = { loaded: false, reason: 'SPARK_TF_NATIVE_OPS=0', ops: [] });
  const dir = tfOpsDir();
  const file = path.join(dir, TF_OPS_ADDON);
  if (!existsSync(file)) return (status = { loaded: false, reason: `not built (${file}; run \`npm run setup:native\`)`, ops: [] });
  try {
    const stamp = JSON.parse(readFileSync(path.join(dir, 'stamp.json'), 'utf8')) as { sourceHash?: string };
    const want = tfOpsSourceHash();
    if (want && stamp.sourceHash !== want) {
      return (status = { loaded: false, reason: `built from other sources than ${SOURCE} (run \`npm run setup:native\`)`, ops: [] });
    }
    const mod = createRequire(import.meta.url)(file) as { ops: string[]; error: string; threads: number };
    if (mod.error) return (status = { loaded: false, reason: `registration failed: ${mod.error}`, ops: [] });
    return (status = { loaded: true, reason: `${file} (${mod.ops.length} ops, ${mod.threads} threads)`, ops: mod.ops });
  } catch (e) {
    return (status = { loaded: false, reason: `cannot load ${file}: ${String((e as Error).message ?? e).split('\n')[0]}`, ops: [] });
  }
}

type KInputs = Record<string, tf.TensorInfo | undefined>;

/** Run one of the addon's ops on tfjs tensors; a small float tensor made here is freed after the call. */
function exec(be: NodeBackend, op: string, inputs: tf.TensorInfo[], extra: Float32Array | null, tail: tf.TensorInfo[], attrs: Attr[], n: number): tf.Tensor[] {
  const b = be.binding;
  const ids = be.getInputTensorIds(inputs);
  let made = -1;
  if (extra) made = b.createTensor([extra.length], b.TF_FLOAT, extra);
  try {
    const all = [...ids, ...(made >= 0 ? [made] : []), ...be.getInputTensorIds(tail)];
    return b.executeOp(op, attrs, all, n).map((m) => be.createOutputTensor(m));
  } finally {
    if (made >= 0) b.deleteTensor(made);
  }
}

function lists(inputs: KInputs, n: number): tf.TensorInfo[] {
  const out: tf.TensorInfo[] = [];
  for (const name of ['param', 'grad', 'expAvg', 'expAvgSq']) {
    for (let i = 0; i < n; i++) {
      const t = inputs[`${name}${i}`];
      if (!t) throw new Error(`SparkTf optimizer kernel: input ${name}${i} missing`);
      out.push(t);
    }
  }
  return out;
}

interface OptAttrs {
  n: number;
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  biasCorrection1: number;
  biasCorrection2: number;
  adapt?: boolean;
  trustClip?: boolean;
}

/**
 * The scalars exactly as the reference chains (src/train/fused-optim.ts) compute them in JavaScript before tfjs rounds
 * them to float32, so that the native update rounds the same operands.
 */
function lambHyper(a: OptAttrs): Float32Array {
  return Float32Array.of(a.lr, a.weightDecay, a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2, a.eps, a.biasCorrection1, Math.sqrt(a.biasCorrection2));
}
function adamwHyper(a: OptAttrs): Float32Array {
  return Float32Array.of(1 - a.lr * a.weightDecay, a.weightDecay !== 0 ? 1 : 0, a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2, a.eps, Math.sqrt(a.biasCorrection2), a.lr / a.biasCorrection1);
}

function optimizerKernel(kind: 'lamb' | 'adamw'): tf.KernelFunc {
  return (({ inputs, attrs, backend }: { inputs: KInputs; attrs: unknown; backend: unknown }) => {
    const a = attrs as OptAttrs;
    const be = backend as NodeBackend;
    const b = be.binding;
    const clip = inputs[kind === 'lamb' ? 'clipDiv' : 'clipCoef'];
    const apply = inputs['apply'];
    if (!clip || !apply) throw new Error(`SparkTf optimizer kernel: ${kind === 'lamb' ? 'clipDiv' : 'clipCoef'} or apply missing`);
    const opAttrs: Attr[] = [{ name: 'N', type: b.TF_ATTR_INT, value: a.n }];
    if (kind === 'lamb') {
      opAttrs.push({ name: 'adapt', type: b.TF_ATTR_BOOL, value: !!a.adapt }, { name: 'trust_clip', type: b.TF_ATTR_BOOL, value: !!a.trustClip });
    }
    return exec(be, kind === 'lamb' ? 'SparkTfLamb' : 'SparkTfAdamW', [...lists(inputs, a.n), clip], kind === 'lamb' ? lambHyper(a) : adamwHyper(a), [apply], opAttrs, 3 * a.n);
  }) as unknown as tf.KernelFunc;
}

function globalNormKernel({ inputs, attrs, backend }: { inputs: KInputs; attrs: unknown; backend: unknown }): tf.Tensor {
  const n = (attrs as { n: number }).n;
  if (n === 0) return tf.scalar(0);
  const be = backend as NodeBackend;
  const grads = Array.from({ length: n }, (_, i) => inputs[`grad${i}`]!);
  return exec(be, 'SparkTfGlobalNorm', grads, null, [], [{ name: 'N', type: be.binding.TF_ATTR_INT, value: n }], 1)[0]!;
}

const KERNELS: Array<[string, tf.KernelFunc]> = [
  ['SparkLambUpdate', optimizerKernel('lamb')],
  ['SparkAdamWUpdate', optimizerKernel('adamw')],
  ['SparkGlobalNorm', globalNormKernel as unknown as tf.KernelFunc],
  [GELU, (({ inputs, backend }: { inputs: KInputs; backend: unknown }) => exec(backend as NodeBackend, 'SparkTfGelu', [inputs['x']!], null, [], [], 1)[0]!) as unknown as tf.KernelFunc],
  [LAYER_NORM, (({ inputs, attrs, backend }: { inputs: KInputs; attrs: unknown; backend: unknown }) => {
    const be = backend as NodeBackend;
    const eps = (attrs as { epsilon: number }).epsilon;
    return exec(be, 'SparkTfLayerNorm', [inputs['x']!, inputs['gamma']!, inputs['beta']!], null, [], [{ name: 'epsilon', type: be.binding.TF_ATTR_FLOAT, value: eps }], 3);
  }) as unknown as tf.KernelFunc],
  [LAYER_NORM_GRAD, (({ inputs, backend }: { inputs: KInputs; backend: unknown }) =>
    exec(backend as NodeBackend, 'SparkTfLayerNormGrad', ['dy', 'x', 'gamma', 'mean', 'invStd'].map((k) => inputs[k]!), null, [], [], 3)) as unknown as tf.KernelFunc],
  [GELU_GRAD, (({ inputs, backend }: { inputs: KInputs; backend: unknown }) => exec(backend as NodeBackend, 'SparkTfGeluGrad', [inputs['dy']!, inputs['x']!], null, [], [], 1)[0]!) as unknown as tf.KernelFunc],
];

/**
 * Register the native-op kernels for the 'tensorflow' backend when the addon loads (replacing the GELU chains of
 * tf-fused-kernels.ts). Returns the load status either way.
 */
export function registerTensorflowNativeOps(): TfOpsStatus {
  const s = loadTfOps();
  if (!s.loaded) return s;
  for (const [kernelName, kernelFunc] of KERNELS) {
    if (tf.getKernel(kernelName, 'tensorflow')) tf.unregisterKernel(kernelName, 'tensorflow');
    tf.registerKernel({ kernelName, backendName: 'tensorflow', kernelFunc });
  }
  return s;
}

/** Remove the optimizer kernels again (tests compare the kernel path with the flat composite). */
export function unregisterTensorflowNativeOps(): void {
  for (const [kernelName] of KERNELS) if (tf.getKernel(kernelName, 'tensorflow')) tf.unregisterKernel(kernelName, 'tensorflow');
}
