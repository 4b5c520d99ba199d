/**
 * Training kernels for the wasm backend (tfjs-backend-wasm 4.22 ships none of Conv2DBackpropFilter,
 * DepthwiseConv2dNativeBackpropInput/Filter, and its Conv2DBackpropInput is a naive scalar loop).
 *
 * Each is registered for 'wasm' as a decomposition into kernels wasm already has (XNNPACK-backed Conv2D and
 * DepthwiseConv2dNative, plus Transpose, Reverse, Pad, Slice, Reshape, Sum):
 *  - dW of a conv is a conv of the (transposed) input with dy as the filter, dilation = stride;
 *  - dX of a conv is a stride-1 conv of dy dilated by the stride (zeros between rows/columns), padded by
 *    (k - 1 - pad), with the spatially flipped filter whose in/out channels are swapped;
 *  - the depthwise versions do the same per channel (dW moves the batch into channels so that one depthwise conv
 *    computes every (channel, image) correlation, then sums over images).
 *
 * Kernel functions run with the tape off (engine kernelDepth > 0), so the tf ops used here are not recorded; every
 * intermediate is freed by tf.tidy.
 */
import * as tf from '@tensorflow/tfjs';

type Pair = [number, number];
type ConvAttrs = {
  strides: number | Pair;
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: number | Pair;
  filterShape?: number[];
  inputShape?: number[];
};

export const WASM_TRAINING_KERNELS = [
  'Conv2DBackpropFilter',
  'Conv2DBackpropInput',
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
] as const;

const MARK = Symbol.for('spark.wasmTrainingKernel');

function pair(v: number | Pair | undefined, dflt = 1): Pair {
  if (v == null) return [dflt, dflt];
  return typeof v === 'number' ? [v, v] : v;
}

/** A Tensor for a kernel input (the engine passes Tensors; a bare TensorInfo is wrapped, and freed by tidy). */
function asTensor(t: tf.TensorInfo | tf.Tensor): tf.Tensor {
  if (t instanceof tf.Tensor) return t;
  return tf.engine().makeTensorFromDataId(t.dataId, t.shape, t.dtype);
}

function checkFormat(name: string, attrs: ConvAttrs): void {
  if (attrs.dataFormat && attrs.dataFormat !== 'NHWC') {
    throw new Error(`${name} (spark wasm kernel): only NHWC is supported, got ${attrs.dataFormat}`);
  }
  const [dh, dw] = pair(attrs.dilations);
  if (dh !== 1 || dw !== 1) throw new Error(`${name} (spark wasm kernel): dilations > 1 are not supported`);
}

/** Pad (amount > 0) or crop (amount < 0) axes 1 and 2 of a rank-4 tensor. */
function padOrCrop(x: tf.Tensor4D, top: number, bottom: number, left: number, right: number): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const ct = Math.max(0, -top), cb = Math.max(0, -bottom), cl = Math.max(0, -left), cr = Math.max(0, -right);
  let y = x;
  if (ct || cb || cl || cr) y = tf.slice(y, [0, ct, cl, 0], [n, h - ct - cb, w - cl - cr, c]);
  const pt = Math.max(0, top), pb = Math.max(0, bottom), pl = Math.max(0, left), pr = Math.max(0, right);
  if (pt || pb || pl || pr) y = tf.pad(y, [[0, 0], [pt, pb], [pl, pr], [0, 0]]);
  return y;
}

/** Insert (s - 1) zeros after every row / column of a rank-4 tensor: [n, h, w, c] → [n, h·sh, w·sw, c]. */
function dilate(x: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  let [n, h, w, c] = x.shape;
  let y = x;
  if (sw > 1) {
    y = tf.reshape(tf.pad(tf.reshape(y, [n * h, w, 1, c]), [[0, 0], [0, 0], [0, sw - 1], [0, 0]]), [n, h, w * sw, c]);
    w *= sw;
  }
  if (sh > 1) {
    y = tf.reshape(tf.pad(tf.reshape(y, [n, h, 1, w * c]), [[0, 0], [0, 0], [0, sh - 1], [0, 0]]), [n, h * sh, w, c]);
  }
  return y;
}

