/**
 * Fused normalisation and activation ops with their own closed-form gradients (issue 12). Each op is one
 * `tf.customGrad` node: its forward runs with the tape off, and it saves for the backward pass only what the
 * closed-form gradient needs (x plus per-channel / per-position mean and 1/σ; for GELU only x), instead of every
 * intermediate of a chain of small ops.
 *
 * Kernel dispatch (the contract with backends; kernel names in src/backend/fused-kernel-names.ts): each op first asks
 * `tf.getKernel(NAME, tf.getBackend())`; when the active backend registers a kernel under NAME the forward runs
 * `tf.engine().runKernel(NAME, inputs, attrs)` and the backward runs `NAME + 'Grad'` the same way (a backend that
 * registers NAME must register NAME + 'Grad' too); otherwise the portable composite below runs (tf ops, every
 * backend). A gamma that is a tf.Variable is read again in the backward pass rather than saved (a step does not
 * assign parameters between its forward and backward passes). Tensors are NHWC, C = last axis; "mask" is float32 0/1 broadcastable to x with a last axis of 1
 * ([N,H,W,1]) and is left out of `inputs` when there is no mask. Masks must be binary.
 *
 * | kernel                  | inputs                                   | attrs   | outputs                                   |
 * |-------------------------|------------------------------------------|---------|-------------------------------------------|
 * | SparkBatchNormTrain     | x [...,C], gamma [C], beta [C], runningMean [C], runningVar [C], mask? | epsilon, momentum | y (x's shape; 0 where mask = 0), mean [C], invStd [C] = 1/√(biased var + eps), newRunningMean [C], newRunningVar [C] (statistics over mask = 1 positions only) |
 * | SparkBatchNormTrainGrad | dy, x, gamma, mean, invStd, mask?        | —       | dx (0 where mask = 0), dgamma [C], dbeta [C] |
 * | SparkLayerNorm          | x [...,C], gamma [C], beta [C]           | epsilon | y, mean [...,1], invStd [...,1]           |
 * | SparkLayerNormGrad      | dy, x, gamma, mean, invStd               | —       | dx, dgamma, dbeta                          |
 * | SparkGelu               | x                                        | —       | y = x·Φ(x) (exact, erf)                    |
 * | SparkGeluGrad           | dy, x                                    | —       | dx                                         |
 * | SparkReluGrad           | dy, y (the ReLU's output)                | —       | dx = dy where y > 0, else 0                |
 * | SparkRelu6Grad          | dy, y (the ReLU6's output)               | —       | dx = dy where 0 < y < 6, else 0            |
 *
 * The running statistics are updated as PyTorch does: newRunningMean = runningMean·(1 − momentum) + mean·momentum,
 * newRunningVar = runningVar·(1 − momentum) + varUnbiased·momentum, varUnbiased = biased var · n/max(n−1, 1), n =
 * number of (visible) positions (TensorFlow's FusedBatchNormV3 with exponential_avg_factor = momentum computes the
 * same). The inputs runningMean / runningVar are not modified (tensors are immutable); `batchNormTrain` assigns the
 * new values to the variables and adds 1 to num_batches_tracked, all inside the op (no tape, no saved tensors).
 * Masked LayerNorm is LayerNorm then × mask (per position: the statistics do not involve the mask); the op applies
 * the mask around the kernel (× mask on y, dy·mask before the backward kernel). `maskMul` (× mask, no gradient to the mask) and eval-mode BatchNorm (a plain affine with the
 * running statistics) need no kernels.
 */
import * as tf from '@tensorflow/tfjs';
import { BN_TRAIN, BN_TRAIN_GRAD, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, RELU6_GRAD, RELU_GRAD } from '../backend/fused-kernel-names.js';

export { BN_TRAIN, BN_TRAIN_GRAD, FUSED_KERNELS, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, RELU6_GRAD, RELU_GRAD } from '../backend/fused-kernel-names.js';

type CustomGradFn = Parameters<typeof tf.customGrad>[0];
type Inputs = Record<string, tf.Tensor>;

/** Whether the active backend has its own kernel `name` (then the op dispatches to it). */
export function backendHasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

/** Whether ops use the backend's kernels when it has them ('auto') or always the portable composite ('portable', tests). */
let dispatch: 'auto' | 'portable' = 'auto';
export function setFusedDispatch(mode: 'auto' | 'portable'): 'auto' | 'portable' {
  const prev = dispatch;
  dispatch = mode;
  return prev;
}
function native(name: string): boolean {
  return dispatch === 'auto' && backendHasKernel(name);
}

