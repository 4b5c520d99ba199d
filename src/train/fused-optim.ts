/**
 * The fused optimizer update of `optimizers.ts` (issue 12 item 2): LAMB and AdamW in as few kernel calls as the
 * backend allows, with the global gradient norm, the clip factor, the trust ratios and the skip of a non-finite
 * step all kept on the device (nothing here reads a tensor back).
 *
 * Two implementations of the same arithmetic (timm 0.5.4 `Lamb` / `AdamW`, see optimizers.ts):
 *
 * 1. **Backend kernels** (a backend that registers them, e.g. the libtorch backend with ATen's `_foreach_*` ops).
 *    The optimizer keeps one moment pair per parameter and makes one kernel call per parameter group; dispatch is
 *    `tf.getKernel(NAME, tf.getBackend())` → `tf.engine().runKernel(NAME, inputs, attrs)`, as for the fused model
 *    ops (src/models/fused.ts), checked when the optimizer is built. All tensors float32 except `apply` (bool);
 *    `n` = parameters in the call (n ≥ 1); inputs are named with their index i = 0 … n−1:
 *
 * | kernel | inputs | attrs | outputs |
 * |---|---|---|---|
 * | `SparkGlobalNorm` | `grad0 … grad{n−1}` (any shapes) | `n` | scalar √(Σᵢ Σ gᵢ²) |
 * | `SparkLambUpdate` | `param{i}`, `grad{i}`, `expAvg{i}`, `expAvgSq{i}` (each param's shape), `clipDiv` (scalar ≥ 1), `apply` (bool scalar) | `n`, `lr`, `weightDecay`, `beta1`, `beta2`, `eps`, `biasCorrection1`, `biasCorrection2`, `adapt` (bool), `trustClip` (bool) | `param'0 … param'{n−1}`, `expAvg'0 …`, `expAvgSq'0 …` (3n tensors, in that order) |
 * | `SparkAdamWUpdate` | `param{i}`, `grad{i}`, `expAvg{i}`, `expAvgSq{i}`, `clipCoef` (scalar ≤ 1), `apply` (bool scalar) | `n`, `lr`, `weightDecay`, `beta1`, `beta2`, `eps`, `biasCorrection1`, `biasCorrection2` | as SparkLambUpdate |
 *
 *    Per parameter, with g the gradient, m / v the moments, bc1 / bc2 the bias corrections given (1 − β^t, or 1):
 *    - LAMB:  g ← g / clipDiv; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; u ← (m / bc1) / (√v / √bc2 + eps);
 *             if weightDecay ≠ 0: u ← u + weightDecay·p; if adapt: r ← ‖p‖/‖u‖ when both norms > 0, else 1
 *             (r ← min(r, 1) with trustClip), u ← r·u; p ← p − lr·u.
 *    - AdamW: g ← g·clipCoef; p ← p·(1 − lr·weightDecay) (only when weightDecay ≠ 0); m, v as LAMB;
 *             p ← p − (lr / bc1)·(m / (√v / √bc2 + eps)).
 *    - `apply` false: every output equals its input (the step is skipped on the device: a non-finite loss).
 *    Outputs are new tensors (a backend may compute them in place of copies of the inputs; the optimizer assigns
 *    them to its variables and drops the old ones). `lambReference` / `adamwReference` below are the reference
 *    implementations in plain tf ops (the tests register them as kernels to check the dispatch).
 *
 * 2. **Portable composite** (every other backend): the moments of a parameter group live in flat [rows, ROW]
 *    tensor pairs, one per block of about FLAT_BLOCK elements; each parameter occupies whole rows (its tail padded
 *    with zeros), so the per-parameter norms of the trust ratio are a row sum plus one segment sum
 *    (`SparseSegmentSum`, or `UnsortedSegmentSum`, or a split on backends with neither), and the trust ratio goes
 *    back to the rows with one gather. A step flattens the gradients and the parameters of each block (one Reshape
 *    per parameter of rank > 1, one Concat), runs the update as ~30 whole-block elementwise kernels (each temporary
 *    freed as soon as it is used), and splits the new parameters back (one SplitV, one Reshape per parameter of
 *    rank > 1): about 3 kernels per parameter plus ~35 per block, instead of ~25 per parameter.
 *
 * Elementwise arithmetic is the same in both (and as in the per-parameter code this replaced); sums of squares run
 * in a different order (flat reductions), so norms agree to float32 rounding.
 */
