/**
 * Element-wise kernels: unary math, binary arithmetic with NumPy broadcasting (the same rules in tfjs and ATen),
 * comparisons and logic (bool outputs), Select, Cast, Step, Relu6, ClipByValue, AddN.
 */
import type { KernelConfig, NamedAttrMap, TensorInfo, DataType } from '@tensorflow/tfjs';
import { aten, run, DT, type AtenOp } from '../addon.js';
import type { TorchBackend } from '../backend.js';
import { kernel, listInputs } from './util.js';

const unaryOps: Array<[string, AtenOp]> = [
  ['Abs', aten('abs', '', 'T')],
  ['Neg', aten('neg', '', 'T')],
  ['Exp', aten('exp', '', 'T')],
  ['Expm1', aten('expm1', '', 'T')],
  ['Log', aten('log', '', 'T')],
  ['Log1p', aten('log1p', '', 'T')],
  ['Sqrt', aten('sqrt', '', 'T')],
  ['Rsqrt', aten('rsqrt', '', 'T')],
  ['Square', aten('square', '', 'T')],
  ['Erf', aten('erf', '', 'T')],
  ['Relu', aten('relu', '', 'T')],
  ['Sigmoid', aten('sigmoid', '', 'T')],
  ['Tanh', aten('tanh', '', 'T')],
  ['Sin', aten('sin', '', 'T')],
  ['Cos', aten('cos', '', 'T')],
  ['Floor', aten('floor', '', 'T')],
  ['Ceil', aten('ceil', '', 'T')],
  ['Round', aten('round', '', 'T')], // half to even in both
  ['Sign', aten('sign', '', 'T')],
  ['Reciprocal', aten('reciprocal', '', 'T')],
  ['IsNan', aten('isnan', '', 'T')],
  ['IsInf', aten('isinf', '', 'T')],
  ['IsFinite', aten('isfinite', '', 'T')],
  ['LogicalNot', aten('logical_not', '', 'T')],
  ['Softplus', aten('softplus', '', 'Tss')],
];

const add = aten('add', 'Tensor', 'TTz');
const sub = aten('sub', 'Tensor', 'TTz');
const binaryOps: Array<[string, AtenOp]> = [
  ['Multiply', aten('mul', 'Tensor', 'TT')],
  ['RealDiv', aten('div', 'Tensor', 'TT')],
  ['Maximum', aten('maximum', '', 'TT')],
  ['Minimum', aten('minimum', '', 'TT')],
  ['Pow', aten('pow', 'Tensor_Tensor', 'TT')],
  ['Mod', aten('remainder', 'Tensor', 'TT')], // floor modulo, the sign of the divisor, like tfjs
  ['Atan2', aten('atan2', '', 'TT')],
  ['Greater', aten('gt', 'Tensor', 'TT')],
  ['GreaterEqual', aten('ge', 'Tensor', 'TT')],
  ['Less', aten('lt', 'Tensor', 'TT')],
  ['LessEqual', aten('le', 'Tensor', 'TT')],
  ['Equal', aten('eq', 'Tensor', 'TT')],
  ['NotEqual', aten('ne', 'Tensor', 'TT')],
  ['LogicalAnd', aten('logical_and', '', 'TT')],
  ['LogicalOr', aten('logical_or', '', 'TT')],
  ['LogicalXor', aten('logical_xor', '', 'TT')],
];
const divMode = aten('div', 'Tensor_mode', 'TTS');
const squaredDiff = aten('square', '', 'T');
const where = aten('where', 'self', 'TTT');
const whereScalar = aten('where', 'Scalar', 'Tss');
const gtScalar = aten('gt', 'Scalar', 'Ts');
const isnan = aten('isnan', '', 'T');
const toCopy = aten('_to_copy', '', 'TDnnnbn');
const hardtanh = aten('hardtanh', '', 'Tss');
const clamp = aten('clamp', '', 'Tss');
const leakyRelu = aten('leaky_relu', '', 'Ts');
const elu = aten('elu', '', 'Tsss');
const eluBackward = aten('elu_backward', '', 'TsssbT');
const reshape = aten('reshape', '', 'TI');
const prelu = aten('_prelu_kernel', '', 'TT');

/** Cast a handle to a tfjs dtype (a new handle). */
export function castHandle(h: number, dtype: DataType): number {
  return run(toCopy, h, DT[dtype as keyof typeof DT], false);
}

