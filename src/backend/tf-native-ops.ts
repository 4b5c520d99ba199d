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
import { nativeOptimizerScalars, type AdamWUpdateAttrs, type LambUpdateAttrs } from './fused-optim-scalars.js';
import { withChain, type Attr, type Chain } from './tf-binding.js';

export const TF_OPS_ADDON = 'spark_tf_ops.node';
/** The addon's sources (the .cc includes the optimizer loops it shares with the torch addon). */
const SOURCES = [path.join('native', 'tf', 'spark_tf_ops.cc'), path.join('native', 'torch', 'spark_fused_optim.h'), path.join('native', 'torch', 'spark_gelu.h'), path.join('native', 'torch', 'spark_simd.h')];

/** Where setup:native puts the ops addon (beside the libtensorflow it links) and its stamp. */
export function tfOpsDir(root = packageRoot()): string {
  return path.join(root, 'node_modules', '@tensorflow', 'tfjs-node', 'deps', 'spark-ops');
}

/**
 * sha256 over the addon's sources (path NUL content NUL each), as scripts/setup-native.mjs computes it for the
 * stamp; null outside a checkout.
 */
export function tfOpsSourceHash(root = packageRoot()): string | null {
  if (!SOURCES.every((f) => existsSync(path.join(root, f)))) return null;
  const h = createHash('sha256');
  for (const f of SOURCES) h.update(f.split(path.sep).join('/')).update('\0').update(readFileSync(path.join(root, f))).update('\0');
  return h.digest('hex');
}

export interface TfOpsStatus {
  loaded: boolean;
  /** What was loaded, or why not (one line). */
  reason: string;
  ops: string[];
}

/** Whether the ops addon is built for this checkout's source (a file check only: nothing is loaded). */
export function tfOpsBuilt(root = packageRoot()): { built: boolean; reason: string; file: string } {
  const dir = tfOpsDir(root);
  const file = path.join(dir, TF_OPS_ADDON);
  if (!existsSync(file)) return { built: false, reason: 'not built (run `npm run setup:native`)', file };
  try {
    const stamp = JSON.parse(readFileSync(path.join(dir, 'stamp.json'), 'utf8')) as { sourceHash?: string };
    const want = tfOpsSourceHash(root);
    if (want && stamp.sourceHash !== want) return { built: false, reason: `built from other sources than ${SOURCES.join(' + ')} (run \`npm run setup:native\`)`, file };
  } catch {
    return { built: false, reason: 'no build stamp (run `npm run setup:native`)', file };
  }
  return { built: true, reason: file, file };
}

let status: TfOpsStatus | null = null;

/** Load the ops addon once (after tfjs-node, whose libtensorflow it registers with). */
export function loadTfOps(): TfOpsStatus {
  if (status) return status;
  if (process.env['SPARK_TF_NATIVE_OPS'] === '0') return (status = { loaded: false, reason: 'SPARK_TF_NATIVE_OPS=0', ops: [] });
  const built = tfOpsBuilt();
  if (!built.built) return (status = { loaded: false, reason: built.reason, ops: [] });
  const file = built.file;
  try {
    const mod = createRequire(import.meta.url)(file) as { ops: string[]; error: string; threads: number };
    if (mod.error) return (status = { loaded: false, reason: `registration failed: ${mod.error}`, ops: [] });
    return (status = { loaded: true, reason: `${file} (${mod.ops.length} ops, ${mod.threads} threads)`, ops: mod.ops });
  } catch (e) {
    return (status = { loaded: false, reason: `cannot load ${file}: ${String((e as Error).message ?? e).split('\n')[0]}`, ops: [] });
  }
}

type KInputs = Record<string, tf.TensorInfo | undefined>;
type Args = { inputs: KInputs; attrs?: unknown; backend: unknown };

function input(inputs: KInputs, name: string): tf.TensorInfo {
  const t = inputs[name];
  if (!t) throw new Error(`spark's TensorFlow op kernel: input ${name} missing`);
  return t;
}

/** One of the addon's ops on the named inputs (in this order), its outputs handed to tfjs. */
function runOp(c: Chain, op: string, ins: ReturnType<Chain['in']>[], attrs: Attr[], n: number): tf.Tensor[] {
  return c.op(op, ins, attrs, n).map((m) => c.out(m));
}

function optimizerKernel(kind: 'lamb' | 'adamw'): tf.KernelFunc {
  return (({ inputs, attrs, backend }: Args) =>
    withChain(backend, (c) => {
      const a = attrs as LambUpdateAttrs | AdamWUpdateAttrs;
      const b = c.b;
      const lists = ['param', 'grad', 'expAvg', 'expAvgSq'].flatMap((name) => Array.from({ length: a.n }, (_, i) => c.in(input(inputs, `${name}${i}`))));
      const clip = c.in(input(inputs, kind === 'lamb' ? 'clipDiv' : 'clipCoef'));
      const opAttrs: Attr[] = [{ name: 'N', type: b.TF_ATTR_INT, value: a.n }];
      if (kind === 'lamb') {
        const l = a as LambUpdateAttrs;
        opAttrs.push({ name: 'adapt', type: b.TF_ATTR_BOOL, value: !!l.adapt }, { name: 'trust_clip', type: b.TF_ATTR_BOOL, value: !!l.trustClip });
      }
      const ins = [...lists, clip, c.floats(nativeOptimizerScalars(kind, a)), c.in(input(inputs, 'apply'))];
      return runOp(c, kind === 'lamb' ? 'SparkTfLamb' : 'SparkTfAdamW', ins, opAttrs, 3 * a.n);
    })) as unknown as tf.KernelFunc;
}

function globalNormKernel({ inputs, attrs, backend }: Args): tf.Tensor {
  const n = (attrs as { n: number }).n;
  if (n === 0) return tf.scalar(0);
  return withChain(backend, (c) =>
    runOp(c, 'SparkTfGlobalNorm', Array.from({ length: n }, (_, i) => c.in(input(inputs, `grad${i}`))), [{ name: 'N', type: c.b.TF_ATTR_INT, value: n }], 1)[0]!);
}

/** A kernel running `op` on the named inputs; `epsilon` is passed on when the kernel has it. */
function opKernel(op: string, names: string[], n: number): tf.KernelFunc {
  return (({ inputs, attrs, backend }: Args) =>
    withChain(backend, (c) => {
      const eps = (attrs as { epsilon?: number } | undefined)?.epsilon;
      const opAttrs: Attr[] = eps === undefined ? [] : [{ name: 'epsilon', type: c.b.TF_ATTR_FLOAT, value: eps }];
      const out = runOp(c, op, names.map((k) => c.in(input(inputs, k))), opAttrs, n);
      return n === 1 ? out[0]! : out;
    })) as unknown as tf.KernelFunc;
}

const KERNELS: Array<[string, tf.KernelFunc]> = [
  ['SparkLambUpdate', optimizerKernel('lamb')],
  ['SparkAdamWUpdate', optimizerKernel('adamw')],
  ['SparkGlobalNorm', globalNormKernel as unknown as tf.KernelFunc],
  [GELU, opKernel('SparkTfGelu', ['x'], 1)],
  [GELU_GRAD, opKernel('SparkTfGeluGrad', ['dy', 'x'], 1)],
  [LAYER_NORM, opKernel('SparkTfLayerNorm', ['x', 'gamma', 'beta'], 3)],
  [LAYER_NORM_GRAD, opKernel('SparkTfLayerNormGrad', ['dy', 'x', 'gamma', 'mean', 'invStd'], 3)],
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
