/**
 * spark's fused kernels (the contract in src/models/fused.ts and src/backend/fused-kernel-names.ts) as ATen's own
 * fused operators: BatchNorm training forward/backward = native_batch_norm / native_batch_norm_backward on x viewed
 * as [M, C] (M = every leading position; ATen's channels-last kernels, no copy); LayerNorm = native_layer_norm /
 * native_layer_norm_backward; GELU = gelu / gelu_backward (exact, erf); the ReLU / ReLU6 backward = dy × the boolean
 * condition (one kernel, −0 kept as the other backends give it). On the CPU, the GELU and ReLU/ReLU6 backward run as
 * the addon's vectorised loops instead (native/torch/spark_gelu.h, spark_torch.cc: the same arithmetic as spark's
 * TensorFlow ops; ATen's gelu_backward takes twice as long there).
 *
 * The masked BatchNorm (statistics over mask = 1 positions, y and dx zero elsewhere) has no ATen operator; as the
 * reference's sparse BatchNorm does, it takes the visible rows (nonzero + index_select), runs ATen's BatchNorm on
 * them and scatters the result back into zeros (index_copy), in one tfjs kernel.
 */
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { aten, run, runMulti } from '../addon.js';
import type { TorchBackend } from '../backend.js';
import { kernel, sizeOf } from './util.js';

const reshape = aten('reshape', '', 'TI');
const expand = aten('expand', '', 'TIb');
const nativeBatchNorm = aten('native_batch_norm', '', 'TTTTTbdd');
const nativeBatchNormBackward = aten('native_batch_norm_backward', '', 'TTTttTTbdB');
const nativeLayerNorm = aten('native_layer_norm', '', 'TITTd');
const nativeLayerNormBackward = aten('native_layer_norm_backward', '', 'TTITTTTB');
const gelu = aten('gelu', '', 'TS');
const geluBackward = aten('gelu_backward', '', 'TTS');
const gtScalar = aten('gt', 'Scalar', 'Ts');
const ltScalar = aten('lt', 'Scalar', 'Ts');
const logicalAnd = aten('logical_and', '', 'TT');

/**
 * dy × (0 < y [< 6]) as a multiply by the boolean condition, not threshold_backward / hardtanh_backward: those write
 * +0 where the multiply gives −0 for a negative dy, and the portable composite (dy·sign(y)) and TensorFlow's ReluGrad
 * give −0 (bit-identical results across backends).
 */
function activationGrad(b: TorchBackend, dy: TensorInfo, y: TensorInfo, six: boolean): TensorInfo {
  // on the CPU: the addon's one-pass loop (same values, −0 included)
  if (b.device === 'cpu' && typeof b.addon.activationGradCpu === 'function') return b.make(b.addon.activationGradCpu(b.h(dy), b.h(y), six), dy.shape, 'float32');
  const pos = run(gtScalar, b.h(y), 0);
  const tmp = [pos];
  let cond = pos;
  if (six) {
    const below = run(ltScalar, b.h(y), 6);
    cond = run(logicalAnd, pos, below);
    tmp.push(below, cond);
  }
  const out = run(mul, b.h(dy), cond);
  b.free(tmp);
  return b.make(out, dy.shape, 'float32');
}
const mul = aten('mul', 'Tensor', 'TT');
const cloneOp = aten('clone', '', 'Tn');
// int64 indices stay int64 ('!': outputs as ATen makes them), as index_copy needs
const nonzeroLong = aten('nonzero', '', '!T');
const reshapeLong = aten('reshape', '', '!TI');
const indexSelect = aten('index_select', '', 'TiT');
const indexCopy = aten('index_copy', '', 'TiTT');
const zerosLike = aten('zeros_like', '', 'Tnnnnn');

/** x as [M, C] and the mask as [M, 1] (expanded first when it broadcasts over leading axes). */
function flat(b: TorchBackend, x: TensorInfo, mask: TensorInfo | undefined, tmp: number[]): { hx: number; hm: number; m: number; c: number } {
  const c = x.shape[x.shape.length - 1]!;
  const m = sizeOf(x.shape) / c;
  const hx = run(reshape, b.h(x), [m, c]);
  tmp.push(hx);
  let hm = -1;
  if (mask) {
    hm = b.h(mask);
    if (sizeOf(mask.shape) !== m) tmp.push((hm = run(expand, hm, [...x.shape.slice(0, -1), 1], false)));
    tmp.push((hm = run(reshape, hm, [m, 1])));
  }
  return { hx, hm, m, c };
}

