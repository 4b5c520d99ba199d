/**
 * Convolutions and pooling. tfjs tensors are NHWC and contiguous; ATen's NCHW operators get permuted views
 * (`x.permute(0,3,1,2)` is an NCHW tensor in channels-last memory, no copy), so oneDNN/cuDNN run their channels-last
 * kernels and the NCHW results, channels-last themselves, permute back to contiguous NHWC. Filters [kh,kw,in,out]
 * are viewed as [out,in,kh,kw] (permute(3,2,0,1)); depthwise filters [kh,kw,C,M] as [C·M,1,kh,kw] with groups C.
 * Padding comes from tfjs's own conv/pool info ('same', 'valid', a number, explicit); asymmetric padding (TF 'same'
 * with an even total) pads the input explicitly and runs with padding 0, as PyTorch's own padding='same' does.
 * Gradients use aten::convolution_backward and the pooling backward operators.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { aten, run, runMulti, DT } from '../addon.js';
import type { TorchBackend } from '../backend.js';
import { kernel } from './util.js';

const permute = aten('permute', '', 'TI');
const reshape = aten('reshape', '', 'TI');
const convolution = aten('convolution', '', 'TTtIIIbIi');
const convBackward = aten('convolution_backward', '', 'TTTnIIIbIiB');
const emptyMf = aten('empty', 'memory_format', 'IDnVni');
const padNd = aten('constant_pad_nd', '', 'TIs');
const slice = aten('slice', 'Tensor', 'Tiiii');
const clone = aten('clone', '', 'Ti');
const contiguous = aten('contiguous', '', 'Ti');
const maxPoolIdx = aten('max_pool2d_with_indices', '', '!TIIIIb');
const maxPoolBackward = aten('max_pool2d_with_indices_backward', '', 'TTIIIIbT');
const avgPool = aten('avg_pool2d', '', 'TIIIbbn');
const avgPoolBackward = aten('avg_pool2d_backward', '', 'TTIIIbbn');

const upNearest = aten('upsample_nearest2d', '', 'TInn');
const upNearestExact = aten('_upsample_nearest_exact2d', '', 'TInn');
const upNearestBackward = aten('upsample_nearest2d_backward', '', 'TIInn');
const upNearestExactBackward = aten('_upsample_nearest_exact2d_backward', '', 'TIInn');
const upBilinear = aten('upsample_bilinear2d', '', 'TIbnn');
const upBilinearBackward = aten('upsample_bilinear2d_backward', '', 'TIIbnn');

const CHANNELS_LAST = 2;
const CONTIGUOUS = 0;
const TO_NCHW = [0, 3, 1, 2];
const TO_NHWC = [0, 2, 3, 1];

type Pad = { top: number; bottom: number; left: number; right: number };

function checkNhwc(a: NamedAttrMap, name: string): void {
  const f = a['dataFormat'] as string | undefined;
  if (f !== undefined && f !== 'NHWC' && f !== 'channelsLast') throw new Error(`${name}: dataFormat ${f} is not supported by the torch backend (NHWC only)`);
}

function convInfo(xShape: number[], fShape: number[], a: NamedAttrMap, depthwise: boolean): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    fShape as [number, number, number, number],
    a['strides'] as number | [number, number],
    (a['dilations'] as number | [number, number] | undefined) ?? 1,
    a['pad'] as 'same',
    a['dimRoundingMode'] as 'floor' | undefined,
    depthwise,
    'channelsLast',
  );
}

const symmetric = (p: Pad): boolean => p.top === p.bottom && p.left === p.right;

/** NCHW view of an NHWC handle, explicitly padded when the padding is asymmetric; every handle made goes to `tmp`. */
function nchwInput(b: TorchBackend, x: TensorInfo, p: Pad, tmp: number[], value = 0): number {
  let h = b.h(x);
  if (!symmetric(p)) tmp.push((h = run(padNd, h, [0, 0, p.left, p.right, p.top, p.bottom], value)));
  tmp.push((h = run(permute, h, TO_NCHW)));
  return h;
}

