/**
 * The fused kernels of src/models/fused.ts (signatures in its header, names in ./fused-kernel-names.ts) for the
 * native 'tensorflow' backend (tfjs-node on libtensorflow). Each kernel is a short chain of TensorFlow eager ops executed through the
 * tfjs-node binding (`binding.executeOp` with TensorFlow tensor handles), so the whole chain is one tfjs kernel
 * call: intermediates never become tfjs tensors, and only the kernel's outputs are handed to the engine.
 *
 *  - unmasked training BatchNorm: TensorFlow's FusedBatchNormV3 / FusedBatchNormGradV3 (one op each way);
 *  - masked training BatchNorm: spark's own op SparkTfMaskedBatchNorm(Grad) when the ops addon is built
 *    (tf-native-ops.ts; it skips masked positions); else gather the visible rows (Where + GatherNd),
 *    FusedBatchNormV3 / its gradient on them and scatter back (ScatterNd), the way the reference runs its sparse
 *    BatchNorm (SPARK_MASKED_BN=gather forces this); or, with SPARK_MASKED_BN=composite, the visible-position
 *    statistics as elementwise + reduction ops (the portable formula);
 *  - LayerNorm and exact GELU: elementwise + reduction chains (TensorFlow 2.21 has no Gelu or LayerNorm op);
 *  - the ReLU / ReLU6 backward from the activation's output: TensorFlow's ReluGrad / Relu6Grad (one op each).
 *
 * CPU only: on a GPU TensorFlow's FusedBatchNormV3 keeps 1/σ (cuDNN) rather than σ² in its reserve space, so these
 * kernels are not registered when tfjs-node-gpu uses a GPU (the portable composites run there).
 */
import * as tf from '@tensorflow/tfjs';
import { loadTfOps, registerTensorflowNativeOps, unregisterTensorflowNativeOps } from './tf-native-ops.js';
import { withChain, type Attr, type Chain, type Meta, type NodeBackend } from './tf-binding.js';
import { BN_TRAIN, BN_TRAIN_GRAD, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, RELU6_GRAD, RELU_GRAD } from './fused-kernel-names.js';

const allAxes = (rank: number): number[] => Array.from({ length: rank }, (_, i) => i);
const leading = (rank: number): number[] => allAxes(rank - 1);

/** Attributes of FusedBatchNormV3 (forward) / FusedBatchNormGradV3 (grad), training mode, NHWC. */
function fbnAttrs(c: Chain, eps: number, momentum: number | null): Attr[] {
  const b = c.b;
  return [
    c.T,
    { name: 'U', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT },
    { name: 'epsilon', type: b.TF_ATTR_FLOAT, value: eps },
    ...(momentum == null ? [] : [{ name: 'exponential_avg_factor', type: b.TF_ATTR_FLOAT, value: momentum }]),
    { name: 'data_format', type: b.TF_ATTR_STRING, value: 'NHWC' },
    { name: 'is_training', type: b.TF_ATTR_BOOL, value: true },
  ];
}

/** x as the 4-D NHWC tensor FusedBatchNorm wants ([N,C] → [N,1,1,C]). */
function as4d(c: Chain, x: Meta): Meta {
  if (x.shape.length === 4) return x;
  const C = x.shape[x.shape.length - 1]!;
  return c.op('Reshape', [x, c.ints([-1, 1, 1, C])], [c.T, { name: 'Tshape', type: c.b.TF_ATTR_TYPE, value: c.b.TF_INT32 }])[0]!;
}
function reshapeTo(c: Chain, x: Meta, shape: number[]): Meta {
  if (x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i])) return x;
  return c.op('Reshape', [x, c.ints(shape)], [c.T, { name: 'Tshape', type: c.b.TF_ATTR_TYPE, value: c.b.TF_INT32 }])[0]!;
}

/** n/max(n−1, 1) as a tensor from the scalar count n. */
function besselOf(c: Chain, n: Meta): Meta {
  return c.op1('RealDiv', n, c.op1('Maximum', c.op1('Sub', n, c.scalar(1)), c.scalar(1)));
}

