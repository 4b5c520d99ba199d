/**
 * Optimizers of the pre-training and fine-tuning recipes, on tf ops with moments held in tf.Variables:
 *
 * - LAMB exactly as timm 0.5.4 `Lamb` (spec §6.5): global grad-norm clip inside the optimizer (applied to the
 *   gradients before the moment updates), per-group step counter and bias correction, trust ratio ||p||/||u|| (1 when
 *   either norm is 0) only for groups whose weight decay is non-zero (or every group with `alwaysAdapt`), plain Adam
 *   step otherwise, then `p ← p − lr·u`. The fine-tuning variant (spec §7.2) is `{ alwaysAdapt: true,
 *   biasCorrection: false, maxGradNorm: 1e7 }`.
 * - AdamW as timm 0.5.4 `AdamW`: decoupled decay `p ← p·(1 − lr·wd)`, then a bias-corrected Adam step; optional
 *   global clip in the manner of `torch.nn.utils.clip_grad_norm_`.
 *
 * Parameters are split into groups per spec §6.4 (decay / no_decay, optionally crossed with an lr scale for layer-wise
 * decay). Each group's effective hyper-parameters are `lr·lrScale` and `wd·weightDecayScale`.
 *
 * The update itself is fused (fused-optim.ts): one kernel per group on a backend that registers `SparkLambUpdate` /
 * `SparkAdamWUpdate` (moments per parameter), else the portable composite over flat moments, per group in blocks
 * of ~1 M elements (about three kernel calls per parameter plus ~35 per block). `update()` reads nothing back: the gradient norm stays a tensor, and a bool scalar
 * `applyIf` skips the step on the device (a non-finite loss); `apply()` is `update()` plus one read of the norm.
 */
import * as tf from '@tensorflow/tfjs';
import { f32, toFloat32, type SafeTensor } from '../util/safetensors.js';
import {
  ADAMW_UPDATE_KERNEL,
  FLAT_BLOCK,
  FlatLayout,
  GLOBAL_NORM_KERNEL,
  LAMB_UPDATE_KERNEL,
  ROW,
  adamwFlat,
  adamwReference,
  backendHasKernel,
  globalNormReference,
  groupInputs,
  lambFlat,
  lambReference,
  makeConstants,
  sumOfSquares,
  type AdamWUpdateAttrs,
  type FlatState,
  type LambUpdateAttrs,
  type OptimizerConstants,
} from './fused-optim.js';

/**
 * Split a group's parameters (sizes in order) into consecutive blocks of at most FLAT_BLOCK elements (a larger
 * parameter is a block of its own).
 */
function blockParams(sizes: number[]): number[][] {
  const blocks: number[][] = [];
  let cur: number[] = [];
  let n = 0;
  sizes.forEach((size, i) => {
    const padded = Math.max(1, Math.ceil(size / ROW)) * ROW;
    if (cur.length > 0 && n + padded > FLAT_BLOCK) {
      blocks.push(cur);
      cur = [];
      n = 0;
    }
    cur.push(i);
    n += padded;
  });
  if (cur.length > 0) blocks.push(cur);
  return blocks;
}

/** Where the optimizer keeps its moments (see fused-optim.ts); chosen from the backend's kernels unless given. */
export type OptimizerLayout = 'param' | 'flat';

export interface ParamEntry {
  name: string;
  variable: tf.Variable;
}

export interface ParamGroup {
  /** 'decay' | 'no_decay', suffixed `@<lrScale>` when an lr scale other than 1 applies. */
  name: string;
  params: ParamEntry[];
  /** 0 for the no_decay group, 1 otherwise (spec §6.3: group wd = current wd × scale). */
  weightDecayScale: number;
  /** Multiplier of the scheduled lr (layer-wise lr decay in fine-tuning; 1 in pre-training). */
  lrScale: number;
  /** Optimizer steps taken by this group (the reference keeps the counter in the param group). */
  step: number;
}

/** Spec §6.4: rank-1 tensors, names ending `.bias`, names containing mask_token / gamma / cls_token / pos_embed. */
export function isNoDecay(name: string, shape: readonly number[]): boolean {
  if (shape.length === 1) return true;
  if (name.endsWith('.bias')) return true;
  return ['cls_token', 'pos_embed', 'mask_token', 'gamma'].some((k) => name.includes(k));
}