function run(name: string, inputs: Inputs, attrs: Record<string, number> = {}): tf.Tensor[] {
  const out = tf.engine().runKernel(name, inputs as unknown as tf.NamedTensorMap, attrs) as tf.Tensor | tf.Tensor[];
  return Array.isArray(out) ? out : [out];
}

function maskInput(mask: tf.Tensor | null): Inputs {
  return mask ? { mask } : {};
}

/** All axes but the last (the per-channel reduction axes). */
function leadingAxes(x: tf.Tensor): number[] {
  return Array.from({ length: x.rank - 1 }, (_, i) => i);
}

// ------------------------------------------------------------------------------------------------ portable composites

/**
 * Portable BatchNorm training forward: statistics over every position (mask null) or over mask = 1 positions only
 * (μ = Σm·x/n, biased σ² = Σm·(x−μ)²/n), y = (x−μ)·(γ/√(σ²+eps)) + β, × mask. Same op order as the original
 * composite it replaces in ops.ts.
 */
export function bnTrainPortable(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  runningMean: tf.Tensor,
  runningVar: tf.Tensor,
  mask: tf.Tensor | null,
  eps: number,
  momentum: number,
): tf.Tensor[] {
  return tf.tidy(() => {
    const axes = leadingAxes(x);
    let mean: tf.Tensor;
    let variance: tf.Tensor;
    let n: tf.Tensor | number;
    let d: tf.Tensor;
    if (mask) {
      const cnt = tf.sum(mask);
      n = cnt;
      mean = tf.div(tf.sum(tf.mul(x, mask), axes), cnt);
      d = tf.sub(x, mean);
      variance = tf.div(tf.sum(tf.mul(tf.square(d), mask), axes), cnt);
    } else {
      n = x.size / x.shape[x.rank - 1]!;
      mean = tf.mean(x, axes);
      d = tf.sub(x, mean);
      variance = tf.mean(tf.square(d), axes);
    }
    const invStd = tf.rsqrt(tf.add(variance, eps));
    let y = tf.add(tf.mul(d, tf.mul(invStd, gamma)), beta);
    if (mask) y = tf.mul(y, mask);
    const corr = typeof n === 'number' ? n / Math.max(n - 1, 1) : tf.div(n, tf.maximum(tf.sub(n, 1), 1));
    const varUnbiased = tf.mul(variance, corr);
    const newMean = tf.add(tf.mul(runningMean, 1 - momentum), tf.mul(mean, momentum));
    const newVar = tf.add(tf.mul(runningVar, 1 - momentum), tf.mul(varUnbiased, momentum));
    return [y, mean, invStd, newMean, newVar];
  });
}

/** Portable BatchNorm training backward: dx = m·γ·invStd/n·(n·g − Σg − x̂·Σg·x̂), g = dy·m; dγ = Σg·x̂, dβ = Σg. */
export function bnTrainGradPortable(dy: tf.Tensor, x: tf.Tensor, gamma: tf.Tensor, mean: tf.Tensor, invStd: tf.Tensor, mask: tf.Tensor | null): tf.Tensor[] {
  return tf.tidy(() => {
    const axes = leadingAxes(x);
    const g = mask ? tf.mul(dy, mask) : dy;
    const n: tf.Tensor | number = mask ? tf.sum(mask) : x.size / x.shape[x.rank - 1]!;
    const xhat = tf.mul(tf.sub(x, mean), invStd);
    const dbeta = tf.sum(g, axes);
    const dgamma = tf.sum(tf.mul(g, xhat), axes);
    const k = tf.div(tf.mul(gamma, invStd), n);
    let dx = tf.mul(tf.sub(tf.sub(tf.mul(g, n), dbeta), tf.mul(xhat, dgamma)), k);
    if (mask) dx = tf.mul(dx, mask);
    return [dx, dgamma, dbeta];
  });
}