type KInputs = Record<string, tf.TensorInfo | undefined>;

function bnTrainKernel({ inputs, attrs, backend }: { inputs: KInputs; attrs?: unknown; backend: unknown }): tf.Tensor[] {
  const { epsilon: eps, momentum } = attrs as { epsilon: number; momentum: number };
  return withChain(backend, (c) => {
    const x = c.in(inputs['x']!);
    const gamma = c.in(inputs['gamma']!);
    const beta = c.in(inputs['beta']!);
    const rm = c.in(inputs['runningMean']!);
    const rv = c.in(inputs['runningVar']!);
    const axes = leading(x.shape.length);
    if (!inputs['mask']) {
      // outputs: y, running mean and variance updated with factor `momentum` (unbiased batch variance), batch mean, biased batch variance
      const [y, newMean, newVar, mean, varB] = c.op('FusedBatchNormV3', [as4d(c, x), gamma, beta, rm, rv], fbnAttrs(c, eps, momentum), 6) as Meta[];
      const invStd = c.op1('Rsqrt', c.op1('AddV2', varB!, c.scalar(eps)));
      return [c.out(reshapeTo(c, y!, x.shape)), c.out(mean!), c.out(invStd), c.out(newMean!), c.out(newVar!)];
    }
    const mask = c.in(inputs['mask']!);
    if (nativeMaskedBn(x, mask)) {
      const b = c.b;
      const attrs: Attr[] = [{ name: 'epsilon', type: b.TF_ATTR_FLOAT, value: eps }, { name: 'momentum', type: b.TF_ATTR_FLOAT, value: momentum }];
      return c.op('SparkTfMaskedBatchNorm', [x, gamma, beta, rm, rv, mask], attrs, 5).map((m) => c.out(m));
    }
    if (gatherMode()) return bnTrainGather(c, x, gamma, beta, rm, rv, mask, eps, momentum);
    const cnt = c.reduce('Sum', mask, allAxes(mask.shape.length), false);
    const mean = c.op1('RealDiv', c.reduce('Sum', c.op1('Mul', x, mask), axes, false), cnt);
    const d = c.op1('Sub', x, mean);
    const varB = c.op1('RealDiv', c.reduce('Sum', c.op1('Mul', c.op1('Square', d), mask), axes, false), cnt);
    const invStd = c.op1('Rsqrt', c.op1('AddV2', varB, c.scalar(eps)));
    const y = c.op1('Mul', c.op1('AddV2', c.op1('Mul', d, c.op1('Mul', invStd, gamma)), beta), mask);
    const varU = c.op1('Mul', varB, besselOf(c, cnt));
    const keep = c.scalar(1 - momentum);
    const mom = c.scalar(momentum);
    const newMean = c.op1('AddV2', c.op1('Mul', rm, keep), c.op1('Mul', mean, mom));
    const newVar = c.op1('AddV2', c.op1('Mul', rv, keep), c.op1('Mul', varU, mom));
    return [c.out(y), c.out(mean), c.out(invStd), c.out(newMean), c.out(newVar)];
  });
}