/** Free the temporaries; wrap the outputs (all float32) with their known shapes. */
function done(b: TorchBackend, tmp: number[], outs: Array<[number, number[]]>): TensorInfo[] {
  b.free(tmp);
  return outs.map(([h, shape]) => b.make(h, shape, 'float32'));
}

function bnTrain(
  b: TorchBackend,
  x: TensorInfo,
  gamma: TensorInfo,
  beta: TensorInfo,
  runningMean: TensorInfo,
  runningVar: TensorInfo,
  mask: TensorInfo | undefined,
  eps: number,
  momentum: number,
): TensorInfo[] {
  const tmp: number[] = [];
  const { hx, hm } = flat(b, x, mask, tmp);
  if (hm < 0) {
    // ATen updates the running statistics in place as PyTorch does ((1−m)·r + m·batch, unbiased variance): it gets
    // copies, the tfjs inputs stay immutable
    const rm = run(cloneOp, b.h(runningMean));
    const rv = run(cloneOp, b.h(runningVar));
    const [y2, mean, invStd] = runMulti(nativeBatchNorm, hx, b.h(gamma), b.h(beta), rm, rv, true, momentum, eps);
    tmp.push(y2!);
    const y = run(reshape, y2!, x.shape);
    const c = [x.shape[x.shape.length - 1]!];
    return done(b, tmp, [[y, x.shape], [mean!, c], [invStd!, c], [rm, c], [rv, c]]);
  }
  // masked: the reference's sparse BatchNorm: the visible rows (index_select), ATen's BatchNorm on them (batch
  // statistics over visible positions; running statistics as PyTorch updates them), scattered back into zeros
  const { idx, rows } = visibleRows(b, hx, hm, x, tmp);
  const rm = run(cloneOp, b.h(runningMean));
  const rv = run(cloneOp, b.h(runningVar));
  const [yRows, mean, invStd] = runMulti(nativeBatchNorm, rows, b.h(gamma), b.h(beta), rm, rv, true, momentum, eps);
  tmp.push(yRows!);
  const y = run(reshape, scatterRows(b, hx, idx, yRows!, tmp), x.shape);
  const c = [x.shape[x.shape.length - 1]!];
  return done(b, tmp, [[y, x.shape], [mean!, c], [invStd!, c], [rm, c], [rv, c]]);
}

/**
 * The visible rows (mask ≠ 0) of x viewed as [M, C]: their indices (int64, kept as ATen makes them: '!' ops) and the
 * rows [n, C] (index_select). Both pushed to tmp.
 */
function visibleRows(b: TorchBackend, hx: number, hm: number, x: TensorInfo, tmp: number[]): { idx: number; rows: number } {
  const m = sizeOf(x.shape) / x.shape[x.shape.length - 1]!;
  const m1 = run(reshape, hm, [m]);
  const nz = run(nonzeroLong, m1);
  const idx = run(reshapeLong, nz, [-1]);
  const rows = run(indexSelect, hx, 0, idx);
  tmp.push(m1, nz, idx, rows);
  return { idx, rows };
}

/** rows [n, C] written into zeros of x's [M, C] shape at the visible rows (index_copy; pushed to tmp). */
function scatterRows(b: TorchBackend, hx: number, idx: number, rows: number, tmp: number[]): number {
  const zeros = run(zerosLike, hx);
  const out = run(indexCopy, zeros, 0, idx, rows);
  tmp.push(zeros, out);
  return out;
}