interface Geometry {
  sh: number;
  sw: number;
  kh: number;
  kw: number;
  top: number;
  left: number;
  outH: number;
  outW: number;
}

function geometry(xShape: number[], filterShape: number[], attrs: ConvAttrs, depthwise: boolean): Geometry {
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number],
    attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, depthwise, 'channelsLast',
  );
  return {
    sh: info.strideHeight, sw: info.strideWidth, kh: info.filterHeight, kw: info.filterWidth,
    top: info.padInfo.top, left: info.padInfo.left, outH: info.outHeight, outW: info.outWidth,
  };
}

/**
 * dX of a conv or depthwise conv: conv(pad(dilate(dy)), flip(filter)). For depthwise, `filter` is [kh, kw, C, 1].
 */
function backpropInput(dy: tf.Tensor4D, filter: tf.Tensor4D, inputShape: number[], g: Geometry, depthwise: boolean): tf.Tensor4D {
  const [, h, w] = inputShape as [number, number, number, number];
  const [, ho, wo] = dy.shape;
  const d = dilate(dy, g.sh, g.sw); // rows: ho·sh (the real dilated map is (ho-1)·sh+1, then zeros)
  const pt = g.kh - 1 - g.top;
  const pl = g.kw - 1 - g.left;
  const pb = h + g.kh - 1 - pt - ho * g.sh;
  const pr = w + g.kw - 1 - pl - wo * g.sw;
  const flipped = tf.reverse(filter, [0, 1]);
  if (depthwise) {
    const p = padOrCrop(d, Math.min(pt, 0), Math.min(pb, 0), Math.min(pl, 0), Math.min(pr, 0));
    const pad: tf.backend_util.ExplicitPadding = [[0, 0], [Math.max(pt, 0), Math.max(pb, 0)], [Math.max(pl, 0), Math.max(pr, 0)], [0, 0]];
    return tf.depthwiseConv2d(p, flipped as tf.Tensor4D, 1, pad);
  }
  const p = padOrCrop(d, Math.min(pt, 0), Math.min(pb, 0), Math.min(pl, 0), Math.min(pr, 0));
  const pad: tf.backend_util.ExplicitPadding = [[0, 0], [Math.max(pt, 0), Math.max(pb, 0)], [Math.max(pl, 0), Math.max(pr, 0)], [0, 0]];
  return tf.conv2d(p, tf.transpose(flipped, [0, 1, 3, 2]) as tf.Tensor4D, 1, pad);
}

/** Pads of x (top, bottom, left, right; negative = crop) so that it spans exactly (out-1)·s + k rows / columns. */
function inputWindow(xShape: number[], g: Geometry): [number, number, number, number] {
  const needH = (g.outH - 1) * g.sh + g.kh;
  const needW = (g.outW - 1) * g.sw + g.kw;
  return [g.top, needH - xShape[1]! - g.top, g.left, needW - xShape[2]! - g.left];
}

function conv2DBackpropFilter(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: number[], attrs: ConvAttrs): tf.Tensor4D {
  const g = geometry(x.shape, filterShape, attrs, false);
  const [t, b, l, r] = inputWindow(x.shape, g);
  // Channels become the batch, the batch becomes the input channels: xt [Ci, H, W, N], dy as filter [Ho, Wo, N, Co].
  const xt = padOrCrop(tf.transpose(x, [3, 1, 2, 0]), Math.min(t, 0), Math.min(b, 0), Math.min(l, 0), Math.min(r, 0));
  const pad: tf.backend_util.ExplicitPadding = [[0, 0], [Math.max(t, 0), Math.max(b, 0)], [Math.max(l, 0), Math.max(r, 0)], [0, 0]];
  const f = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D;
  const out = tf.conv2d(xt, f, 1, pad, 'NHWC', [g.sh, g.sw]); // [Ci, kh, kw, Co]
  return tf.transpose(out, [1, 2, 0, 3]);
}

