/**
 * Sparse (masked) operations of SparK in NHWC (spec §1.4, §2.1–2.3, §10). There is no true sparse compute: every
 * op is the dense op followed by multiplication with the mask upsampled to the output resolution, and the norms take
 * their statistics over visible positions only. A `mask` argument of `null` gives the ordinary dense op.
 *
 * Padding is PyTorch's symmetric explicit padding (spec §10.1): stride-1 convolutions with an odd kernel and
 * p = (k−1)/2 use TF 'same' (identical), everything else pads with `tf.pad` and then runs 'valid' (this works on
 * every backend; tfjs-node rejects explicit padding for pools).
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../util/rng.js';
import { isSparkKernel } from '../backend/wasm-kernels.js';
import { batchNormTrain, biasAdd, dropPathScale, type FusedActivation, geluFused, layerNormFused, linearFused, maskMul, relu6Fused, reluFused } from './fused.js';

type CustomGradFn = Parameters<typeof tf.customGrad>[0];

export const BN_EPS = 1e-5;
export const BN_MOMENTUM = 0.1;
export const LN_EPS = 1e-6;

/** Nearest-neighbour upsampling of a [B,f,f,1] mask by an integer factor r (spec §10.6). */
export function upsampleMask(mask: tf.Tensor4D, r: number): tf.Tensor4D {
  if (!Number.isInteger(r) || r < 1) throw new Error(`upsampleMask: factor must be a positive integer, got ${r}`);
  if (r === 1) return mask;
  const [b, h, w, c] = mask.shape;
  if (c !== 1) throw new Error(`upsampleMask: mask must be [B,f,f,1], got ${JSON.stringify(mask.shape)}`);
  return tf.tidy(() =>
    mask
      .reshape([b, h, 1, w, 1, 1])
      .tile([1, 1, r, 1, r, 1])
      .reshape([b, h * r, w * r, 1]) as tf.Tensor4D,
  );
}

/**
 * The mask of one forward pass at every resolution it is needed, computed once per resolution ("masks are
 * values": the reference keeps it in a module-level global). The base mask is [B, f, f, 1] float32, 1 = visible.
 * The resolutions f·2^k up to f·`maxFactor` (every one a SparK network uses) are made in the constructor, in the
 * caller's tf.tidy scope, so that the models may run each block in a tidy of its own (which frees the block's
 * intermediates as soon as the block is done); any other resolution is made on first use in the scope of that use.
 */
export class MaskPyramid {
  private cache = new Map<number, tf.Tensor4D>();
  readonly fmap: number;
  constructor(readonly base: tf.Tensor4D, maxFactor = 32) {
    this.fmap = base.shape[1];
    this.cache.set(this.fmap, base);
    for (let r = 2; r <= maxFactor; r *= 2) this.cache.set(this.fmap * r, upsampleMask(base, r));
  }
  /** The mask at spatial size h×h (h must be a multiple of the mask size). */
  at(h: number): tf.Tensor4D {
    let m = this.cache.get(h);
    if (!m) {
      if (h % this.fmap !== 0) throw new Error(`mask of size ${this.fmap} cannot be upsampled to ${h}`);
      m = upsampleMask(this.base, h / this.fmap);
      this.cache.set(h, m);
    }
    return m;
  }
  /** Multiply a feature map by the mask at its own resolution (one op; no gradient to the mask). */
  apply<T extends tf.Tensor4D>(x: T): T {
    return maskMul(x, this.at(x.shape[1]));
  }
}

/** Multiply by the mask at x's resolution when a mask pyramid is given; identity for dense use. */
export function maskAt<T extends tf.Tensor4D>(x: T, masks: MaskPyramid | null): T {
  return masks ? masks.apply(x) : x;
}

/** Symmetric spatial padding of an NHWC tensor. */
export function padHW(x: tf.Tensor4D, p: number, value = 0): tf.Tensor4D {
  if (p === 0) return x;
  return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], value);
}

/**
 * Whether to use this module's own gradients for convolutions. The tfjs cpu backend's filter-gradient kernels are
 * naive loops (50–100× slower than the forward conv) and the wasm backend has none; there the filter gradient is
 * computed as a (dilated) forward convolution instead, which is exact and fast. 'auto' uses them on a non-native
 * backend unless the backend module has already replaced those kernels with the same decomposition
 * (`registerCpuTrainingKernels` / `registerWasmTrainingKernels`, done by `initBackend`); the native TensorFlow
 * backend always uses its own kernels.
 */