/** int32 indices [n, rank−1] of the visible positions of a [..., 1] mask (Where over the mask as bool). */
function visibleIndices(c: Chain, mask: Meta): Meta {
  const b = c.b;
  const m3 = reshapeTo(c, mask, mask.shape.slice(0, -1));
  const cond = c.op('Cast', [m3], [{ name: 'SrcT', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT }, { name: 'DstT', type: b.TF_ATTR_TYPE, value: b.TF_BOOL }, { name: 'Truncate', type: b.TF_ATTR_BOOL, value: false }])[0]!;
  const idx64 = c.op('Where', [cond], [{ name: 'T', type: b.TF_ATTR_TYPE, value: b.TF_BOOL }])[0]!; // int64 [n, rank−1]
  const castTo32 = [{ name: 'SrcT', type: b.TF_ATTR_TYPE, value: idx64.dtype }, { name: 'DstT', type: b.TF_ATTR_TYPE, value: b.TF_INT32 }, { name: 'Truncate', type: b.TF_ATTR_BOOL, value: false }];
  return c.op('Cast', [idx64], castTo32)[0]!;
}
function gatherNd(c: Chain, x: Meta, idx: Meta): Meta {
  const b = c.b;
  return c.op('GatherNd', [x, idx], [{ name: 'Tparams', type: b.TF_ATTR_TYPE, value: b.TF_FLOAT }, { name: 'Tindices', type: b.TF_ATTR_TYPE, value: idx.dtype }])[0]!;
}
function scatterNd(c: Chain, idx: Meta, v: Meta, shape: number[]): Meta {
  const b = c.b;
  return c.op('ScatterNd', [idx, v, c.ints(shape)], [c.T, { name: 'Tindices', type: b.TF_ATTR_TYPE, value: idx.dtype }])[0]!;
}
/** Masked BN by gathering the visible positions: Where(mask) → GatherNd → FusedBatchNormV3 → ScatterNd. */
function bnTrainGather(c: Chain, x: Meta, gamma: Meta, beta: Meta, rm: Meta, rv: Meta, mask: Meta, eps: number, momentum: number): tf.Tensor[] {
  const idx = visibleIndices(c, mask);
  const rows = gatherNd(c, x, idx); // [n, C]
  const [yv, newMean, newVar, mean, varB] = c.op('FusedBatchNormV3', [as4d(c, rows), gamma, beta, rm, rv], fbnAttrs(c, eps, momentum), 6) as Meta[];
  const C = x.shape[x.shape.length - 1]!;
  const y = scatterNd(c, idx, reshapeTo(c, yv!, [rows.shape[0]!, C]), x.shape);
  const invStd = c.op1('Rsqrt', c.op1('AddV2', varB!, c.scalar(eps)));
  return [c.out(y), c.out(mean!), c.out(invStd), c.out(newMean!), c.out(newVar!)];
}

/**
 * Masked BatchNorm by gathering the visible rows (default) or as the elementwise chain (SPARK_MASKED_BN=composite).
 * Gathering measured faster at 224-px ResNet-50 shapes with 40 % visible (bench/bn-micro.ts, min of 10, forward +
 * backward, quiet machine: [4,112,112,64] 39 vs 63 ms, [4,56,56,256] 29 vs 66 ms, [4,28,28,512] 14 vs 25 ms,
 * [4,7,7,2048] 4.7 vs 7.6 ms; unmasked FusedBatchNormV3 on the same shapes: 19–34 ms, 4–14 ms).
 */
function gatherMode(): boolean {
  return process.env['SPARK_MASKED_BN'] !== 'composite';
}

/**
 * Whether masked BatchNorm runs as spark's own TensorFlow op (native/tf/spark_tf_ops.cc: one pass per statistic over
 * the visible positions only, no gather / scatter copies): when the ops addon is loaded, the mask has one value per
 * position of x, and SPARK_MASKED_BN does not ask for 'gather' or 'composite'.
 */
function nativeMaskedBn(x: Meta, mask: Meta): boolean {
  const mode = process.env['SPARK_MASKED_BN'];
  if (mode === 'gather' || mode === 'composite') return false;
  if (!loadTfOps().ops.includes('SparkTfMaskedBatchNorm')) return false;
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  return size(mask.shape) * x.shape[x.shape.length - 1]! === size(x.shape);
}