function depthwiseBackpropFilter(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: number[], attrs: ConvAttrs): tf.Tensor4D {
  const [kh, kw, c, m] = filterShape as [number, number, number, number];
  const g = geometry(x.shape, filterShape, attrs, true);
  const [t, b, l, r] = inputWindow(x.shape, g);
  const [n, h, w] = x.shape;
  // Batch moves into channels: x as [1, H, W, C·N], dy (per multiplier q) as a depthwise filter [Ho, Wo, C·N, 1].
  const xc = padOrCrop(tf.reshape(tf.transpose(x, [1, 2, 3, 0]), [1, h, w, c * n]), Math.min(t, 0), Math.min(b, 0), Math.min(l, 0), Math.min(r, 0));
  const pad: tf.backend_util.ExplicitPadding = [[0, 0], [Math.max(t, 0), Math.max(b, 0)], [Math.max(l, 0), Math.max(r, 0)], [0, 0]];
  const [, ho, wo] = dy.shape;
  const dy5 = m > 1 ? tf.reshape(dy, [n, ho, wo, c, m]) : null;
  const parts: tf.Tensor[] = [];
  for (let q = 0; q < m; q++) {
    const dq = dy5 ? tf.reshape(tf.slice(dy5, [0, 0, 0, 0, q], [n, ho, wo, c, 1]), [n, ho, wo, c]) : dy;
    const f = tf.reshape(tf.transpose(dq, [1, 2, 3, 0]), [ho, wo, c * n, 1]) as tf.Tensor4D;
    const o = tf.depthwiseConv2d(xc, f, 1, pad, 'NHWC', [g.sh, g.sw]); // [1, kh, kw, C·N]
    parts.push(tf.sum(tf.reshape(o, [kh, kw, c, n]), 3)); // [kh, kw, C]
  }
  return (m === 1 ? tf.reshape(parts[0]!, [kh, kw, c, 1]) : tf.stack(parts, 3)) as tf.Tensor4D;
}

function depthwiseBackpropInput(dy: tf.Tensor4D, filter: tf.Tensor4D, inputShape: number[], attrs: ConvAttrs): tf.Tensor4D {
  const [kh, kw, c, m] = filter.shape;
  const g = geometry(inputShape, filter.shape, attrs, true);
  if (m === 1) return backpropInput(dy, filter, inputShape, g, true);
  const [n, ho, wo] = dy.shape;
  const dy5 = tf.reshape(dy, [n, ho, wo, c, m]);
  let acc: tf.Tensor4D | null = null;
  for (let q = 0; q < m; q++) {
    const dq = tf.reshape(tf.slice(dy5, [0, 0, 0, 0, q], [n, ho, wo, c, 1]), [n, ho, wo, c]) as tf.Tensor4D;
    const fq = tf.slice(filter, [0, 0, 0, q], [kh, kw, c, 1]);
    const part = backpropInput(dq, fq, inputShape, g, true);
    acc = acc ? tf.add<tf.Tensor4D>(acc, part) : part;
  }
  return acc!;
}

function kernel(name: string, backendName: string, fn: (inputs: Record<string, tf.Tensor>, attrs: ConvAttrs) => tf.Tensor): tf.KernelConfig {
  const kernelFunc = (({ inputs, attrs }: { inputs: tf.NamedTensorInfoMap; attrs?: tf.NamedAttrMap }) => {
    const a = (attrs ?? {}) as unknown as ConvAttrs;
    checkFormat(name, a);
    return tf.tidy(() => {
      const ins: Record<string, tf.Tensor> = {};
      for (const [k, v] of Object.entries(inputs)) if (v) ins[k] = asTensor(v);
      return fn(ins, a);
    });
  }) as unknown as tf.KernelFunc;
  Object.defineProperty(kernelFunc, MARK, { value: true });
  return { kernelName: name, backendName, kernelFunc };
}