export interface ParamGroupOptions {
  /** lr multiplier per parameter name (default 1 for all). */
  lrScale?: (name: string) => number;
  /** Override of the no-decay rule. */
  noDecay?: (name: string, shape: readonly number[]) => boolean;
}

/** Split parameters into groups; order follows the map's iteration order within each group. */
export function buildParamGroups(params: Map<string, tf.Variable>, opts: ParamGroupOptions = {}): ParamGroup[] {
  const noDecay = opts.noDecay ?? isNoDecay;
  const groups = new Map<string, ParamGroup>();
  for (const [name, variable] of params) {
    const nd = noDecay(name, variable.shape);
    const scale = opts.lrScale ? opts.lrScale(name) : 1;
    const key = (nd ? 'no_decay' : 'decay') + (scale !== 1 ? `@${scale}` : '');
    let g = groups.get(key);
    if (!g) {
      g = { name: key, params: [], weightDecayScale: nd ? 0 : 1, lrScale: scale, step: 0 };
      groups.set(key, g);
    }
    g.params.push({ name, variable });
  }
  // Deterministic order: decay groups first, then by name.
  return [...groups.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface LambOptions {
  betas?: [number, number];
  /** Default 1e-6 (timm Lamb). */
  eps?: number;
  /** Global grad-norm clip threshold; default 5 (SparK pre-training); 0 or Infinity disables. */
  maxGradNorm?: number;
  /** Default true (pre-training); false for the fine-tuning variant. */
  biasCorrection?: boolean;
  /** Apply the trust ratio to every group, also those without weight decay (fine-tuning variant). Default false. */
  alwaysAdapt?: boolean;
  /** Cap the trust ratio at 1 (timm trust_clip). Default false. */
  trustClip?: boolean;
  /** Moment layout; default: 'param' when the backend registers SparkLambUpdate, else 'flat'. */
  layout?: OptimizerLayout;
}

export interface AdamWOptions {
  betas?: [number, number];
  /** Default 1e-8 (timm AdamW). */
  eps?: number;
  /** Global grad-norm clip (clip_grad_norm_ semantics); 0 / undefined disables. */
  maxGradNorm?: number;
  /** Moment layout; default: 'param' when the backend registers SparkAdamWUpdate, else 'flat'. */
  layout?: OptimizerLayout;
}

/** Scheduled hyper-parameters of one update (before per-group scales). */
export interface StepHyper {
  lr: number;
  wd: number;
}

/** Serialisable optimizer state: moments by `<param>.exp_avg` / `<param>.exp_avg_sq`, step counters by group. */
export interface OptimizerState {
  kind: 'lamb' | 'adamw';
  groupSteps: Record<string, number>;
  tensors: Map<string, SafeTensor>;
}

export interface UpdateOptions {
  /** Bool scalar: where false (on the device), parameters and moments keep their values: a skipped step. */
  applyIf?: tf.Tensor;
  /**
   * The gradients are sums over this many micro-batches: divide them first (the same elementwise division the
   * caller would do, but one kernel per flat block instead of one per parameter). Default 1.
   */
  gradDivisor?: number;
}

/** What `update()` leaves: the norm as a tensor, and the undo of its host-side bookkeeping. */
export interface PendingUpdate {
  /** Global gradient norm before clipping (a scalar tensor the caller disposes). */
  gradNorm: tf.Scalar;
  /** Restore the group step counters of before this update (call it when `applyIf` turned out false). */
  revert(): void;
}

export interface SparkOptimizer {
  readonly kind: 'lamb' | 'adamw';
  readonly groups: ParamGroup[];
  /**
   * One update, dispatched without reading anything back (see `apply`, whose semantics it shares).
   */
  update(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper, opts?: UpdateOptions): PendingUpdate;
  /**
   * One update from gradients keyed by parameter name (a parameter without a gradient is skipped, as in PyTorch).
   * The gradients are not disposed. Returns the global gradient norm before clipping.
   */
  apply(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper): number;
  /** Copy of the state (reads the moments back from the backend). */
  getState(): OptimizerState;
  /** `getState` with asynchronous reads. */
  getStateAsync(): Promise<OptimizerState>;
  /** Restore a state written by getState (shapes checked). */
  setState(state: { groupSteps: Record<string, number>; tensors: Map<string, SafeTensor> }): void;
  dispose(): void;
}

let optimizerCount = 0;

interface Moments {
  m: tf.Variable;
  v: tf.Variable;
}

/** The flat moments of one block of a parameter group (portable layout, see fused-optim.ts). */
interface FlatBlock {
  layout: FlatLayout;
  /** Indices of the block's parameters in the group's list. */
  members: number[];
  m: tf.Variable;
  v: tf.Variable;
}

type Attrs = LambUpdateAttrs | AdamWUpdateAttrs;

abstract class BaseOptimizer implements SparkOptimizer {
  abstract readonly kind: 'lamb' | 'adamw';
  /** 'param': one moment pair per parameter, updated by the backend's fused kernel; 'flat': the portable layout. */
  readonly layout: OptimizerLayout;
  /** Moments per parameter ('param' layout). */
  protected moments = new Map<string, Moments>();
  /** Moments per group, in blocks of at most ~FLAT_BLOCK elements ('flat' layout). */
  protected flat: FlatBlock[][] = [];
  protected readonly consts: OptimizerConstants;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  /** Global grad-norm clip threshold; Infinity = no clipping (an option of 0 or less disables it). */
  readonly maxGradNorm: number;

  constructor(
    readonly groups: ParamGroup[],
    opts: { betas?: [number, number]; eps?: number; maxGradNorm?: number; layout?: OptimizerLayout },
    defaults: { eps: number; maxGradNorm: number },
    private readonly updateKernel: string,
  ) {
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? defaults.eps;
    const mg = opts.maxGradNorm ?? defaults.maxGradNorm;
    this.maxGradNorm = mg > 0 ? mg : Infinity;
    this.layout = opts.layout ?? (backendHasKernel(updateKernel) ? 'param' : 'flat');
    const uid = ++optimizerCount;
    const seen = new Set<string>();
    for (const g of groups) {
      for (const p of g.params) {
        if (seen.has(p.name)) throw new Error(`optimizer: parameter ${p.name} is in two groups`);
        seen.add(p.name);
      }
    }
    this.consts = makeConstants(this.beta1, this.beta2, this.eps);
    if (this.layout === 'param') {
      for (const g of groups) {
        for (const p of g.params) {
          // tidy disposes the zeros; the variables keep the data
          this.moments.set(
            p.name,
            tf.tidy(() => ({
              m: tf.variable(tf.zeros(p.variable.shape), false, `opt/${p.name}/exp_avg/${uid}`),
              v: tf.variable(tf.zeros(p.variable.shape), false, `opt/${p.name}/exp_avg_sq/${uid}`),
            })),
          );
        }
      }
    } else {
      this.flat = groups.map((g) =>
        blockParams(g.params.map((p) => p.variable.size)).map((members, bi) => {
          const layout = new FlatLayout(members.map((i) => g.params[i]!.variable.shape), { maskPadding: this.eps === 0 });
          const mv = tf.tidy(() => ({
            m: tf.variable(tf.zeros([layout.rows, ROW]), false, `opt/${g.name}/${bi}/exp_avg/${uid}`),
            v: tf.variable(tf.zeros([layout.rows, ROW]), false, `opt/${g.name}/${bi}/exp_avg_sq/${uid}`),
          }));
          return { layout, members, ...mv };
        }),
      );
    }
  }

  protected gradOf(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, name: string): tf.Tensor | undefined {
    return grads instanceof Map ? grads.get(name) : grads[name];
  }

  /** The clip factor from the global norm (null: clipping disabled); its name in the fused kernel's inputs. */
  protected abstract clipFactor(G: tf.Scalar): tf.Tensor | null;
  protected abstract readonly clipInput: 'clipDiv' | 'clipCoef';
  /** Count the group's step (timm LAMB: every group; AdamW: groups with a gradient). */
  protected abstract countsStep(hasGrad: boolean): boolean;
  protected abstract attrs(group: ParamGroup, hyper: StepHyper, n: number): Attrs;
  protected abstract flatUpdate(L: FlatLayout, s: FlatState, clip: tf.Tensor | null, cond: tf.Tensor | null, a: Attrs): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor };
  protected abstract reference(inputs: tf.NamedTensorMap, a: Attrs): tf.Tensor[];

  update(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper, opts: UpdateOptions = {}): PendingUpdate {
    const saved = this.groups.map((g) => g.step);
    const applyIf = opts.applyIf ?? null;
    const div = opts.gradDivisor ?? 1;
    const gradNorm = tf.tidy(() => (this.layout === 'flat' ? this.updateFlat(grads, hyper, applyIf, div) : this.updateParams(grads, hyper, applyIf, div)));
    return {
      gradNorm,
      revert: () => this.groups.forEach((g, i) => void (g.step = saved[i]!)),
    };
  }

  apply(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper): number {
    const { gradNorm } = this.update(grads, hyper);
    const n = gradNorm.dataSync()[0]!;
    gradNorm.dispose();
    return n;
  }

  private updateFlat(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper, applyIf: tf.Tensor | null, divisor: number): tf.Scalar {
    const present = this.groups.map((g) => g.params.map((p) => this.gradOf(grads, p.name)));
    // one flat gradient per block that has any; the global norm is one reduction per block + one AddN
    const gFlat = this.flat.map((blocks, gi) =>
      blocks.map((b) => {
        const gs = b.members.map((i) => present[gi]![i]);
        return gs.some(Boolean) ? tf.tidy(() => (divisor === 1 ? b.layout.flatten(gs) : tf.div(b.layout.flatten(gs), divisor) as tf.Tensor2D)) : null;
      }),
    );
    const G = tf.tidy(() => {
      const sq = gFlat.flat().filter((g): g is tf.Tensor2D => g !== null).map((g) => sumOfSquares(g));
      return (sq.length === 0 ? tf.scalar(0) : tf.sqrt(sq.length === 1 ? sq[0]! : tf.addN(sq))) as tf.Scalar;
    });
    const clip = this.clipFactor(G);
    // block by block, each whole-block temporary freed as soon as possible
    this.groups.forEach((group, gi) => {
      if (this.countsStep(present[gi]!.some(Boolean))) group.step += 1;
      const attrs = this.attrs(group, hyper, group.params.length);
      this.flat[gi]!.forEach((b, bi) => {
        const g = gFlat[gi]![bi];
        if (!g) return;
        const L = b.layout;
        const has = b.members.map((i) => present[gi]![i] !== undefined);
        const all = has.every(Boolean);
        const cond = all && applyIf === null ? null : tf.tidy(() => L.condition(all ? null : has, applyIf)!);
        const p = tf.tidy(() => L.flatten(b.members.map((i) => group.params[i]!.variable)));
        const out = this.flatUpdate(L, { p, g, m: b.m, v: b.v }, clip, cond, { ...attrs, n: b.members.length });
        tf.dispose([p, g, ...(cond ? [cond] : [])]);
        b.m.assign(out.m as tf.Tensor2D);
        b.v.assign(out.v as tf.Tensor2D);
        tf.tidy(() => L.unflatten(out.p).forEach((t, j) => has[j] && group.params[b.members[j]!]!.variable.assign(t)));
        tf.dispose([out.p, out.m, out.v]);
      });
    });
    return G;
  }

  private updateParams(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper, applyIf: tf.Tensor | null, divisor: number): tf.Scalar {
    const present = this.groups.map((g) => g.params.filter((p) => this.gradOf(grads, p.name)));
    const gradOf = new Map(present.flat().map((p) => {
      const g = this.gradOf(grads, p.name)!;
      return [p.name, divisor === 1 ? g : tf.div(g, divisor)];
    }));
    const all = present.flat().map((p) => gradOf.get(p.name)!);
    const normInputs: tf.NamedTensorMap = {};
    all.forEach((g, i) => (normInputs[`grad${i}`] = g));
    const G = (all.length === 0 ? tf.scalar(0)
      : backendHasKernel(GLOBAL_NORM_KERNEL) ? tf.engine().runKernel(GLOBAL_NORM_KERNEL, normInputs, { n: all.length })
      : globalNormReference(normInputs, { n: all.length })) as tf.Scalar;
    const clip = this.clipFactor(G) ?? this.consts.one;
    const apply = applyIf ?? this.consts.yes;
    const fused = backendHasKernel(this.updateKernel);
    this.groups.forEach((group, gi) => {
      const ps = present[gi]!;
      if (this.countsStep(ps.length > 0)) group.step += 1;
      if (ps.length === 0) return;
      const mo = ps.map((p) => this.moments.get(p.name)!);
      const inputs = groupInputs(
        ps.map((p) => p.variable),
        ps.map((p) => gradOf.get(p.name)!),
        mo.map((x) => x.m),
        mo.map((x) => x.v),
        { [this.clipInput]: clip, apply },
      );
      const a = this.attrs(group, hyper, ps.length);
      const out = fused ? (tf.engine().runKernel(this.updateKernel, inputs, a as unknown as tf.NamedAttrMap) as tf.Tensor[]) : this.reference(inputs, a);
      const n = ps.length;
      ps.forEach((p, i) => {
        p.variable.assign(out[i]!);
        mo[i]!.m.assign(out[n + i]!);
        mo[i]!.v.assign(out[2 * n + i]!);
      });
    });
    return G;
  }

  getState(): OptimizerState {
    return this.collectState((t) => t.dataSync() as Float32Array);
  }

  /** `getState` with asynchronous reads (the training loop's checkpoints). */
  async getStateAsync(): Promise<OptimizerState> {
    const tensors: tf.Tensor[] = this.layout === 'param'
      ? [...this.moments.values()].flatMap((mo) => [mo.m, mo.v])
      : this.flat.flat().flatMap((b) => [b.m, b.v]);
    const values = await Promise.all(tensors.map((t) => t.data() as Promise<Float32Array>));
    const read = new Map(tensors.map((t, i) => [t, values[i]!]));
    return this.collectState((t) => read.get(t)!);
  }

  private collectState(read: (t: tf.Tensor) => Float32Array): OptimizerState {
    const tensors = new Map<string, SafeTensor>();
    if (this.layout === 'param') {
      for (const [name, mo] of this.moments) {
        tensors.set(`${name}.exp_avg`, f32(mo.m.shape.slice(), Float32Array.from(read(mo.m))));
        tensors.set(`${name}.exp_avg_sq`, f32(mo.v.shape.slice(), Float32Array.from(read(mo.v))));
      }
    } else {
      this.groups.forEach((g, gi) => {
        for (const b of this.flat[gi]!) {
          const m = read(b.m);
          const v = read(b.v);
          b.members.forEach((i, j) => {
            const p = g.params[i]!;
            tensors.set(`${p.name}.exp_avg`, f32(p.variable.shape.slice(), b.layout.slice(m, j)));
            tensors.set(`${p.name}.exp_avg_sq`, f32(p.variable.shape.slice(), b.layout.slice(v, j)));
          });
        }
      });
    }
    const groupSteps: Record<string, number> = {};
    for (const g of this.groups) groupSteps[g.name] = g.step;
    return { kind: this.kind, groupSteps, tensors };
  }

  setState(state: { groupSteps: Record<string, number>; tensors: Map<string, SafeTensor> }): void {
    // Validate everything first so a bad state leaves the optimizer untouched.
    for (const g of this.groups) {
      for (const p of g.params) {
        for (const suffix of ['exp_avg', 'exp_avg_sq']) {
          const t = state.tensors.get(`${p.name}.${suffix}`);
          if (!t) throw new Error(`optimizer state: missing ${p.name}.${suffix}`);
          const shape = p.variable.shape;
          if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
            throw new Error(`optimizer state: ${p.name}.${suffix} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)}`);
          }
        }
      }
    }
    for (const g of this.groups) {
      const s = state.groupSteps[g.name];
      if (s === undefined) throw new Error(`optimizer state: missing step counter of group ${g.name}`);
    }
    const get = (name: string): Float32Array => toFloat32(state.tensors.get(name)!);
    if (this.layout === 'param') {
      for (const [name, mo] of this.moments) {
        tf.tidy(() => {
          mo.m.assign(tf.tensor(get(`${name}.exp_avg`), mo.m.shape, 'float32'));
          mo.v.assign(tf.tensor(get(`${name}.exp_avg_sq`), mo.v.shape, 'float32'));
        });
      }
    } else {
      this.groups.forEach((g, gi) => {
        for (const b of this.flat[gi]!) {
          const L = b.layout;
          for (const [suffix, target] of [['exp_avg', b.m], ['exp_avg_sq', b.v]] as const) {
            const data = new Float32Array(L.rows * ROW);
            b.members.forEach((i, j) => data.set(get(`${g.params[i]!.name}.${suffix}`), L.rowStart[j]! * ROW));
            tf.tidy(() => target.assign(tf.tensor2d(data, [L.rows, ROW])));
          }
        }
      });
    }
    for (const g of this.groups) g.step = state.groupSteps[g.name]!;
  }

  dispose(): void {
    for (const mo of this.moments.values()) {
      mo.m.dispose();
      mo.v.dispose();
    }
    this.moments.clear();
    for (const b of this.flat.flat()) {
      b.m.dispose();
      b.v.dispose();
      b.layout.dispose();
    }
    this.flat = [];
    tf.dispose(Object.values(this.consts));
  }
}