export function useOwnConvGrads(): boolean {
  if (ownConvGrads !== 'auto') return ownConvGrads === 'on';
  const be = tf.getBackend();
  if (be === 'tensorflow' || be === 'torch') return false; // native conv gradient kernels
  return !(isSparkKernel('Conv2DBackpropFilter', be) && isSparkKernel('DepthwiseConv2dNativeBackpropFilter', be));
}

let ownConvGrads: 'auto' | 'on' | 'off' = 'auto';

/** Force (tests) or restore ('auto') the choice of convolution gradients; returns the previous setting. */
export function setOwnConvGrads(mode: 'auto' | 'on' | 'off'): 'auto' | 'on' | 'off' {
  const prev = ownConvGrads;
  ownConvGrads = mode;
  return prev;
}

/** dL/dW of y = conv2d(x, W, stride s, 'valid') with W [k,k,I,O]: a dilated forward conv over the batch axis. */
export function convFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, k: number, stride: number): tf.Tensor4D {
  return tf.tidy(() => {
    const ci = x.shape[3];
    const co = dy.shape[3];
    const xt = tf.transpose(x, [3, 1, 2, 0]) as tf.Tensor4D; // [I, H, W, B]
    const dyt = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D; // [oh, ow, B, O]
    const r = tf.conv2d(xt, dyt, 1, 'valid', 'NHWC', stride); // [I, H-(oh-1)s, W-(ow-1)s, O]
    const rs = r.shape[1] === k && r.shape[2] === k ? r : tf.slice(r, [0, 0, 0, 0], [ci, k, k, co]);
    return tf.transpose(rs, [1, 2, 0, 3]) as tf.Tensor4D;
  });
}

/** conv2d 'valid' (input already padded) with fast gradients on non-native backends. */
export function convValid(x: tf.Tensor4D, w: tf.Tensor4D, stride: number): tf.Tensor4D {
  if (!useOwnConvGrads()) return tf.conv2d(x, w, stride, 'valid');
  const k = w.shape[0];
  if (w.shape[1] !== k) return tf.conv2d(x, w, stride, 'valid');
  const f = tf.customGrad(((xi: tf.Tensor4D, wi: tf.Tensor4D, save: tf.GradSaveFunc) => {
    save([xi, wi]);
    return {
      value: tf.conv2d(xi, wi, stride, 'valid'),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor4D];
        const dx = tf.conv2dTranspose(dy, ws, xs.shape, stride, 'valid');
        return [dx, convFilterGrad(xs, dy, k, stride)];
      },
    };
  }) as unknown as CustomGradFn);
  return f(x, w) as tf.Tensor4D;
}

/**
 * Dense 2-D convolution with PyTorch semantics: filter [kH,kW,I,O] (HWIO), symmetric padding p, optional bias [O].
 */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: number, bias?: tf.Tensor | null): tf.Tensor4D {
  const k = w.shape[0];
  let y: tf.Tensor4D;
  if (!useOwnConvGrads() && stride === 1 && k === w.shape[1] && k % 2 === 1 && pad === (k - 1) / 2) {
    y = tf.conv2d(x, w, 1, 'same');
  } else {
    y = convValid(padHW(x, pad), w, stride);
  }
  return bias ? biasAdd(y, bias) : y;
}

/** Stride-1 depthwise 'valid' conv (input already padded) with fast gradients on non-native backends. */
function depthwiseValid(x: tf.Tensor4D, w: tf.Tensor4D): tf.Tensor4D {
  if (!useOwnConvGrads()) return tf.depthwiseConv2d(x, w, 1, 'valid');
  const k = w.shape[0];
  const f = tf.customGrad(((xi: tf.Tensor4D, wi: tf.Tensor4D, save: tf.GradSaveFunc) => {
    save([xi, wi]);
    return {
      value: tf.depthwiseConv2d(xi, wi, 1, 'valid'),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor4D];
        const [b, h, wd, c] = xs.shape;
        const [, oh, ow] = dy.shape;
        // dx: correlation of the zero-padded dy with the spatially flipped filter
        const dx = tf.depthwiseConv2d(padHW(dy, k - 1), tf.reverse(ws, [0, 1]) as tf.Tensor4D, 1, 'valid');
        // dW[kh,kw,c] = Σ_b,y,x xp[b,y+kh,x+kw,c]·dy[b,y,x,c]: batch folded into channels
        const xf = tf.reshape(tf.transpose(xs, [1, 2, 0, 3]), [1, h, wd, b * c]) as tf.Tensor4D;
        const df = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [oh, ow, b * c, 1]) as tf.Tensor4D;
        const r = tf.depthwiseConv2d(xf, df, 1, 'valid'); // [1, k, k, B·C]
        const dw = tf.reshape(tf.sum(tf.reshape(r, [k, k, b, c]), 2), [k, k, c, 1]);
        return [dx, dw];
      },
    };
  }) as unknown as CustomGradFn);
  return f(x, w) as tf.Tensor4D;
}