function bnTrainGradKernel({ inputs, backend }: { inputs: KInputs; backend: unknown }): tf.Tensor[] {
  return withChain(backend, (c) => {
    const dy = c.in(inputs['dy']!);
    const x = c.in(inputs['x']!);
    const gamma = c.in(inputs['gamma']!);
    const mean = c.in(inputs['mean']!);
    const invStd = c.in(inputs['invStd']!);
    const axes = leading(x.shape.length);
    const maskT = inputs['mask'];
    if (maskT && nativeMaskedBn(x, c.in(maskT))) {
      return c.op('SparkTfMaskedBatchNormGrad', [dy, x, gamma, mean, invStd, c.in(maskT)], [], 3).map((m) => c.out(m));
    }
    if (!maskT || gatherMode()) {
      // FusedBatchNormGradV3 (CPU) recomputes 1/√(σ² + eps) from σ²: hand it σ² + eps = 1/invStd² (with eps 0)
      const varPlusEps = c.op1('Reciprocal', c.op1('Square', invStd));
      if (!maskT) {
        const [dx, dg, db] = c.op('FusedBatchNormGradV3', [as4d(c, dy), as4d(c, x), gamma, mean, varPlusEps, c.emptyFloat()], fbnAttrs(c, 0, null), 5) as Meta[];
        return [c.out(reshapeTo(c, dx!, x.shape)), c.out(dg!), c.out(db!)];
      }
      const idx = visibleIndices(c, c.in(maskT));
      const C = x.shape[x.shape.length - 1]!;
      const [dxv, dg, db] = c.op('FusedBatchNormGradV3', [as4d(c, gatherNd(c, dy, idx)), as4d(c, gatherNd(c, x, idx)), gamma, mean, varPlusEps, c.emptyFloat()], fbnAttrs(c, 0, null), 5) as Meta[];
      const n = idx.shape[0]!;
      return [c.out(scatterNd(c, idx, reshapeTo(c, dxv!, [n, C]), x.shape)), c.out(dg!), c.out(db!)];
    }
    const mask = c.in(maskT);
    const g = c.op1('Mul', dy, mask);
    const n = c.reduce('Sum', mask, allAxes(mask.shape.length), false);
    const xhat = c.op1('Mul', c.op1('Sub', x, mean), invStd);
    const dbeta = c.reduce('Sum', g, axes, false);
    const dgamma = c.reduce('Sum', c.op1('Mul', g, xhat), axes, false);
    const k = c.op1('RealDiv', c.op1('Mul', gamma, invStd), n);
    const inner = c.op1('Sub', c.op1('Sub', c.op1('Mul', g, n), dbeta), c.op1('Mul', xhat, dgamma));
    const dx = c.op1('Mul', c.op1('Mul', inner, k), mask);
    return [c.out(dx), c.out(dgamma), c.out(dbeta)];
  });
}

function layerNormKernel({ inputs, attrs, backend }: { inputs: KInputs; attrs?: unknown; backend: unknown }): tf.Tensor[] {
  const eps = (attrs as { epsilon: number }).epsilon;
  return withChain(backend, (c) => {
    const x = c.in(inputs['x']!);
    const last = [x.shape.length - 1];
    const mean = c.reduce('Mean', x, last, true);
    const d = c.op1('Sub', x, mean);
    const variance = c.reduce('Mean', c.op1('Square', d), last, true);
    const invStd = c.op1('Rsqrt', c.op1('AddV2', variance, c.scalar(eps)));
    const y = c.op1('AddV2', c.op1('Mul', c.op1('Mul', d, invStd), c.in(inputs['gamma']!)), c.in(inputs['beta']!));
    return [c.out(y), c.out(mean), c.out(invStd)];
  });
}

function layerNormGradKernel({ inputs, backend }: { inputs: KInputs; backend: unknown }): tf.Tensor[] {
  return withChain(backend, (c) => {
    const dy = c.in(inputs['dy']!);
    const x = c.in(inputs['x']!);
    const invStd = c.in(inputs['invStd']!);
    const last = [x.shape.length - 1];
    const axes = leading(x.shape.length);
    const xhat = c.op1('Mul', c.op1('Sub', x, c.in(inputs['mean']!)), invStd);
    const g = c.op1('Mul', dy, c.in(inputs['gamma']!));
    const a = c.reduce('Mean', g, last, true);
    const bb = c.reduce('Mean', c.op1('Mul', g, xhat), last, true);
    const dx = c.op1('Mul', c.op1('Sub', c.op1('Sub', g, a), c.op1('Mul', xhat, bb)), invStd);
    return [c.out(dx), c.out(c.reduce('Sum', c.op1('Mul', dy, xhat), axes, false)), c.out(c.reduce('Sum', dy, axes, false))];
  });
}