/** [out, in/groups, kh, kw] of a tfjs filter: a cached channels-last copy (dense) or a view (depthwise, in `tmp`). */
function torchFilter(b: TorchBackend, f: TensorInfo, depthwise: boolean, tmp: number[]): number {
  let h = b.h(f);
  if (!depthwise) {
    // The filter as a channels-last [out,in,kh,kw] tensor (OHWI memory), shared by the forward and the input-gradient
    // convolutions of a step: oneDNN reorders it to its blocked layout much faster than the HWIO-strided view (up to
    // ~40% of a weight-heavy 1×1 convolution at small batch). A filter the optimizer has updated on the CPU is
    // already stored that way (see convBackpropFilter) and is used as it is; one loaded from host data is copied once.
    const hf = h;
    return b.derived(hf, () => {
      const v = run(permute, hf, [3, 2, 0, 1]);
      const c = run(contiguous, v, CHANNELS_LAST);
      b.free(v);
      return c;
    });
  }
  const [kh, kw, c, m] = f.shape as [number, number, number, number];
  tmp.push((h = run(reshape, h, [kh, kw, 1, c * m])));
  tmp.push((h = run(permute, h, [3, 2, 0, 1])));
  return h;
}

function freeAll(b: TorchBackend, tmp: number[]): void {
  b.free(tmp);
}

/** Result handle of an NCHW operator as NHWC (a view; contiguous when ATen chose channels-last). */
function toNhwc(b: TorchBackend, h: number, tmp: number[]): TensorInfo {
  tmp.push(h);
  let r = run(permute, h, TO_NHWC);
  freeAll(b, tmp);
  return b.out(r);
}

function conv(b: TorchBackend, x: TensorInfo, filter: TensorInfo, a: NamedAttrMap, depthwise: boolean, name: string): TensorInfo {
  checkNhwc(a, name);
  const ci = convInfo(x.shape, filter.shape, a, depthwise);
  const p = ci.padInfo;
  const tmp: number[] = [];
  const hx = nchwInput(b, x, p, tmp);
  const hw = torchFilter(b, filter, depthwise, tmp);
  const pad = symmetric(p) ? [p.top, p.left] : [0, 0];
  const groups = depthwise ? x.shape[3]! : 1;
  const y = run(convolution, hx, hw, -1, [ci.strideHeight, ci.strideWidth], pad, [ci.dilationHeight, ci.dilationWidth], false, [0, 0], groups);
  return toNhwc(b, y, tmp);
}

function convBackpropInput(b: TorchBackend, dy: TensorInfo, filter: TensorInfo, a: NamedAttrMap, depthwise: boolean, name: string): TensorInfo {
  checkNhwc(a, name);
  const inShape = a['inputShape'] as [number, number, number, number];
  const ci = convInfo(inShape, filter.shape, a, depthwise);
  const p = ci.padInfo;
  const sym = symmetric(p);
  const [n, hgt, wid, c] = inShape;
  const ph = sym ? hgt : hgt + p.top + p.bottom;
  const pw = sym ? wid : wid + p.left + p.right;
  const tmp: number[] = [];
  const hdy = run(permute, b.h(dy), TO_NCHW);
  tmp.push(hdy);
  const hw = torchFilter(b, filter, depthwise, tmp);
  const shapeOnly = run(emptyMf, [n, c, ph, pw], DT.float32, CHANNELS_LAST);
  tmp.push(shapeOnly);
  const pad = sym ? [p.top, p.left] : [0, 0];
  const groups = depthwise ? c : 1;
  const [dx, gw, gb] = runMulti(convBackward, hdy, shapeOnly, hw, [ci.strideHeight, ci.strideWidth], pad, [ci.dilationHeight, ci.dilationWidth], false, [0, 0], groups, [true, false, false]);
  void gw;
  void gb;
  let r = dx!;
  if (!sym) {
    tmp.push(r);
    const s1 = run(slice, r, 2, p.top, p.top + hgt, 1);
    tmp.push(s1);
    r = run(slice, s1, 3, p.left, p.left + wid, 1);
  }
  return toNhwc(b, r, tmp);
}