/** Depthwise convolution, filter [k,k,C,1], symmetric padding p, optional bias [C]. */
export function depthwiseConv2d(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: number, bias?: tf.Tensor | null): tf.Tensor4D {
  const k = w.shape[0];
  let y: tf.Tensor4D;
  // native backends: 'same' is PyTorch's symmetric padding here, with no padded copy of x and no pad gradient
  if (!useOwnConvGrads() && stride === 1 && k === w.shape[1] && k % 2 === 1 && pad === (k - 1) / 2) y = tf.depthwiseConv2d(x, w, 1, 'same');
  else if (stride === 1 && w.shape[3] === 1) y = depthwiseValid(padHW(x, pad), w);
  else if (stride === 1 && k % 2 === 1 && pad === (k - 1) / 2) y = tf.depthwiseConv2d(x, w, 1, 'same');
  else y = tf.depthwiseConv2d(padHW(x, pad), w, stride, 'valid');
  return bias ? biasAdd(y, bias) : y;
}

/** SparseConv2d: dense conv, then × mask at the output resolution (spec §2.1). */
export function sparseConv2d(
  x: tf.Tensor4D,
  w: tf.Tensor4D,
  masks: MaskPyramid | null,
  opts: { stride?: number; pad?: number; bias?: tf.Tensor | null; depthwise?: boolean } = {},
): tf.Tensor4D {
  const f = opts.depthwise ? depthwiseConv2d : conv2d;
  return maskAt(f(x, w, opts.stride ?? 1, opts.pad ?? 0, opts.bias), masks);
}

/** SparseMaxPooling k×k stride s pad p (PyTorch: implicit −inf padding), then × mask at the output resolution. */
export function sparseMaxPool(x: tf.Tensor4D, masks: MaskPyramid | null, k = 3, stride = 2, pad = 1): tf.Tensor4D {
  const y = tf.maxPool(padHW(x, pad, -Infinity), k, stride, 'valid');
  return maskAt(y, masks);
}

/** Parameters and buffers of one BatchNorm (reference names `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`). */
export interface BatchNormVars {
  weight: tf.Variable;
  bias: tf.Variable;
  runningMean: tf.Variable;
  runningVar: tf.Variable;
  /** int32 scalar (int64 in PyTorch). */
  numBatchesTracked: tf.Variable;
}

/**
 * (Sparse) BatchNorm2d over NHWC (spec §2.2, §10.4). With a mask: statistics over visible positions only
 * (μ = Σm·x/n, biased σ² = Σm·(x−μ)²/n), output m·(γ(x−μ)/√(σ²+eps)+β), so masked positions are exactly 0 (the
 * values of x at masked positions do not matter). Without a mask: ordinary BatchNorm2d. Training mode normalises
 * with the batch statistics and updates the running statistics with momentum 0.1 (the variance update uses the
 * unbiased estimate) and `num_batches_tracked`, all in one fused op (src/models/fused.ts); eval mode uses the
 * running statistics. `act` applies ReLU / ReLU6 to the output (in training, inside the same op).
 */
export function batchNorm(
  x: tf.Tensor4D,
  bn: BatchNormVars,
  mask: tf.Tensor4D | null,
  training: boolean,
  opts: { eps?: number; act?: FusedActivation } = {},
): tf.Tensor4D {
  const eps = opts.eps ?? BN_EPS;
  const act = opts.act ?? null;
  if (training) {
    const running = { mean: bn.runningMean, variance: bn.runningVar, count: bn.numBatchesTracked, momentum: BN_MOMENTUM };
    return batchNormTrain(x, bn.weight, bn.bias, mask, eps, running, act);
  }
  const scale = tf.mul(tf.rsqrt(tf.add(bn.runningVar, eps)), bn.weight);
  let y = tf.add(tf.mul(tf.sub(x, bn.runningMean), scale), bn.bias) as tf.Tensor4D;
  if (mask) y = maskMul(y, mask);
  return act === 'relu' ? relu(y) : act === 'relu6' ? relu6(y) : y;
}