const IMPLS: Record<(typeof WASM_TRAINING_KERNELS)[number], (i: Record<string, tf.Tensor>, a: ConvAttrs) => tf.Tensor> = {
  Conv2DBackpropFilter: (i, a) => conv2DBackpropFilter(i['x'] as tf.Tensor4D, i['dy'] as tf.Tensor4D, a.filterShape!, a),
  Conv2DBackpropInput: (i, a) => {
    const filter = i['filter'] as tf.Tensor4D;
    const g = geometry(a.inputShape!, filter.shape, a, false);
    return backpropInput(i['dy'] as tf.Tensor4D, filter, a.inputShape!, g, false);
  },
  DepthwiseConv2dNativeBackpropFilter: (i, a) => depthwiseBackpropFilter(i['x'] as tf.Tensor4D, i['dy'] as tf.Tensor4D, a.filterShape!, a),
  DepthwiseConv2dNativeBackpropInput: (i, a) => depthwiseBackpropInput(i['dy'] as tf.Tensor4D, i['filter'] as tf.Tensor4D, a.inputShape!, a),
};

/**
 * Kernels spark replaces on the pure-JS cpu backend: its Conv2DBackpropFilter and DepthwiseConv2dNativeBackpropFilter
 * are scalar loops 30-40x slower than its own forward convs and dominate every cpu training step; the
 * decompositions run at forward-conv speed (measured 17x and 15x faster on 2x16x16x32 inputs).
 */
export const CPU_TRAINING_KERNELS = ['Conv2DBackpropFilter', 'DepthwiseConv2dNativeBackpropFilter'] as const;

const originals = new Map<string, tf.KernelConfig>();

function isOurs(cfg: tf.KernelConfig | undefined): boolean {
  return !!cfg && (cfg.kernelFunc as unknown as Record<symbol, unknown>)[MARK] === true;
}

function install(backendName: string, names: readonly (keyof typeof IMPLS)[]): void {
  for (const name of names) {
    const existing = tf.getKernel(name, backendName);
    if (isOurs(existing)) continue;
    if (existing) {
      originals.set(`${name}/${backendName}`, existing);
      tf.unregisterKernel(name, backendName);
    }
    tf.registerKernel(kernel(name, backendName, IMPLS[name]));
  }
}

/** True when all four spark training kernels are the ones registered for 'wasm'. */
export function wasmTrainingKernelsRegistered(): boolean {
  return WASM_TRAINING_KERNELS.every((k) => isOurs(tf.getKernel(k, 'wasm')));
}

/**
 * Register (or re-register) the four training kernels for 'wasm'. Call after @tensorflow/tfjs-backend-wasm has
 * been imported (its own registrations would otherwise replace ours). Idempotent.
 */
export function registerWasmTrainingKernels(): void {
  if (!tf.getKernel('Conv2D', 'wasm')) {
    throw new Error('registerWasmTrainingKernels: @tensorflow/tfjs-backend-wasm is not loaded');
  }
  install('wasm', WASM_TRAINING_KERNELS);
}

/** Replace the cpu backend's slow Conv2DBackpropFilter with the decomposition. Idempotent. */
export function registerCpuTrainingKernels(): void {
  install('cpu', CPU_TRAINING_KERNELS);
}

/** Put back the kernels spark replaced on `backendName` (tests use the originals as the reference). */
export function restoreOriginalKernels(backendName: string): void {
  for (const [key, cfg] of originals) {
    const [name, be] = key.split('/') as [string, string];
    if (be !== backendName) continue;
    if (tf.getKernel(name, be)) tf.unregisterKernel(name, be);
    tf.registerKernel(cfg);
    originals.delete(key);
  }
}

/** True when `name` on `backendName` is spark's decomposition. */
export function isSparkKernel(name: string, backendName: string): boolean {
  return isOurs(tf.getKernel(name, backendName));
}