import * as tf from '@tensorflow/tfjs';

export const GLOBAL_NORM_KERNEL = 'SparkGlobalNorm';
export const LAMB_UPDATE_KERNEL = 'SparkLambUpdate';
export const ADAMW_UPDATE_KERNEL = 'SparkAdamWUpdate';

import type { AdamWUpdateAttrs, LambUpdateAttrs } from '../backend/fused-optim-scalars.js';

export type { AdamWUpdateAttrs, LambUpdateAttrs };

/** True when the active backend registers a kernel under `name`. */
export function backendHasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) != null;
}

/** Select with inputs of one shape (a direct kernel call: `tf.where` would clone each operand first). */
function select(cond: tf.Tensor, t: tf.Tensor, e: tf.Tensor): tf.Tensor {
  return tf.engine().runKernel('Select', { condition: cond, t, e }) as tf.Tensor;
}

// ------------------------------------------------------------------------------------- per-parameter (reference)

/** Named inputs of one group update: `param{i}`, `grad{i}`, `expAvg{i}`, `expAvgSq{i}` and the scalars. */
export function groupInputs(
  params: tf.Tensor[],
  grads: tf.Tensor[],
  m: tf.Tensor[],
  v: tf.Tensor[],
  scalars: Record<string, tf.Tensor>,
): tf.NamedTensorMap {
  const inputs: tf.NamedTensorMap = {};
  params.forEach((p, i) => {
    inputs[`param${i}`] = p;
    inputs[`grad${i}`] = grads[i]!;
    inputs[`expAvg${i}`] = m[i]!;
    inputs[`expAvgSq${i}`] = v[i]!;
  });
  return { ...inputs, ...scalars };
}

/** Kernel inputs as the engine passes them (Tensors), or TensorInfos. */
export type KernelInputs = Record<string, tf.TensorInfo | undefined>;

function input(inputs: KernelInputs, name: string): tf.Tensor {
  const t = inputs[name];
  if (!t) throw new Error(`fused optimizer: input ${name} missing`);
  return t instanceof tf.Tensor ? t : tf.engine().makeTensorFromDataId(t.dataId, t.shape, t.dtype);
}

/**
 * Σ x² in two levels (the last axis, then the rest): a one-pass float32 sum of a large tensor is far off on some
 * backends (wasm: 4e-4 relative over 1 M values, against 1e-8 in two levels).
 */
export function sumOfSquares(x: tf.Tensor): tf.Scalar {
  return tf.tidy(() => (x.rank <= 1 ? tf.sum(tf.square(x)) : tf.sum(tf.sum(tf.square(x), -1))) as tf.Scalar);
}

/** Reference `SparkGlobalNorm`: √(Σᵢ ‖gradᵢ‖²). */
export function globalNormReference(inputs: KernelInputs, attrs: { n: number }): tf.Scalar {
  return tf.tidy(() => {
    if (attrs.n === 0) return tf.scalar(0);
    const sq: tf.Tensor[] = [];
    for (let i = 0; i < attrs.n; i++) sq.push(sumOfSquares(input(inputs, `grad${i}`)));
    return tf.sqrt(sq.length === 1 ? sq[0]! : tf.addN(sq)) as tf.Scalar;
  });
}