/**
 * (Sparse) LayerNorm over the channel (last) axis, biased variance, eps 1e-6 (spec §2.3), one fused op. In NHWC the
 * reference's channels_last and channels_first variants are the same op. With a mask the output is × mask (zeros
 * at masked positions, whatever x holds there).
 */
export function layerNorm(x: tf.Tensor4D, weight: tf.Tensor, bias: tf.Tensor, mask: tf.Tensor4D | null, eps = LN_EPS): tf.Tensor4D {
  return layerNormFused(x, weight, bias, eps, mask);
}

/** Exact (erf) GELU: 0.5·x·(1 + erf(x/√2)) (nn.GELU default; tfjs has none), one fused op. */
export function gelu<T extends tf.Tensor>(x: T): T {
  return geluFused(x);
}

/** ReLU6 (decoder activation), one fused op (gradient 1 on 0 < x < 6, as PyTorch's). */
export function relu6<T extends tf.Tensor>(x: T): T {
  return relu6Fused(x);
}

/** ReLU, one fused op (its backward needs only y). */
export function relu<T extends tf.Tensor>(x: T): T {
  return reluFused(x);
}

/**
 * DropPath (stochastic depth, timm 0.5.4): per sample, keep with probability 1−rate and divide by the keep
 * probability. The B keep decisions are drawn from `rng` (B floats, in batch order). Identity in eval mode or
 * when rate = 0 (then no draws are consumed).
 */
export function dropPath<T extends tf.Tensor>(x: T, rate: number, training: boolean, rng: Rng | undefined): T {
  if (!training || rate <= 0) return x;
  if (!rng) throw new Error('dropPath: training with drop path > 0 needs an rng (forward(..., { rng }))');
  const keep = 1 - rate;
  const b = x.shape[0]!;
  const bits = new Float32Array(b);
  for (let i = 0; i < b; i++) bits[i] = rng.float() < keep ? 1 : 0;
  const shape = [b, ...x.shape.slice(1).map(() => 1)];
  return dropPathScale(x, keep, tf.tensor(bits, shape));
}

/** Dense layer over the last axis: x[..., I] · w[I, O] + b[O] (one fused op). */
export function linear(x: tf.Tensor, w: tf.Tensor2D, b?: tf.Tensor | null): tf.Tensor {
  return linearFused(x, w, b ?? null);
}

/**
 * PyTorch ConvTranspose2d(k=4, s=2, p=1): doubles H and W; filter [kH,kW,O,I] (spec §8.4), bias [O]. TF's
 * conv2dTranspose 'same' to 2H pads 1 on each side here, which is PyTorch's p = 1 (unit-tested).
 */
export function convTranspose2x(x: tf.Tensor4D, w: tf.Tensor4D, bias?: tf.Tensor | null): tf.Tensor4D {
  const [b, h, wd] = x.shape;
  const outC = w.shape[2];
  const outShape: [number, number, number, number] = [b, 2 * h, 2 * wd, outC];
  let y: tf.Tensor4D;
  if (!useOwnConvGrads() || w.shape[0] !== 4 || w.shape[1] !== 4) {
    y = tf.conv2dTranspose(x, w, outShape, 2, 'same');
  } else {
    const f = tf.customGrad(((xi: tf.Tensor4D, wi: tf.Tensor4D, save: tf.GradSaveFunc) => {
      save([xi, wi]);
      return {
        value: tf.conv2dTranspose(xi, wi, outShape, 2, 'same'),
        gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
          const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor4D];
          // y is the input-gradient of the conv z = conv2d(pad(y, 1), W, 2): so dx = that conv of dy, and dW is
          // that conv's filter gradient with output-gradient x.
          const dyp = padHW(dy, 1);
          return [tf.conv2d(dyp, ws, 2, 'valid'), convFilterGrad(dyp, xs, 4, 2)];
        },
      };
    }) as unknown as CustomGradFn);
    y = f(x, w) as tf.Tensor4D;
  }
  return bias ? biasAdd(y, bias) : y;
}