/** Portable LayerNorm over the last axis (biased variance): y = (x−μ)·invStd·γ + β (the original op order). */
export function layerNormPortable(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor[] {
  return tf.tidy(() => {
    const mean = tf.mean(x, -1, true);
    const d = tf.sub(x, mean);
    const variance = tf.mean(tf.square(d), -1, true);
    const invStd = tf.rsqrt(tf.add(variance, eps));
    const y = tf.add(tf.mul(tf.mul(d, invStd), gamma), beta);
    return [y, mean, invStd];
  });
}

/** Portable LayerNorm backward: dx = invStd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ; dγ = Σdy·x̂, dβ = Σdy. */
export function layerNormGradPortable(dy: tf.Tensor, x: tf.Tensor, gamma: tf.Tensor, mean: tf.Tensor, invStd: tf.Tensor): tf.Tensor[] {
  return tf.tidy(() => {
    const axes = leadingAxes(x);
    const xhat = tf.mul(tf.sub(x, mean), invStd);
    const g = tf.mul(dy, gamma);
    const a = tf.mean(g, -1, true);
    const b = tf.mean(tf.mul(g, xhat), -1, true);
    const dx = tf.mul(tf.sub(tf.sub(g, a), tf.mul(xhat, b)), invStd);
    return [dx, tf.sum(tf.mul(dy, xhat), axes), tf.sum(dy, axes)];
  });
}

/** Portable exact GELU 0.5·x·(1 + erf(x/√2)) (the original op order). */
export function geluPortable(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)));
}

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** d GELU: dy·(Φ(x) + x·φ(x)), Φ(x) = 0.5·(1 + erf(x/√2)), φ(x) = exp(−x²/2)/√(2π). */
export function geluGradPortable(dy: tf.Tensor, x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const cdf = tf.mul(tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = tf.mul(tf.exp(tf.mul(tf.square(x), -0.5)), INV_SQRT_2PI);
    return tf.mul(dy, tf.add(cdf, tf.mul(x, pdf)));
  });
}

// ---------------------------------------------------------------------------------------------------------- fused ops

/** The running statistics of a BatchNorm (tf.Variables, updated in place by training-mode `batchNormTrain`). */
export interface RunningStats {
  mean: tf.Variable;
  variance: tf.Variable;
  /** int32 scalar num_batches_tracked. */
  count: tf.Variable;
  momentum: number;
}

/** An activation fused into the op before it (its output is the only tensor kept; the pre-activation is freed). */
export type FusedActivation = 'relu' | 'relu6' | null;

function applyActivation(y: tf.Tensor, act: FusedActivation): tf.Tensor {
  return act === 'relu' ? tf.relu(y) : act === 'relu6' ? tf.relu6(y) : y;
}

/**
 * dy through the activation, from its output a: relu' = sign(a); relu6' = 1 on 0 < a < 6 (PyTorch's hardtanh).
 * One kernel (SparkReluGrad / SparkRelu6Grad) where the backend has it, else the portable sign-and-multiply chain.
 */
export function activationGrad(dy: tf.Tensor, a: tf.Tensor, act: FusedActivation): tf.Tensor {
  if (act === 'relu') return native(RELU_GRAD) ? run(RELU_GRAD, { dy, y: a })[0]! : tf.tidy(() => tf.mul(dy, tf.sign(a)));
  if (act === 'relu6') {
    return native(RELU6_GRAD) ? run(RELU6_GRAD, { dy, y: a })[0]! : tf.tidy(() => tf.mul(tf.mul(dy, tf.sign(a)), tf.sign(tf.sub(6, a))));
  }
  return dy;
}

/**
 * Training-mode (masked) BatchNorm as one op: normalises with the batch statistics (over mask = 1 positions when a
 * mask is given; y = 0 elsewhere) and updates `running` (mean, variance, count) as PyTorch does. Gradients flow to
 * x, gamma and beta (none to the mask or the running statistics). With `act`, the op is act(BN(x)): the normalised
 * tensor lives only inside the op and the backward starts from dy·act'(output).
 */
export function batchNormTrain<T extends tf.Tensor>(
  x: T,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  mask: tf.Tensor | null,
  eps: number,
  running: RunningStats,
  act: FusedActivation = null,
): T {
  const f = tf.customGrad(((xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor, save: tf.GradSaveFunc) => {
    const rm = running.mean;
    const rv = running.variance;
    const out = native(BN_TRAIN)
      ? run(BN_TRAIN, { x: xi, gamma: gi, beta: bi, runningMean: rm, runningVar: rv, ...maskInput(mask) }, { epsilon: eps, momentum: running.momentum })
      : bnTrainPortable(xi, gi, bi, rm, rv, mask, eps, running.momentum);
    const [y, mean, invStd, newMean, newVar] = out as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    // the forward runs with the tape off: the update records nothing and saves nothing
    running.mean.assign(newMean);
    running.variance.assign(newVar);
    running.count.assign(tf.add(running.count, tf.scalar(1, 'int32')));
    const keepGamma = !(gamma instanceof tf.Variable);
    const a = applyActivation(y, act);
    save([xi, mean, invStd, ...(mask ? [mask] : []), ...(act ? [a] : []), ...(keepGamma ? [gi] : [])]);
    return {
      value: a,
      gradFunc: (dyOut: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ms, is] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        const mk = mask ? saved[3]! : undefined;
        const dy = act ? activationGrad(dyOut, saved[mask ? 4 : 3]!, act) : dyOut;
        const gs = keepGamma ? saved[saved.length - 1]! : gamma;
        return native(BN_TRAIN_GRAD)
          ? run(BN_TRAIN_GRAD, { dy, x: xs, gamma: gs, mean: ms, invStd: is, ...maskInput(mk ?? null) })
          : bnTrainGradPortable(dy, xs, gs, ms, is, mk ?? null);
      },
    };
  }) as unknown as CustomGradFn);
  return f(x, gamma, beta) as T;
}