/** Reference `SparkLambUpdate` (per parameter, plain tf ops). Returns the 3n outputs. */
export function lambReference(inputs: KernelInputs, a: LambUpdateAttrs): tf.Tensor[] {
  return tf.tidy(() => {
    const clipDiv = input(inputs, 'clipDiv');
    const apply = input(inputs, 'apply');
    const ps: tf.Tensor[] = [];
    const ms: tf.Tensor[] = [];
    const vs: tf.Tensor[] = [];
    for (let i = 0; i < a.n; i++) {
      const p = input(inputs, `param${i}`);
      const g = tf.div(input(inputs, `grad${i}`), clipDiv);
      const m0 = input(inputs, `expAvg${i}`);
      const v0 = input(inputs, `expAvgSq${i}`);
      const m = tf.add(tf.mul(m0, a.beta1), tf.mul(g, 1 - a.beta1));
      const v = tf.add(tf.mul(v0, a.beta2), tf.mul(tf.square(g), 1 - a.beta2));
      const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(a.biasCorrection2)), a.eps);
      let u: tf.Tensor = tf.div(tf.div(m, a.biasCorrection1), denom);
      if (a.weightDecay !== 0) u = tf.add(u, tf.mul(p, a.weightDecay));
      if (a.adapt) {
        const wNorm = tf.sqrt(sumOfSquares(p));
        const uNorm = tf.sqrt(sumOfSquares(u));
        const ok = tf.logicalAnd(tf.greater(wNorm, 0), tf.greater(uNorm, 0));
        let trust: tf.Tensor = tf.where(ok, tf.div(wNorm, tf.where(ok, uNorm, tf.onesLike(uNorm))), tf.onesLike(wNorm));
        if (a.trustClip) trust = tf.minimum(trust, 1);
        u = tf.mul(u, trust);
      }
      ps.push(tf.where(apply, tf.sub(p, tf.mul(u, a.lr)), p));
      ms.push(tf.where(apply, m, m0));
      vs.push(tf.where(apply, v, v0));
    }
    return [...ps, ...ms, ...vs];
  });
}

/** Reference `SparkAdamWUpdate` (per parameter, plain tf ops). Returns the 3n outputs. */
export function adamwReference(inputs: KernelInputs, a: AdamWUpdateAttrs): tf.Tensor[] {
  return tf.tidy(() => {
    const coef = input(inputs, 'clipCoef');
    const apply = input(inputs, 'apply');
    const ps: tf.Tensor[] = [];
    const ms: tf.Tensor[] = [];
    const vs: tf.Tensor[] = [];
    for (let i = 0; i < a.n; i++) {
      const p = input(inputs, `param${i}`);
      const m0 = input(inputs, `expAvg${i}`);
      const v0 = input(inputs, `expAvgSq${i}`);
      const decayed = a.weightDecay !== 0 ? tf.mul(p, 1 - a.lr * a.weightDecay) : p;
      const g = tf.mul(input(inputs, `grad${i}`), coef);
      const m = tf.add(tf.mul(m0, a.beta1), tf.mul(g, 1 - a.beta1));
      const v = tf.add(tf.mul(v0, a.beta2), tf.mul(tf.square(g), 1 - a.beta2));
      const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(a.biasCorrection2)), a.eps);
      ps.push(tf.where(apply, tf.sub(decayed, tf.mul(tf.div(m, denom), a.lr / a.biasCorrection1)), p));
      ms.push(tf.where(apply, m, m0));
      vs.push(tf.where(apply, v, v0));
    }
    return [...ps, ...ms, ...vs];
  });
}

/** `kernelFunc` of a reference implementation, for `tf.registerKernel` (tests; a template for backend authors). */
export function referenceKernelConfig(name: typeof GLOBAL_NORM_KERNEL | typeof LAMB_UPDATE_KERNEL | typeof ADAMW_UPDATE_KERNEL, backendName: string): tf.KernelConfig {
  return {
    kernelName: name,
    backendName,
    kernelFunc: ({ inputs, attrs }) => {
      const a = attrs as unknown;
      if (name === GLOBAL_NORM_KERNEL) return globalNormReference(inputs, a as { n: number });
      return name === LAMB_UPDATE_KERNEL ? lambReference(inputs, a as LambUpdateAttrs) : adamwReference(inputs, a as AdamWUpdateAttrs);
    },
  };
}

// --------------------------------------------------------------------------------------------- flat (portable)

/** Elements per row of the flat layout: each parameter is padded to whole rows. */
export const ROW = 256;

/**
 * Elements per flat block (4 MiB): the optimizer splits a group into blocks of about this size. Whole-group tensors
 * of a large model (50 M parameters: 200 MB each) ran about twice slower on the tensorflow CPU backend than the same
 * arithmetic in blocks of ~1 M elements (fresh large allocations, caches); the kernel count grows by ~30 per block.
 */
export const FLAT_BLOCK = 1 << 20;

type SegmentSum = 'unsorted' | 'sparse' | 'split';

/**
 * Where each parameter of a group lives in the flat [rows, ROW] layout, plus the constant tensors the composite
 * needs (segment ids, zero pads, ones). Owns those tensors: `dispose()` frees them.
 */