export class Lamb extends BaseOptimizer {
  readonly kind = 'lamb' as const;
  protected readonly clipInput = 'clipDiv' as const;
  readonly biasCorrection: boolean;
  readonly alwaysAdapt: boolean;
  readonly trustClip: boolean;

  constructor(groups: ParamGroup[], opts: LambOptions = {}) {
    super(groups, opts, { eps: 1e-6, maxGradNorm: 5 }, LAMB_UPDATE_KERNEL);
    this.biasCorrection = opts.biasCorrection ?? true;
    this.alwaysAdapt = opts.alwaysAdapt ?? false;
    this.trustClip = opts.trustClip ?? false;
  }

  /** timm: grad.div_(G / max if G > max else 1). */
  protected clipFactor(G: tf.Scalar): tf.Tensor | null {
    return Number.isFinite(this.maxGradNorm) ? tf.maximum(tf.div(G, this.maxGradNorm), 1) : null;
  }

  protected countsStep(): boolean {
    return true; // timm counts every group's step, with or without gradients
  }

  protected attrs(group: ParamGroup, hyper: StepHyper, n: number): LambUpdateAttrs {
    const wd = hyper.wd * group.weightDecayScale;
    return {
      n,
      lr: hyper.lr * group.lrScale,
      weightDecay: wd,
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      biasCorrection1: this.biasCorrection ? 1 - Math.pow(this.beta1, group.step) : 1,
      biasCorrection2: this.biasCorrection ? 1 - Math.pow(this.beta2, group.step) : 1,
      adapt: wd !== 0 || this.alwaysAdapt,
      trustClip: this.trustClip,
    };
  }