/** LayerNorm over the last axis, × mask when given (per position), as one op (gradients to x, gamma, beta). */
export function layerNormFused<T extends tf.Tensor>(x: T, gamma: tf.Tensor, beta: tf.Tensor, eps: number, mask: tf.Tensor | null = null): T {
  const f = tf.customGrad(((xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor, save: tf.GradSaveFunc) => {
    const out = native(LAYER_NORM) ? run(LAYER_NORM, { x: xi, gamma: gi, beta: bi }, { epsilon: eps }) : layerNormPortable(xi, gi, bi, eps);
    const [y, mean, invStd] = out as [tf.Tensor, tf.Tensor, tf.Tensor];
    const keepGamma = !(gamma instanceof tf.Variable);
    save([xi, mean, invStd, ...(mask ? [mask] : []), ...(keepGamma ? [gi] : [])]);
    return {
      // the mask is applied here, around the kernel (the LayerNorm kernels know no mask)
      value: mask ? tf.mul(y, mask) : y,
      gradFunc: (dyOut: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ms, is] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        const dy = mask ? tf.mul(dyOut, saved[3]!) : dyOut;
        const gs = keepGamma ? saved[saved.length - 1]! : gamma;
        return native(LAYER_NORM_GRAD)
          ? run(LAYER_NORM_GRAD, { dy, x: xs, gamma: gs, mean: ms, invStd: is })
          : layerNormGradPortable(dy, xs, gs, ms, is);
      },
    };
  }) as unknown as CustomGradFn);
  return f(x, gamma, beta) as T;
}

/** Exact (erf) GELU as one op; saves only x. */
export function geluFused<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
    save([xi]);
    return {
      value: native(GELU) ? run(GELU, { x: xi })[0]! : geluPortable(xi),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const xs = saved[0]!;
        return [native(GELU_GRAD) ? run(GELU_GRAD, { dy, x: xs })[0]! : geluGradPortable(dy, xs)];
      },
    };
  }) as unknown as CustomGradFn);
  return f(x) as T;
}

/** x × mask (mask broadcast over channels) with no gradient to the mask: saves only the mask. */
export function maskMul<T extends tf.Tensor>(x: T, mask: tf.Tensor): T {
  const f = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
    save([mask]);
    return {
      value: tf.mul(xi, mask),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.mul(dy, saved[0]!)],
    };
  }) as unknown as CustomGradFn);
  return f(x) as T;
}

/** ReLU as one op whose backward is dy·sign(y) (y = relu(x) ≥ 0, so sign(y) is the 0/1 derivative); saves only y. */
export function reluFused<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
    const y = tf.relu(xi);
    save([y]);
    return { value: y, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [activationGrad(dy, saved[0]!, 'relu')] };
  }) as unknown as CustomGradFn);
  return f(x) as T;
}

/**
 * ReLU6 as one op; saves only y. Its derivative is 1 where 0 < y < 6, i.e. 0 < x < 6 (PyTorch's hardtanh
 * backward; tfjs's own Relu6 gradient also passes x = 6 exactly): dy·sign(y)·sign(6 − y).
 */
export function relu6Fused<T extends tf.Tensor>(x: T): T {
  const f = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
    const y = tf.relu6(xi);
    save([y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [activationGrad(dy, saved[0]!, 'relu6')],
    };
  }) as unknown as CustomGradFn);
  return f(x) as T;
}

/**
 * Dense layer over the last axis, x[..., I] · w[I, O] + b[O], as one op. Saves only x (and w when it is not a
 * tf.Variable); backward: dx = dy·wᵀ, dw = xᵀ·dy, db = Σdy.
 */