export class FlatLayout {
  readonly shapes: number[][];
  readonly sizes: number[];
  /** Rows of each parameter (its size rounded up to whole rows). */
  readonly rowsOf: number[];
  /** First row of each parameter. */
  readonly rowStart: number[];
  readonly rows: number;
  private readonly segIds: tf.Tensor1D;
  private range: tf.Tensor1D | null = null;
  private readonly pads = new Map<number, tf.Tensor1D>();
  private readonly onesP: tf.Tensor2D;
  private validMask: tf.Tensor | null = null;

  /** `maskPadding`: make the padding mask now (LAMB with eps = 0 needs it); every constant is made here. */
  constructor(shapes: readonly (readonly number[])[], opts: { maskPadding?: boolean } = {}) {
    this.shapes = shapes.map((s) => s.slice());
    this.sizes = this.shapes.map((s) => s.reduce((a, b) => a * b, 1));
    this.rowsOf = this.sizes.map((n) => Math.max(1, Math.ceil(n / ROW)));
    this.rowStart = [];
    let r = 0;
    for (const k of this.rowsOf) {
      this.rowStart.push(r);
      r += k;
    }
    this.rows = r;
    const ids = new Int32Array(this.rows);
    this.rowsOf.forEach((k, i) => ids.fill(i, this.rowStart[i]!, this.rowStart[i]! + k));
    this.segIds = tf.keep(tf.tensor1d(ids, 'int32'));
    this.onesP = tf.keep(tf.ones([this.shapes.length, 1]));
    for (let i = 0; i < this.sizes.length; i++) {
      const pad = this.padOf(i);
      if (pad > 0 && !this.pads.has(pad)) this.pads.set(pad, tf.keep(tf.zeros([pad]) as tf.Tensor1D));
    }
    if (segmentSumKind() === 'sparse') this.range = tf.keep(tf.range(0, this.rows, 1, 'int32') as tf.Tensor1D);
    if (opts.maskPadding) this.valid();
  }

  get numParams(): number {
    return this.shapes.length;
  }

  padOf(i: number): number {
    return this.rowsOf[i]! * ROW - this.sizes[i]!;
  }

  /** One [rows, ROW] tensor of the given tensors (each of its parameter's shape); `undefined` → zeros. */
  flatten(ts: readonly (tf.Tensor | undefined)[]): tf.Tensor2D {
    const pieces: tf.Tensor[] = [];
    ts.forEach((t, i) => {
      const piece = t === undefined ? tf.zeros([this.sizes[i]!]) : t.rank === 1 ? t : tf.reshape(t, [-1]);
      pieces.push(piece);
      const pad = this.padOf(i);
      if (pad > 0) pieces.push(this.pads.get(pad)!);
    });
    const flat = pieces.length === 1 ? pieces[0]! : tf.concat(pieces, 0);
    return tf.reshape(flat, [this.rows, ROW]);
  }

  /** The parameters' tensors back from a [rows, ROW] tensor. */
  unflatten(flat: tf.Tensor): tf.Tensor[] {
    const sizes: number[] = [];
    const which: number[] = [];
    this.sizes.forEach((n, i) => {
      which.push(sizes.length);
      sizes.push(n);
      const pad = this.padOf(i);
      if (pad > 0) sizes.push(pad);
    });
    const line = tf.reshape(flat, [-1]);
    const parts = sizes.length === 1 ? [line] : tf.split(line, sizes, 0);
    return which.map((j, i) => (this.shapes[i]!.length === 1 ? parts[j]! : tf.reshape(parts[j]!, this.shapes[i]!)));
  }

  /** Σ x² per parameter, [numParams, 1] (padding is zero, or masked by the caller). */
  sumSquares(x: tf.Tensor2D): tf.Tensor2D {
    const rowSums = tf.sum(tf.square(x), 1, true) as tf.Tensor2D;
    const P = this.numParams;
    switch (segmentSumKind()) {
      case 'unsorted':
        return tf.unsortedSegmentSum(rowSums, this.segIds, P);
      case 'sparse':
        this.range ??= tf.keep(tf.range(0, this.rows, 1, 'int32') as tf.Tensor1D);
        return tf.sparse.sparseSegmentSum(rowSums, this.range, this.segIds) as tf.Tensor2D;
      default: {
        if (P === 1) return tf.sum(rowSums, 0, true) as tf.Tensor2D;
        const parts = tf.split(rowSums, this.rowsOf, 0);
        return tf.concat(parts.map((t) => tf.sum(t, 0, true)), 0) as tf.Tensor2D;
      }
    }
  }