function convBackpropFilter(b: TorchBackend, x: TensorInfo, dy: TensorInfo, a: NamedAttrMap, depthwise: boolean, name: string): TensorInfo {
  checkNhwc(a, name);
  const fShape = a['filterShape'] as [number, number, number, number];
  const ci = convInfo(x.shape, fShape, a, depthwise);
  const p = ci.padInfo;
  const [kh, kw, fin, fout] = fShape;
  const tmp: number[] = [];
  const hx = nchwInput(b, x, p, tmp);
  const hdy = run(permute, b.h(dy), TO_NCHW);
  tmp.push(hdy);
  const wShape = depthwise ? [fin * fout, 1, kh, kw] : [fout, fin, kh, kw];
  // a channels-last weight lets oneDNN write its filter gradient without a transposing epilogue (10–30% faster here)
  const shapeOnly = run(emptyMf, wShape, DT.float32, CHANNELS_LAST);
  tmp.push(shapeOnly);
  const pad = symmetric(p) ? [p.top, p.left] : [0, 0];
  const groups = depthwise ? x.shape[3]! : 1;
  const [, gw] = runMulti(convBackward, hdy, hx, shapeOnly, [ci.strideHeight, ci.strideWidth], pad, [ci.dilationHeight, ci.dilationWidth], false, [0, 0], groups, [false, true, false]);
  tmp.push(gw!);
  const hwc = run(permute, gw!, [2, 3, 1, 0]); // [kh, kw, in/groups, out]
  if (!depthwise && b.device === 'cpu') {
    // On the CPU a dense filter's gradient stays in oneDNN's [out,kh,kw,in] memory under its [kh,kw,in,out] shape:
    // the optimizer's loops (optimCpu) write the new filter and moments in the gradient's memory order, so the next
    // forward uses the filter without a copy, as PyTorch's channels-last weights are. Every other kernel reads
    // tensors through their strides. (On CUDA the _foreach_ kernels want one layout for all operands: a copy.)
    freeAll(b, tmp);
    return b.out(hwc);
  }
  tmp.push(hwc);
  let r = run(clone, hwc, CONTIGUOUS);
  if (depthwise) {
    tmp.push(r);
    r = run(reshape, r, fShape);
  }
  freeAll(b, tmp);
  return b.out(r);
}

function poolInfo(x: TensorInfo, a: NamedAttrMap): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computePool2DInfo(
    x.shape as [number, number, number, number],
    a['filterSize'] as number | [number, number],
    a['strides'] as number | [number, number],
    1,
    a['pad'] as 'same',
    a['dimRoundingMode'] as 'floor' | undefined,
  );
}

/** Pool padding ATen accepts (symmetric, at most half the window); otherwise pad explicitly with `fill`. */
function poolPad(pi: tf.backend_util.Conv2DInfo): { explicit: boolean; pad: number[] } {
  const p = pi.padInfo;
  const ok = symmetric(p) && p.top <= pi.filterHeight / 2 && p.left <= pi.filterWidth / 2;
  return ok ? { explicit: false, pad: [p.top, p.left] } : { explicit: true, pad: [0, 0] };
}

function maxPoolIndices(b: TorchBackend, x: TensorInfo, pi: tf.backend_util.Conv2DInfo, tmp: number[]): { hx: number; out: number; idx: number; pad: number[] } {
  const pp = poolPad(pi);
  const hx = nchwInput(b, x, pp.explicit ? pi.padInfo : { top: 0, bottom: 0, left: 0, right: 0 }, tmp, -Infinity);
  const [out, idx] = runMulti(maxPoolIdx, hx, [pi.filterHeight, pi.filterWidth], [pi.strideHeight, pi.strideWidth], pp.pad, [1, 1], false);
  return { hx, out: out!, idx: idx!, pad: pp.pad };
}