export function linearFused(x: tf.Tensor, w: tf.Tensor2D, b: tf.Tensor | null): tf.Tensor {
  const [inDim, outDim] = w.shape;
  const outShape = [...x.shape.slice(0, -1), outDim];
  const keepW = !(w instanceof tf.Variable);
  const body = (xi: tf.Tensor, wi: tf.Tensor2D, bi: tf.Tensor | null, save: tf.GradSaveFunc) => {
    let y: tf.Tensor = tf.matMul(tf.reshape(xi, [-1, inDim]) as tf.Tensor2D, wi);
    if (bi) y = tf.add(y, bi);
    save(keepW ? [xi, wi] : [xi]);
    return {
      value: tf.reshape(y, outShape),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const ws = (keepW ? saved[1]! : w) as tf.Tensor2D;
        const dy2 = tf.reshape(dy, [-1, outDim]) as tf.Tensor2D;
        const dx = tf.reshape(tf.matMul(dy2, ws, false, true), saved[0]!.shape);
        const dw = tf.matMul(tf.reshape(saved[0]!, [-1, inDim]) as tf.Tensor2D, dy2, true, false);
        return bi ? [dx, dw, tf.sum(dy2, 0)] : [dx, dw];
      },
    };
  };
  if (b) {
    const f = tf.customGrad(((xi: tf.Tensor, wi: tf.Tensor2D, bi: tf.Tensor, save: tf.GradSaveFunc) => body(xi, wi, bi, save)) as unknown as CustomGradFn);
    return f(x, w, b);
  }
  const f = tf.customGrad(((xi: tf.Tensor, wi: tf.Tensor2D, save: tf.GradSaveFunc) => body(xi, wi, null, save)) as unknown as CustomGradFn);
  return f(x, w);
}

/**
 * x + b with b [C] broadcast over the last axis, as one op that saves nothing: dx = dy (passed through), db = Σdy
 * over the leading axes.
 */
export function biasAdd<T extends tf.Tensor>(x: T, b: tf.Tensor): T {
  const f = tf.customGrad(((xi: tf.Tensor, bi: tf.Tensor) => ({
    value: tf.add(xi, bi),
    gradFunc: (dy: tf.Tensor) => [dy, tf.sum(dy, leadingAxes(dy))],
  })) as unknown as CustomGradFn);
  return f(x, b) as T;
}

/**
 * a + b for tensors of the same shape (residual connections) as one op that saves nothing (tfjs's Add keeps both
 * inputs alive until its backward only to know their shapes): da = dy, db = a copy of the reference to dy.
 */
export function addSame<T extends tf.Tensor>(a: T, b: tf.Tensor): T {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new Error(`addSame: shapes differ: ${JSON.stringify(a.shape)} vs ${JSON.stringify(b.shape)}`);
  }
  const f = tf.customGrad(((ai: tf.Tensor, bi: tf.Tensor) => ({
    value: tf.add(ai, bi),
    // two gradient entries must not be one tensor object (the engine disposes an accumulated gradient it replaces)
    gradFunc: (dy: tf.Tensor) => [dy, dy.clone()],
  })) as unknown as CustomGradFn);
  return f(a, b) as T;
}

/**
 * DropPath's per-sample scaling, (x / keep) · bits with bits [B,1,…,1] of 0/1, as one op that saves only `bits`
 * (tfjs's Div and Multiply would each keep a full-size input alive until the backward). The same arithmetic in the
 * same order as the two-op version, forward (x / keep, then × bits) and backward (dy · bits, then / keep).
 */
export function dropPathScale<T extends tf.Tensor>(x: T, keep: number, bits: tf.Tensor): T {
  const f = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
    save([bits]);
    return {
      value: tf.mul(tf.div(xi, keep), bits),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.div(tf.mul(dy, saved[0]!), keep)],
    };
  }) as unknown as CustomGradFn);
  return f(x) as T;
}

/**
 * SparK's densify fill, f + (1 − mask)·token (f already zero at masked positions; token [1,1,1,C] broadcast), as
 * one op that saves only 1 − mask ([B,H,W,1]): df = dy, dtoken = Σ over B,H,W of dy·(1 − mask). Same arithmetic
 * and reduction as the Add / Multiply / Sum chain it replaces (which kept f and the full-size token term alive).
 */
export function maskTokenFill<T extends tf.Tensor>(f: T, mask: tf.Tensor, token: tf.Tensor): T {
  const g = tf.customGrad(((fi: tf.Tensor, ti: tf.Tensor, save: tf.GradSaveFunc) => {
    const inv = tf.sub(1, mask);
    save([inv]);
    return {
      value: tf.add(fi, tf.mul(inv, ti)),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
        dy.clone(),
        tf.reshape(tf.sum(tf.mul(dy, saved[0]!), leadingAxes(dy)), ti.shape),
      ],
    };
  }) as unknown as CustomGradFn);
  return g(f, token) as T;
}