function geluKernel({ inputs, backend }: { inputs: KInputs; backend: unknown }): tf.Tensor {
  return withChain(backend, (c) => {
    const x = c.in(inputs['x']!);
    return c.out(c.op1('Mul', c.op1('Mul', x, c.scalar(0.5)), c.op1('AddV2', c.op1('Erf', c.op1('Mul', x, c.scalar(Math.SQRT1_2))), c.scalar(1))));
  });
}

function geluGradKernel({ inputs, backend }: { inputs: KInputs; backend: unknown }): tf.Tensor {
  return withChain(backend, (c) => {
    const x = c.in(inputs['x']!);
    const cdf = c.op1('Mul', c.op1('AddV2', c.op1('Erf', c.op1('Mul', x, c.scalar(Math.SQRT1_2))), c.scalar(1)), c.scalar(0.5));
    const pdf = c.op1('Mul', c.op1('Exp', c.op1('Mul', c.op1('Square', x), c.scalar(-0.5))), c.scalar(1 / Math.sqrt(2 * Math.PI)));
    return c.out(c.op1('Mul', c.in(inputs['dy']!), c.op1('AddV2', cdf, c.op1('Mul', x, pdf))));
  });
}

/** TensorFlow's ReluGrad / Relu6Grad (dy where 0 < y (< 6)); they accept the activation's output as `features`. */
function activationGradKernel(op: 'ReluGrad' | 'Relu6Grad') {
  return ({ inputs, backend }: { inputs: KInputs; backend: unknown }): tf.Tensor =>
    withChain(backend, (c) => c.out(c.op1(op, c.in(inputs['dy']!), c.in(inputs['y']!))));
}

const KERNELS: Array<[string, tf.KernelFunc]> = [
  [BN_TRAIN, bnTrainKernel as unknown as tf.KernelFunc],
  [BN_TRAIN_GRAD, bnTrainGradKernel as unknown as tf.KernelFunc],
  [LAYER_NORM, layerNormKernel as unknown as tf.KernelFunc],
  [LAYER_NORM_GRAD, layerNormGradKernel as unknown as tf.KernelFunc],
  [GELU, geluKernel as unknown as tf.KernelFunc],
  [GELU_GRAD, geluGradKernel as unknown as tf.KernelFunc],
  [RELU_GRAD, activationGradKernel('ReluGrad') as unknown as tf.KernelFunc],
  [RELU6_GRAD, activationGradKernel('Relu6Grad') as unknown as tf.KernelFunc],
];

/**
 * Register the fused kernels for the 'tensorflow' backend (idempotent). Returns false, registering nothing, when
 * that backend is not loaded or runs on a GPU.
 */
export function registerTensorflowFusedKernels(): boolean {
  if (tf.findBackend('tensorflow') == null) return false;
  const be = tf.findBackend('tensorflow') as unknown as NodeBackend;
  if (typeof be.binding?.executeOp !== 'function' || be.binding.isUsingGpuDevice()) return false;
  for (const [kernelName, kernelFunc] of KERNELS) {
    if (!tf.getKernel(kernelName, 'tensorflow')) tf.registerKernel({ kernelName, backendName: 'tensorflow', kernelFunc });
  }
  // spark's own TensorFlow ops when built: the optimizer kernels, and GELU in one pass instead of the chains above
  registerTensorflowNativeOps();
  return true;
}

/** Remove them again (tests compare against the portable composites). */
export function unregisterTensorflowFusedKernels(): void {
  unregisterTensorflowNativeOps();
  for (const [kernelName] of KERNELS) if (tf.getKernel(kernelName, 'tensorflow')) tf.unregisterKernel(kernelName, 'tensorflow');
}