function bnTrainGrad(b: TorchBackend, dy: TensorInfo, x: TensorInfo, gamma: TensorInfo, mean: TensorInfo, invStd: TensorInfo, mask: TensorInfo | undefined): TensorInfo[] {
  const tmp: number[] = [];
  const { hx, hm } = flat(b, x, mask, tmp);
  const hdy = run(reshape, b.h(dy), [sizeOf(x.shape) / x.shape[x.shape.length - 1]!, x.shape[x.shape.length - 1]!]);
  tmp.push(hdy);
  if (hm < 0) {
    const [dx2, dgamma, dbeta] = runMulti(nativeBatchNormBackward, hdy, hx, b.h(gamma), -1, -1, b.h(mean), b.h(invStd), true, 0, [true, true, true]);
    tmp.push(dx2!);
    const dx = run(reshape, dx2!, x.shape);
    const c = [x.shape[x.shape.length - 1]!];
    return done(b, tmp, [[dx, x.shape], [dgamma!, c], [dbeta!, c]]);
  }
  // masked: ATen's BatchNorm backward on the visible rows, dx scattered back into zeros
  const { idx, rows } = visibleRows(b, hx, hm, x, tmp);
  const dyRows = run(indexSelect, hdy, 0, idx);
  const [dxRows, dgamma, dbeta] = runMulti(nativeBatchNormBackward, dyRows, rows, b.h(gamma), -1, -1, b.h(mean), b.h(invStd), true, 0, [true, true, true]);
  tmp.push(dyRows, dxRows!);
  const dx = run(reshape, scatterRows(b, hx, idx, dxRows!, tmp), x.shape);
  const c = [x.shape[x.shape.length - 1]!];
  return done(b, tmp, [[dx, x.shape], [dgamma!, c], [dbeta!, c]]);
}

function layerNorm(b: TorchBackend, x: TensorInfo, gamma: TensorInfo, beta: TensorInfo, eps: number): TensorInfo[] {
  const c = x.shape[x.shape.length - 1]!;
  const [y, mean, rstd] = runMulti(nativeLayerNorm, b.h(x), [c], b.h(gamma), b.h(beta), eps);
  return [b.out(y!, 0), b.out(mean!, 1), b.out(rstd!, 2)];
}

function layerNormGrad(b: TorchBackend, dy: TensorInfo, x: TensorInfo, gamma: TensorInfo, mean: TensorInfo, invStd: TensorInfo): TensorInfo[] {
  const c = x.shape[x.shape.length - 1]!;
  // the bias argument only gives dβ its shape: gamma's serves
  const [dx, dgamma, dbeta] = runMulti(nativeLayerNormBackward, b.h(dy), b.h(x), [c], b.h(mean), b.h(invStd), b.h(gamma), b.h(gamma), [true, true, true]);
  return [b.out(dx!, 0), b.out(dgamma!, 1), b.out(dbeta!, 2)];
}


export const fusedKernels: KernelConfig[] = [
  kernel('SparkBatchNormTrain', (b, i, a) =>
    bnTrain(b, i['x']!, i['gamma']!, i['beta']!, i['runningMean']!, i['runningVar']!, i['mask'], a['epsilon'] as number, a['momentum'] as number),
  ),
  kernel('SparkBatchNormTrainGrad', (b, i) => bnTrainGrad(b, i['dy']!, i['x']!, i['gamma']!, i['mean']!, i['invStd']!, i['mask'])),
  kernel('SparkLayerNorm', (b, i, a) => layerNorm(b, i['x']!, i['gamma']!, i['beta']!, a['epsilon'] as number)),
  kernel('SparkLayerNormGrad', (b, i) => layerNormGrad(b, i['dy']!, i['x']!, i['gamma']!, i['mean']!, i['invStd']!)),
  kernel('SparkGelu', (b, { x }) => b.out(run(gelu, b.h(x!), 'none'))),
  // on the CPU: the loop of spark's TensorFlow op (native/torch/spark_gelu.h; ATen's gelu_backward is ~2× slower)
  kernel('SparkGeluGrad', (b, { dy, x }) =>
    b.device === 'cpu' && b.addon.geluGradCpu
      ? b.make(b.addon.geluGradCpu(b.h(dy!), b.h(x!)), x!.shape, 'float32')
      : b.out(run(geluBackward, b.h(dy!), b.h(x!), 'none'))),
  // from the activation's output y: dy where y > 0 (and, for ReLU6, y < 6), else 0
  kernel('SparkReluGrad', (b, { dy, y }) => activationGrad(b, dy!, y!, false)),
  kernel('SparkRelu6Grad', (b, { dy, y }) => activationGrad(b, dy!, y!, true)),
];
