/**
 * spark's fused optimizer kernels (contract: header of src/train/fused-optim.ts, /work/wt/notes/FUSED-CONTRACT.md)
 * on ATen's `_foreach_*` operators: one call per step of the update over all parameters of a group instead of one
 * per parameter. `apply` (a bool scalar on the device) selects new or old values with `where`, so a skipped step
 * (non-finite loss) leaves every tensor bit for bit and nothing is read back to the host.
 *
 * SparkGlobalNorm: √(Σᵢ‖gᵢ‖²) = ‖(‖g₀‖, …, ‖gₙ₋₁‖)‖ (_foreach_norm, stack, linalg_vector_norm).
 * SparkLambUpdate / SparkAdamWUpdate: timm 0.5.4's arithmetic, see the contract.
 */
import type { KernelConfig, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import { aten, run, runMulti, DT } from '../addon.js';
import type { TorchBackend } from '../backend.js';
import { kernel } from './util.js';

const fNorm = aten('_foreach_norm', 'Scalar', 'Lsn');
const fMulS = aten('_foreach_mul', 'Scalar', 'Ls');
const fMulL = aten('_foreach_mul', 'List', 'LL');
const fMulT = aten('_foreach_mul', 'Tensor', 'LT');
const fDivS = aten('_foreach_div', 'Scalar', 'Ls');
const fDivL = aten('_foreach_div', 'List', 'LL');
const fDivT = aten('_foreach_div', 'Tensor', 'LT');
const fAddS = aten('_foreach_add', 'Scalar', 'Ls');
const fAddL = aten('_foreach_add', 'List', 'LLs');
const fAddcmulS = aten('_foreach_addcmul', 'Scalar', 'LLLs');
const fSqrt = aten('_foreach_sqrt', '', 'L');
const stack = aten('stack', '', 'Li');
const unbind = aten('unbind', 'int', 'Ti');
const vectorNorm = aten('linalg_vector_norm', '', 'Tsnbn');
const gtScalar = aten('gt', 'Scalar', 'Ts');
const logicalAnd = aten('logical_and', '', 'TT');
const whereSelf = aten('where', 'self', 'TTT');
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

/** where(apply, new, old) per tensor; the outputs in the contract's order. */
function select(b: TorchBackend, apply: number, fresh: number[][], old: TensorInfo[][]): TensorInfo[] {
  const out: TensorInfo[] = [];
  for (let k = 0; k < fresh.length; k++) {
    for (let i = 0; i < fresh[k]!.length; i++) {
      const o = old[k]![i]!;
      out.push(b.make(run(whereSelf, apply, fresh[k]![i]!, b.h(o)), o.shape, 'float32'));
    }
  }
  return out;
}

/** m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g², u = (m/bc1)/(√v/√bc2 + eps); every intermediate list goes to `tmp`. */
function moments(g: number[], m0: number[], v0: number[], a: NamedAttrMap, tmp: number[][]): { m: number[]; v: number[]; q: number[] } {
  const beta1 = a['beta1'] as number;
  const beta2 = a['beta2'] as number;
  const m1 = runMulti(fMulS, m0, beta1);
  const m = runMulti(fAddL, m1, g, 1 - beta1);
  const v1 = runMulti(fMulS, v0, beta2);
  const v = runMulti(fAddcmulS, v1, g, g, 1 - beta2);
  const sq = runMulti(fSqrt, v);
  const d1 = runMulti(fDivS, sq, Math.sqrt(a['biasCorrection2'] as number));
  const den = runMulti(fAddS, d1, a['eps'] as number);
  tmp.push(m1, v1, sq, d1, den);
  return { m, v, q: den };
}

function lamb(b: TorchBackend, inputs: NamedTensorInfoMap, a: NamedAttrMap): TensorInfo[] {
  const n = a['n'] as number;
  if (n === 0) return [];
  const p = list(b, inputs, 'param', n);
  const g0 = list(b, inputs, 'grad', n);
  const m0 = list(b, inputs, 'expAvg', n);
  const v0 = list(b, inputs, 'expAvgSq', n);
  const tmp: number[][] = [];
  const single: number[] = [];
  const g = runMulti(fDivT, g0.h, scalarInput(b, inputs, 'clipDiv'));
  tmp.push(g);
  const { m, v, q: den } = moments(g, m0.h, v0.h, a, tmp);
  const mb = runMulti(fDivS, m, a['biasCorrection1'] as number);
  let u = runMulti(fDivL, mb, den);
  tmp.push(mb);
  const wd = a['weightDecay'] as number;
  if (wd !== 0) {
    tmp.push(u);
    u = runMulti(fAddL, u, p.h, wd);
  }
  if (a['adapt']) {
    // trust ratio r = ‖p‖/‖u‖ where both are > 0, else 1 (min(r, 1) with trustClip), per parameter
    const wn = runMulti(fNorm, p.h, 2);
    const un = runMulti(fNorm, u, 2);
    tmp.push(wn, un);
    const W = run(stack, wn, 0);
    const U = run(stack, un, 0);
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
    tmp.push(ts, u);
    u = runMulti(fMulL, u, ts);
  }
  const pn = runMulti(fAddL, p.h, u, -(a['lr'] as number));
  tmp.push(u);
  const out = select(b, scalarInput(b, inputs, 'apply'), [pn, m, v], [p.t, m0.t, v0.t]);
  tmp.push(pn, m, v);
  b.free(tmp.flat());
  b.free(single);
  return out;
}

function adamw(b: TorchBackend, inputs: NamedTensorInfoMap, a: NamedAttrMap): TensorInfo[] {
  const n = a['n'] as number;
  if (n === 0) return [];
  const p = list(b, inputs, 'param', n);
  const g0 = list(b, inputs, 'grad', n);
  const m0 = list(b, inputs, 'expAvg', n);
  const v0 = list(b, inputs, 'expAvgSq', n);
  const tmp: number[][] = [];
  const lr = a['lr'] as number;
  const wd = a['weightDecay'] as number;
  const g = runMulti(fMulT, g0.h, scalarInput(b, inputs, 'clipCoef'));
  tmp.push(g);
  let decayed = p.h;
  if (wd !== 0) {
    decayed = runMulti(fMulS, p.h, 1 - lr * wd);
    tmp.push(decayed);
  }
  const { m, v, q: den } = moments(g, m0.h, v0.h, a, tmp);
  const r = runMulti(fDivL, m, den);
  const pn = runMulti(fAddL, decayed, r, -(lr / (a['biasCorrection1'] as number)));
  const out = select(b, scalarInput(b, inputs, 'apply'), [pn, m, v], [p.t, m0.t, v0.t]);
  tmp.push(r, pn, m, v);
  b.free(tmp.flat());
  return out;
}

function globalNorm(b: TorchBackend, inputs: NamedTensorInfoMap, a: NamedAttrMap): TensorInfo {
  const n = a['n'] as number;
  if (n === 0) return b.make(run(full, [], 0, DT.float32), [], 'float32');
  const g = list(b, inputs, 'grad', n);
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