  protected flatUpdate(L: FlatLayout, s: FlatState, clip: tf.Tensor | null, cond: tf.Tensor | null, a: Attrs) {
    return lambFlat(L, this.consts, s, clip, cond, a as LambUpdateAttrs);
  }

  protected reference(inputs: tf.NamedTensorMap, a: Attrs): tf.Tensor[] {
    return lambReference(inputs, a as LambUpdateAttrs);
  }
}

export class AdamW extends BaseOptimizer {
  readonly kind = 'adamw' as const;
  protected readonly clipInput = 'clipCoef' as const;

  constructor(groups: ParamGroup[], opts: AdamWOptions = {}) {
    super(groups, opts, { eps: 1e-8, maxGradNorm: 0 }, ADAMW_UPDATE_KERNEL);
  }

  /** torch.nn.utils.clip_grad_norm_: coef = max / (G + 1e-6), applied when < 1. */
  protected clipFactor(G: tf.Scalar): tf.Tensor | null {
    return Number.isFinite(this.maxGradNorm) ? tf.minimum(tf.div(this.maxGradNorm, tf.add(G, 1e-6)), 1) : null;
  }

  protected countsStep(hasGrad: boolean): boolean {
    return hasGrad;
  }

  protected attrs(group: ParamGroup, hyper: StepHyper, n: number): AdamWUpdateAttrs {
    return {
      n,
      lr: hyper.lr * group.lrScale,
      weightDecay: hyper.wd * group.weightDecayScale,
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      biasCorrection1: 1 - Math.pow(this.beta1, group.step),
      biasCorrection2: 1 - Math.pow(this.beta2, group.step),
    };
  }

  protected flatUpdate(_L: FlatLayout, s: FlatState, clip: tf.Tensor | null, cond: tf.Tensor | null, a: Attrs) {
    return adamwFlat(this.consts, s, clip, cond, a as AdamWUpdateAttrs);
  }

  protected reference(inputs: tf.NamedTensorMap, a: Attrs): tf.Tensor[] {
    return adamwReference(inputs, a as AdamWUpdateAttrs);
  }
}

/** The pre-training optimizer of an experiment's `train.optimizer` section. */
export function createOptimizer(
  cfg: { name: 'lamb' | 'adamw'; eps: number | null; clip_grad: number },
  groups: ParamGroup[],
  betas: [number, number],
): SparkOptimizer {
  if (cfg.name === 'lamb') return new Lamb(groups, { betas, eps: cfg.eps ?? 1e-6, maxGradNorm: cfg.clip_grad > 0 ? cfg.clip_grad : 0 });
  return new AdamW(groups, { betas, eps: cfg.eps ?? 1e-8, maxGradNorm: cfg.clip_grad });
}