function unary(name: string, op: AtenOp): KernelConfig {
  if (name === 'Softplus') return kernel(name, (b, { x }) => b.out(run(op, b.h(x!), 1, 20)));
  return kernel(name, (b, { x }) => b.out(run(op, b.h(x!))));
}

function binary(name: string, op: AtenOp): KernelConfig {
  return kernel(name, (b, { a, b: bb }) => b.out(run(op, b.h(a!), b.h(bb!))));
}

/** Step: 1 where x > 0, alpha elsewhere, NaN stays NaN (tfjs semantics). */
function step(b: TorchBackend, x: TensorInfo, attrs: NamedAttrMap): TensorInfo {
  const alpha = (attrs['alpha'] as number | undefined) ?? 0;
  const hx = b.h(x);
  const gt = run(gtScalar, hx, 0);
  const y = run(whereScalar, gt, 1, alpha);
  b.free(gt);
  const nan = run(isnan, hx);
  const hxf = x.dtype === 'float32' ? hx : -1;
  if (hxf < 0) {
    b.free(nan);
    const c = castHandle(y, x.dtype);
    b.free(y);
    return b.out(c);
  }
  const r = run(where, nan, hx, y);
  b.free(nan);
  b.free(y);
  return b.out(r);
}

export const elementwiseKernels: KernelConfig[] = [
  ...unaryOps.map(([n, op]) => unary(n, op)),
  ...binaryOps.map(([n, op]) => binary(n, op)),
  kernel('Add', (b, { a, b: bb }) => b.out(run(add, b.h(a!), b.h(bb!), 1))),
  kernel('Sub', (b, { a, b: bb }) => b.out(run(sub, b.h(a!), b.h(bb!), 1))),
  kernel('FloorDiv', (b, { a, b: bb }) => {
    // tfjs: int32 result for every input dtype
    const q = run(divMode, b.h(a!), b.h(bb!), 'floor');
    if (a!.dtype === 'int32' && bb!.dtype === 'int32') return b.out(q);
    const c = castHandle(q, 'int32');
    b.free(q);
    return b.out(c);
  }),
  kernel('SquaredDifference', (b, { a, b: bb }) => {
    const d = run(sub, b.h(a!), b.h(bb!), 1);
    const r = run(squaredDiff, d);
    b.free(d);
    return b.out(r);
  }),
  kernel('Step', (b, { x }, attrs) => step(b, x!, attrs)),
  kernel('Relu6', (b, { x }) => b.out(run(hardtanh, b.h(x!), 0, 6))),
  kernel('ClipByValue', (b, { x }, attrs) => b.out(run(clamp, b.h(x!), attrs['clipValueMin'] as number, attrs['clipValueMax'] as number))),
  kernel('LeakyRelu', (b, { x }, attrs) => b.out(run(leakyRelu, b.h(x!), attrs['alpha'] as number))),
  kernel('Elu', (b, { x }) => b.out(run(elu, b.h(x!), 1, 1, 1))),
  kernel('EluGrad', (b, { dy, y }) => b.out(run(eluBackward, b.h(dy!), 1, 1, 1, true, b.h(y!)))),
  kernel('Prelu', (b, { x, alpha }) => b.out(run(prelu, b.h(x!), b.h(alpha!)))),
  kernel('Select', (b, { condition, t, e }) => {
    let c = b.h(condition!);
    let tmp = -1;
    // tfjs: a rank-1 condition selects along the first axis of higher-rank t/e
    if (condition!.shape.length === 1 && t!.shape.length > 1) {
      tmp = c = run(reshape, c, [condition!.shape[0]!, ...Array(t!.shape.length - 1).fill(1)]);
    }
    const r = run(where, c, b.h(t!), b.h(e!));
    if (tmp >= 0) b.free(tmp);
    return b.out(r);
  }),
  kernel('Cast', (b, { x }, attrs) => {
    const dtype = attrs['dtype'] as DataType;
    if (dtype === x!.dtype) return b.alias(x!);
    return b.out(castHandle(b.h(x!), dtype));
  }),
  kernel('AddN', (b, inputs) => {
    const ts = listInputs(inputs);
    if (ts.length === 1) return b.alias(ts[0]!);
    let acc = run(add, b.h(ts[0]!), b.h(ts[1]!), 1);
    for (let i = 2; i < ts.length; i++) {
      const next = run(add, acc, b.h(ts[i]!), 1);
      b.free(acc);
      acc = next;
    }
    return b.out(acc);
  }),
];
