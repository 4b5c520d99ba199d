/**
 * spark's fused optimizer kernels (contract: header of src/train/fused-optim.ts)
 * on ATen's `_foreach_*` operators: one call per step of the update over all parameters of a group instead of one
 * per parameter. `apply` (a bool scalar on the device) selects new or old values with `where` on CUDA, so a skipped
 * step (non-finite loss) leaves every tensor bit for bit and nothing waits for the GPU; on the CPU the flag is read
 * (free there) and the where passes are skipped.
 *
 * SparkGlobalNorm: √(Σᵢ‖gᵢ‖²) = ‖(‖g₀‖, …, ‖gₙ₋₁‖)‖ (_foreach_norm, stack, linalg_vector_norm).
 * SparkLambUpdate / SparkAdamWUpdate: timm 0.5.4's arithmetic, see the contract.
 * On the CPU the three run as the addon's own loops (optimCpu / globalNormCpu in native/torch/spark_torch.cc; one
 * pass instead of ~15; SPARK_TORCH_NATIVE_OPTIM=0 keeps the _foreach_ path), on CUDA as _foreach_* operators.
 */
import type { KernelConfig, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import { aten, run, runMulti, DT } from '../addon.js';
import type { TorchBackend } from '../backend.js';
import { kernel } from './util.js';
import { nativeOptimizerScalars, type AdamWUpdateAttrs, type LambUpdateAttrs } from '../../fused-optim-scalars.js';

const fNorm = aten('_foreach_norm', 'Scalar', 'Lsn');
const fMulS = aten('_foreach_mul', 'Scalar', 'Ls');
const fMulT = aten('_foreach_mul', 'Tensor', 'LT');
const fDivS = aten('_foreach_div', 'Scalar', 'Ls');
const fDivL = aten('_foreach_div', 'List', 'LL');
const fDivT = aten('_foreach_div', 'Tensor', 'LT');
const fAddL = aten('_foreach_add', 'List', 'LLs');
const fSqrt = aten('_foreach_sqrt', '', 'L');
// in place (on lists this kernel made itself; the tfjs inputs are never written)
const fMulL_ = aten('_foreach_mul_', 'List', 'LL');
const fDivS_ = aten('_foreach_div_', 'Scalar', 'Ls');
const fDivL_ = aten('_foreach_div_', 'List', 'LL');
const fAddS_ = aten('_foreach_add_', 'Scalar', 'Ls');
const fAddL_ = aten('_foreach_add_', 'List', 'LLs');
const fAddcmulS_ = aten('_foreach_addcmul_', 'Scalar', 'LLLs');
const whereOut = aten('where', 'self_out', 'TTTT');
const cloneOp = aten('clone', '', 'Tn');
const stack = aten('stack', '', 'Li');
const unbind = aten('unbind', 'int', 'Ti');
const vectorNorm = aten('linalg_vector_norm', '', 'Tsnbn');
const gtScalar = aten('gt', 'Scalar', 'Ts');
const logicalAnd = aten('logical_and', '', 'TT');
const whereScalarOther = aten('where', 'ScalarOther', 'TTs');
const div = aten('div', 'Tensor', 'TT');
const clampMax = aten('clamp_max', '', 'Ts');
const full = aten('full', '', 'IsDnVn');

function list(b: TorchBackend, inputs: NamedTensorInfoMap, prefix: string, n: number): { h: number[]; t: TensorInfo[] } {
  const t: TensorInfo[] = [];
  for (let i = 0; i < n; i++) {
    const x = inputs[`${prefix}${i}`];
    if (!x) throw new Error(`fused optimizer kernel: input ${prefix}${i} missing`);
    t.push(x);
  }
  return { h: t.map((x) => b.h(x)), t };
}

function scalarInput(b: TorchBackend, inputs: NamedTensorInfoMap, name: string): number {
  const x = inputs[name];
  if (!x) throw new Error(`fused optimizer kernel: input ${name} missing`);
  return b.h(x);
}

let selectOnDevice = false;

/** On the CPU: the clip factor is exactly 1 (no clipping this step), so the gradients are used as they are. */
function unitOnCpu(b: TorchBackend, h: number): boolean {
  return b.device === 'cpu' && !selectOnDevice && b.addon.toData(h)[0] === 1;
}
/** Tests: use the device path (where on the device) on the CPU too. Returns the previous setting. */
export function setOptimSelectOnDevice(on: boolean): boolean {
  const prev = selectOnDevice;
  selectOnDevice = on;
  return prev;
}

/**
 * where(apply, new, old) written into `new` itself (no allocation); the outputs in the contract's order. `fresh`
 * lists are this kernel's own tensors, so overwriting them is safe.
 */
function select(b: TorchBackend, apply: number, fresh: number[][], old: TensorInfo[][]): TensorInfo[] {
  const out: TensorInfo[] = [];
  if (b.device === 'cpu' && !selectOnDevice) {
    // On the CPU reading the flag costs nothing (no device queue to wait for): the applied step skips the three
    // where passes over every parameter, the skipped one returns copies of the inputs.
    const applied = b.addon.toData(apply)[0] !== 0;
    for (let k = 0; k < fresh.length; k++) {
      for (let i = 0; i < fresh[k]!.length; i++) {
        const o = old[k]![i]!;
        if (applied) {
          out.push(b.make(fresh[k]![i]!, o.shape, 'float32'));
        } else {
          b.free(fresh[k]![i]!);
          out.push(b.make(run(cloneOp, b.h(o)), o.shape, 'float32'));
        }
      }
    }
    return out;
  }
  for (let k = 0; k < fresh.length; k++) {
    for (let i = 0; i < fresh[k]!.length; i++) {
      const o = old[k]![i]!;
      const h = fresh[k]![i]!;
      b.free(run(whereOut, apply, h, b.h(o), h));
      out.push(b.make(h, o.shape, 'float32'));
    }
  }
  return out;
}

/**
 * m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g² (new lists: outputs), den = √v/√bc2 + eps (a new list, the caller frees
 * it). Everything after the first allocation of each list runs in place.
 */
function moments(g: number[], m0: number[], v0: number[], a: NamedAttrMap): { m: number[]; v: number[]; den: number[] } {
  const beta1 = a['beta1'] as number;
  const beta2 = a['beta2'] as number;
  const m = runMulti(fMulS, m0, beta1);
  runMulti(fAddL_, m, g, 1 - beta1);
  const v = runMulti(fMulS, v0, beta2);
  runMulti(fAddcmulS_, v, g, g, 1 - beta2);
  const den = runMulti(fSqrt, v);
  runMulti(fDivS_, den, Math.sqrt(a['biasCorrection2'] as number));
  runMulti(fAddS_, den, a['eps'] as number);
  return { m, v, den };
}

/** The four input lists of an optimizer update kernel (params, grads, first and second moments). */
function updateLists(b: TorchBackend, inputs: NamedTensorInfoMap, n: number) {
  return { p: list(b, inputs, 'param', n), g0: list(b, inputs, 'grad', n), m0: list(b, inputs, 'expAvg', n), v0: list(b, inputs, 'expAvgSq', n) };
}

/** Whether the addon's native CPU optimizer runs this update (CPU device, not the tests' device-select path). */
function nativeCpu(b: TorchBackend): boolean {
  return b.device === 'cpu' && !selectOnDevice && typeof b.addon.optimCpu === 'function' && process.env['SPARK_TORCH_NATIVE_OPTIM'] !== '0';
}

/**
 * The update as the addon's CPU loops (one pass for the moments and the direction, one for the new weights, instead
 * of ~15 whole-tensor passes of _foreach_* operators, each a loop over the parameters on the CPU), on the scalars
 * that spark's TensorFlow ops take too (fused-optim-scalars.ts).
 */
function nativeUpdate(b: TorchBackend, kind: 0 | 1, inputs: NamedTensorInfoMap, a: NamedAttrMap): TensorInfo[] {
  const n = a['n'] as number;
  const { p, g0, m0, v0 } = updateLists(b, inputs, n);
  const hyper = nativeOptimizerScalars(kind === 0 ? 'lamb' : 'adamw', a as unknown as LambUpdateAttrs | AdamWUpdateAttrs);
  const clip = scalarInput(b, inputs, kind === 0 ? 'clipDiv' : 'clipCoef');
  const out = b.addon.optimCpu!(kind, [...p.h, ...g0.h, ...m0.h, ...v0.h], clip, hyper, scalarInput(b, inputs, 'apply'), !!a['adapt'], !!a['trustClip']);
  const shapes = [...p.t, ...m0.t, ...v0.t].map((t) => t.shape);
  return out.map((h, i) => b.make(h, shapes[i]!, 'float32'));
}

function lamb(b: TorchBackend, inputs: NamedTensorInfoMap, a: NamedAttrMap): TensorInfo[] {
  const n = a['n'] as number;
  if (n === 0) return [];
  if (nativeCpu(b)) return nativeUpdate(b, 0, inputs, a);
  const { p, g0, m0, v0 } = updateLists(b, inputs, n);
  const g = unitOnCpu(b, scalarInput(b, inputs, 'clipDiv')) ? g0.h : runMulti(fDivT, g0.h, scalarInput(b, inputs, 'clipDiv'));
  const { m, v, den } = moments(g, m0.h, v0.h, a);
  if (g !== g0.h) b.free(g);
  // u = (m/bc1)/den (+ wd·p) (× trust ratio)
  const u = runMulti(fDivS, m, a['biasCorrection1'] as number);
  runMulti(fDivL_, u, den);
  b.free(den);
  const wd = a['weightDecay'] as number;
  if (wd !== 0) runMulti(fAddL_, u, p.h, wd);
  if (a['adapt']) {
    // trust ratio r = ‖p‖/‖u‖ where both are > 0, else 1 (min(r, 1) with trustClip), per parameter
    const single: number[] = [];
    const wn = runMulti(fNorm, p.h, 2);
    const un = runMulti(fNorm, u, 2);
    const W = run(stack, wn, 0);
    const U = run(stack, un, 0);
    b.free(wn);
    b.free(un);
    const okW = run(gtScalar, W, 0);
    const okU = run(gtScalar, U, 0);
    const ok = run(logicalAnd, okW, okU);
    const Usafe = run(whereScalarOther, ok, U, 1);
    const ratio = run(div, W, Usafe);
    let trust = run(whereScalarOther, ok, ratio, 1);
    single.push(W, U, okW, okU, ok, Usafe, ratio);
    if (a['trustClip']) {
      single.push(trust);
      trust = run(clampMax, trust, 1);
    }
    single.push(trust);
    const ts = runMulti(unbind, trust, 0);
    runMulti(fMulL_, u, ts);
    b.free(ts);
    b.free(single);
  }
  const pn = runMulti(fAddL, p.h, u, -(a['lr'] as number));
  b.free(u);
  return select(b, scalarInput(b, inputs, 'apply'), [pn, m, v], [p.t, m0.t, v0.t]);
}

function adamw(b: TorchBackend, inputs: NamedTensorInfoMap, a: NamedAttrMap): TensorInfo[] {
  const n = a['n'] as number;
  if (n === 0) return [];
  if (nativeCpu(b)) return nativeUpdate(b, 1, inputs, a);
  const { p, g0, m0, v0 } = updateLists(b, inputs, n);
  const lr = a['lr'] as number;
  const wd = a['weightDecay'] as number;
  const step = -(lr / (a['biasCorrection1'] as number));
  const g = unitOnCpu(b, scalarInput(b, inputs, 'clipCoef')) ? g0.h : runMulti(fMulT, g0.h, scalarInput(b, inputs, 'clipCoef'));
  const { m, v, den } = moments(g, m0.h, v0.h, a);
  if (g !== g0.h) b.free(g);
  const r = runMulti(fDivL, m, den);
  b.free(den);
  let pn: number[];
  if (wd !== 0) {
    pn = runMulti(fMulS, p.h, 1 - lr * wd);
    runMulti(fAddL_, pn, r, step);
  } else {
    pn = runMulti(fAddL, p.h, r, step);
  }
  b.free(r);
  return select(b, scalarInput(b, inputs, 'apply'), [pn, m, v], [p.t, m0.t, v0.t]);
}

function globalNorm(b: TorchBackend, inputs: NamedTensorInfoMap, a: NamedAttrMap): TensorInfo {
  const n = a['n'] as number;
  if (n === 0) return b.make(run(full, [], 0, DT.float32), [], 'float32');
  const g = list(b, inputs, 'grad', n);
  if (nativeCpu(b)) return b.make(b.addon.globalNormCpu!(g.h), [], 'float32');
  const norms = runMulti(fNorm, g.h, 2);
  const s = run(stack, norms, 0);
  const r = run(vectorNorm, s, 2, false);
  b.free(norms);
  b.free(s);
  return b.make(r, [], 'float32');
}

export const optimKernels: KernelConfig[] = [
  kernel('SparkGlobalNorm', globalNorm),
  kernel('SparkLambUpdate', lamb),
  kernel('SparkAdamWUpdate', adamw),
];