  /** A per-parameter [numParams, 1] tensor spread over the rows: [rows, 1]. */
  toRows(perParam: tf.Tensor2D): tf.Tensor2D {
    return tf.gather(perParam, this.segIds, 0) as tf.Tensor2D;
  }

  /** [numParams, 1] ones (constant). */
  get ones(): tf.Tensor2D {
    return this.onesP;
  }

  /** Bool [rows, ROW]: true at parameter elements, false at padding (constant, made on first use). */
  valid(): tf.Tensor {
    if (!this.validMask) {
      const mask = new Uint8Array(this.rows * ROW);
      this.sizes.forEach((n, i) => mask.fill(1, this.rowStart[i]! * ROW, this.rowStart[i]! * ROW + n));
      this.validMask = tf.keep(tf.tensor2d(mask, [this.rows, ROW], 'bool'));
    }
    return this.validMask;
  }

  /** A [rows, ROW] bool condition: `rowsOn[i]` for parameter i's rows, and `apply` (a bool scalar) when given. */
  condition(paramsOn: readonly boolean[] | null, apply: tf.Tensor | null): tf.Tensor | null {
    if (paramsOn === null && apply === null) return null;
    let c: tf.Tensor;
    if (paramsOn === null) {
      c = tf.reshape(apply!, [1, 1]);
    } else {
      const rows = new Uint8Array(this.rows);
      paramsOn.forEach((on, i) => on && rows.fill(1, this.rowStart[i]!, this.rowStart[i]! + this.rowsOf[i]!));
      c = tf.tensor2d(rows, [this.rows, 1], 'bool');
      if (apply) c = tf.logicalAnd(c, apply);
    }
    return tf.tile(c, [c.shape[0] === 1 ? this.rows : 1, ROW]);
  }

  /** Copy of the flat data of parameter i out of a [rows·ROW] array. */
  slice(data: Float32Array, i: number): Float32Array {
    const s = this.rowStart[i]! * ROW;
    return data.slice(s, s + this.sizes[i]!);
  }

  dispose(): void {
    tf.dispose([this.segIds, this.onesP, ...this.pads.values()]);
    if (this.range) this.range.dispose();
    if (this.validMask) this.validMask.dispose();
    this.pads.clear();
  }
}

/**
 * How a backend sums rows per parameter. SparseSegmentSum first: the cpu backend's UnsortedSegmentSum multiplies
 * by a one-hot mask per segment (O(params × rows), and a NaN in one parameter's rows would reach every sum).
 */
function segmentSumKind(): SegmentSum {
  if (backendHasKernel('SparseSegmentSum')) return 'sparse';
  if (backendHasKernel('UnsortedSegmentSum')) return 'unsorted';
  return 'split';
}

/** Constant scalars of an optimizer (uploaded once, not per step). */
export interface OptimizerConstants {
  beta1: tf.Scalar;
  oneMinusBeta1: tf.Scalar;
  beta2: tf.Scalar;
  oneMinusBeta2: tf.Scalar;
  eps: tf.Scalar;
  zero: tf.Scalar;
  one: tf.Scalar;
  yes: tf.Scalar;
}

export function makeConstants(beta1: number, beta2: number, eps: number): OptimizerConstants {
  return tf.tidy(() => {
    const c = {
      beta1: tf.scalar(beta1),
      oneMinusBeta1: tf.scalar(1 - beta1),
      beta2: tf.scalar(beta2),
      oneMinusBeta2: tf.scalar(1 - beta2),
      eps: tf.scalar(eps),
      zero: tf.scalar(0),
      one: tf.scalar(1),
      yes: tf.scalar(true, 'bool'),
    };
    for (const t of Object.values(c)) tf.keep(t);
    return c;
  });
}

/**
 * `f()` in its own scope (its temporaries are freed at once), then `drop` disposed: the flat tensors are as large as
 * a whole parameter group, so the composite frees each one as soon as the next needs it no longer.
 */
function then<T extends tf.Tensor>(f: () => T, ...drop: Array<tf.Tensor | null>): T {
  const out = tf.tidy(f);
  for (const d of drop) d?.dispose();
  return out;
}