export const convKernels: KernelConfig[] = [
  kernel('Conv2D', (b, { x, filter }, a) => conv(b, x!, filter!, a, false, 'Conv2D')),
  kernel('DepthwiseConv2dNative', (b, { x, filter }, a) => conv(b, x!, filter!, a, true, 'DepthwiseConv2dNative')),
  kernel('Conv2DBackpropInput', (b, { dy, filter }, a) => convBackpropInput(b, dy!, filter!, a, false, 'Conv2DBackpropInput')),
  kernel('DepthwiseConv2dNativeBackpropInput', (b, { dy, filter }, a) => convBackpropInput(b, dy!, filter!, a, true, 'DepthwiseConv2dNativeBackpropInput')),
  kernel('Conv2DBackpropFilter', (b, { x, dy }, a) => convBackpropFilter(b, x!, dy!, a, false, 'Conv2DBackpropFilter')),
  kernel('DepthwiseConv2dNativeBackpropFilter', (b, { x, dy }, a) => convBackpropFilter(b, x!, dy!, a, true, 'DepthwiseConv2dNativeBackpropFilter')),
  kernel('MaxPool', (b, { x }, a) => {
    const pi = poolInfo(x!, a);
    const tmp: number[] = [];
    const r = maxPoolIndices(b, x!, pi, tmp);
    tmp.push(r.idx);
    return toNhwc(b, r.out, tmp);
  }),
  kernel('MaxPoolGrad', (b, { dy, input }, a) => {
    const pi = poolInfo(input!, a);
    const tmp: number[] = [];
    const r = maxPoolIndices(b, input!, pi, tmp);
    tmp.push(r.out, r.idx);
    const hdy = run(permute, b.h(dy!), TO_NCHW);
    tmp.push(hdy);
    let dx = run(maxPoolBackward, hdy, r.hx, [pi.filterHeight, pi.filterWidth], [pi.strideHeight, pi.strideWidth], r.pad, [1, 1], false, r.idx);
    if (poolPad(pi).explicit) {
      const p = pi.padInfo;
      tmp.push(dx);
      const s1 = run(slice, dx, 2, p.top, p.top + input!.shape[1]!, 1);
      tmp.push(s1);
      dx = run(slice, s1, 3, p.left, p.left + input!.shape[2]!, 1);
    }
    return toNhwc(b, dx, tmp);
  }),
  kernel('AvgPool', (b, { x }, a) => {
    const pi = poolInfo(x!, a);
    const pp = poolPad(pi);
    if (pp.explicit) throw new Error('AvgPool: asymmetric padding is not supported by the torch backend');
    const tmp: number[] = [];
    const hx = nchwInput(b, x!, pi.padInfo, tmp);
    const y = run(avgPool, hx, [pi.filterHeight, pi.filterWidth], [pi.strideHeight, pi.strideWidth], pp.pad, false, false);
    return toNhwc(b, y, tmp);
  }),
  kernel('AvgPoolGrad', (b, { dy, input }, a) => {
    const pi = poolInfo(input!, a);
    const pp = poolPad(pi);
    if (pp.explicit) throw new Error('AvgPoolGrad: asymmetric padding is not supported by the torch backend');
    const tmp: number[] = [];
    const hx = nchwInput(b, input!, pi.padInfo, tmp);
    const hdy = run(permute, b.h(dy!), TO_NCHW);
    tmp.push(hdy);
    const dx = run(avgPoolBackward, hdy, hx, [pi.filterHeight, pi.filterWidth], [pi.strideHeight, pi.strideWidth], pp.pad, false, false);
    return toNhwc(b, dx, tmp);
  }),
  // Resizing. Nearest: TF's legacy rule floor(dst·in/out) is ATen's 'nearest', half-pixel centres its 'nearest-exact';
  // bilinear with half-pixel centres is align_corners=False, alignCorners is align_corners=True. TF's legacy
  // bilinear (neither flag) and nearest with alignCorners have no ATen operator: an error names them.
  kernel('ResizeNearestNeighbor', (b, { images }, a) => {
    if (a['alignCorners']) throw new Error('ResizeNearestNeighbor with alignCorners is not supported by the torch backend');
    const [oh, ow] = a['size'] as [number, number];
    const tmp: number[] = [];
    const hx = nchwInput(b, images!, { top: 0, bottom: 0, left: 0, right: 0 }, tmp);
    const y = run(a['halfPixelCenters'] ? upNearestExact : upNearest, hx, [oh, ow]);
    return toNhwc(b, y, tmp);
  }),
  kernel('ResizeNearestNeighborGrad', (b, { images, dy }, a) => {
    if (a['alignCorners']) throw new Error('ResizeNearestNeighborGrad with alignCorners is not supported by the torch backend');
    const [n, h, w, c] = images!.shape as [number, number, number, number];
    const tmp: number[] = [];
    const hdy = run(permute, b.h(dy!), TO_NCHW);
    tmp.push(hdy);
    const dx = run(a['halfPixelCenters'] ? upNearestExactBackward : upNearestBackward, hdy, [dy!.shape[1]!, dy!.shape[2]!], [n, c, h, w]);
    return toNhwc(b, dx, tmp);
  }),
  kernel('ResizeBilinear', (b, { images }, a) => {
    const align = !!a['alignCorners'];
    if (!align && !a['halfPixelCenters']) throw new Error('ResizeBilinear without halfPixelCenters or alignCorners (TF legacy) is not supported by the torch backend');
    const [oh, ow] = a['size'] as [number, number];
    const tmp: number[] = [];
    const hx = nchwInput(b, images!, { top: 0, bottom: 0, left: 0, right: 0 }, tmp);
    const y = run(upBilinear, hx, [oh, ow], align);
    return toNhwc(b, y, tmp);
  }),
  kernel('ResizeBilinearGrad', (b, { images, dy }, a) => {
    const align = !!a['alignCorners'];
    if (!align && !a['halfPixelCenters']) throw new Error('ResizeBilinearGrad without halfPixelCenters or alignCorners (TF legacy) is not supported by the torch backend');
    const [n, h, w, c] = images!.shape as [number, number, number, number];
    const tmp: number[] = [];
    const hdy = run(permute, b.h(dy!), TO_NCHW);
    tmp.push(hdy);
    const dx = run(upBilinearBackward, hdy, [dy!.shape[1]!, dy!.shape[2]!], [n, c, h, w], align);
    return toNhwc(b, dx, tmp);
  }),
];