/** The Adam moments of a flat group: m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g² (`g` disposed unless kept). */
function moments(c: OptimizerConstants, g: tf.Tensor, m0: tf.Tensor, v0: tf.Tensor, keepG: boolean): { m: tf.Tensor; v: tf.Tensor } {
  const m = tf.tidy(() => tf.add(tf.mul(m0, c.beta1), tf.mul(g, c.oneMinusBeta1)));
  const v = then(() => tf.add(tf.mul(v0, c.beta2), tf.mul(tf.square(g), c.oneMinusBeta2)), keepG ? null : g);
  return { m, v };
}

/** √v / √bc2 + eps. */
function adamDenominator(c: OptimizerConstants, v: tf.Tensor, biasCorrection2: number): tf.Tensor {
  return tf.tidy(() => tf.add(tf.div(tf.sqrt(v), Math.sqrt(biasCorrection2)), c.eps));
}

/** The new values where `cond`, the old ones elsewhere (new ones disposed). */
function selected(cond: tf.Tensor | null, s: FlatState, out: { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor }): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor } {
  if (!cond) return out;
  return {
    p: then(() => select(cond, out.p, s.p), out.p),
    m: then(() => select(cond, out.m, s.m), out.m),
    v: then(() => select(cond, out.v, s.v), out.v),
  };
}

export interface FlatState {
  p: tf.Tensor2D;
  g: tf.Tensor2D;
  m: tf.Tensor;
  v: tf.Tensor;
}

/**
 * LAMB on a flat group (see the header); `clipDiv` null = no clipping, `cond` null = apply everywhere.
 * Returns the new [rows, ROW] parameters and moments (the state's tensors are not disposed).
 */
export function lambFlat(L: FlatLayout, c: OptimizerConstants, s: FlatState, clipDiv: tf.Tensor | null, cond: tf.Tensor | null, a: LambUpdateAttrs): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor } {
  const g = clipDiv ? tf.div(s.g, clipDiv) : s.g;
  const { m, v } = moments(c, g, s.m, s.v, g === s.g);
  const denom = adamDenominator(c, v, a.biasCorrection2);
  let u = then(() => tf.div(tf.div(m, a.biasCorrection1), denom), denom);
  if (a.weightDecay !== 0) u = then(() => tf.add(u, tf.mul(s.p, a.weightDecay)), u);
  if (a.adapt) {
    // padding: p = g = m = v = 0 there, so u = 0 unless eps = 0 (0/0): mask it then
    if (a.eps === 0) u = then(() => select(L.valid(), u, tf.zerosLike(u)), u);
    const trustRows = tf.tidy(() => {
      const wNorm = tf.sqrt(L.sumSquares(s.p));
      const uNorm = tf.sqrt(L.sumSquares(u as tf.Tensor2D));
      const ok = tf.logicalAnd(tf.greater(wNorm, c.zero), tf.greater(uNorm, c.zero));
      let trust: tf.Tensor = select(ok, tf.div(wNorm, select(ok, uNorm, L.ones)), L.ones);
      if (a.trustClip) trust = tf.minimum(trust, c.one);
      return L.toRows(trust as tf.Tensor2D);
    });
    u = then(() => tf.mul(u, trustRows), u, trustRows);
  }
  const p = then(() => tf.sub(s.p, tf.mul(u, a.lr)), u);
  return selected(cond, s, { p, m, v });
}

/** AdamW on a flat group (see the header); `clipCoef` null = no clipping, `cond` null = apply everywhere. */
export function adamwFlat(c: OptimizerConstants, s: FlatState, clipCoef: tf.Tensor | null, cond: tf.Tensor | null, a: AdamWUpdateAttrs): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor } {
  const g = clipCoef ? tf.mul(s.g, clipCoef) : s.g;
  const { m, v } = moments(c, g, s.m, s.v, g === s.g);
  const denom = adamDenominator(c, v, a.biasCorrection2);
  const step = then(() => tf.mul(tf.div(m, denom), a.lr / a.biasCorrection1), denom);
  const p = then(() => tf.sub(a.weightDecay !== 0 ? tf.mul(s.p, 1 - a.lr * a.weightDecay) : s.p, step), step);
  return selected(cond, s, { p, m, v });
}
