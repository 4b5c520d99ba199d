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
 */
import * as tf from '@tensorflow/tfjs';
import { f32, toFloat32, type SafeTensor } from '../util/safetensors.js';

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
}

export interface AdamWOptions {
  betas?: [number, number];
  /** Default 1e-8 (timm AdamW). */
  eps?: number;
  /** Global grad-norm clip (clip_grad_norm_ semantics); 0 / undefined disables. */
  maxGradNorm?: number;
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

export interface SparkOptimizer {
  readonly kind: 'lamb' | 'adamw';
  readonly groups: ParamGroup[];
  /**
   * One update from gradients keyed by parameter name (a parameter without a gradient is skipped, as in PyTorch).
   * The gradients are not disposed. Returns the global gradient norm before clipping.
   */
  apply(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper): number;
  /** Copy of the state (reads the moments back from the backend). */
  getState(): OptimizerState;
  /** Restore a state written by getState (shapes checked). */
  setState(state: { groupSteps: Record<string, number>; tensors: Map<string, SafeTensor> }): void;
  dispose(): void;
}

let optimizerCount = 0;

interface Moments {
  m: tf.Variable;
  v: tf.Variable;
}

abstract class BaseOptimizer implements SparkOptimizer {
  abstract readonly kind: 'lamb' | 'adamw';
  protected moments = new Map<string, Moments>();
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  /** Global grad-norm clip threshold; Infinity = no clipping (an option of 0 or less disables it). */
  readonly maxGradNorm: number;
  /** Adam's moments of one parameter: m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g² (stored and returned). */
  protected updateMoments(name: string, g: tf.Tensor): { m: tf.Tensor; v: tf.Tensor } {
    const mo = this.moments.get(name)!;
    const m = tf.add(tf.mul(mo.m, this.beta1), tf.mul(g, 1 - this.beta1));
    const v = tf.add(tf.mul(mo.v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
    mo.m.assign(m);
    mo.v.assign(v);
    return { m, v };
  }

  constructor(
    readonly groups: ParamGroup[],
    opts: { betas?: [number, number]; eps?: number; maxGradNorm?: number },
    defaults: { eps: number; maxGradNorm: number },
  ) {
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? defaults.eps;
    const mg = opts.maxGradNorm ?? defaults.maxGradNorm;
    this.maxGradNorm = mg > 0 ? mg : Infinity;
    const uid = ++optimizerCount;
    const seen = new Set<string>();
    for (const g of groups) {
      for (const p of g.params) {
        if (seen.has(p.name)) throw new Error(`optimizer: parameter ${p.name} is in two groups`);
        seen.add(p.name);
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
  }

  protected gradOf(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, name: string): tf.Tensor | undefined {
    return grads instanceof Map ? grads.get(name) : grads[name];
  }

  /** sqrt(Σ ||g||²) over every parameter that has a gradient (a scalar tensor). */
  protected globalNorm(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>): tf.Scalar {
    const sq: tf.Scalar[] = [];
    for (const g of this.groups) {
      for (const p of g.params) {
        const gr = this.gradOf(grads, p.name);
        if (gr) sq.push(tf.sum(tf.square(gr)));
      }
    }
    if (sq.length === 0) return tf.scalar(0);
    return tf.sqrt(sq.length === 1 ? sq[0]! : tf.addN(sq));
  }

  abstract apply(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper): number;

  getState(): OptimizerState {
    const tensors = new Map<string, SafeTensor>();
    for (const [name, mo] of this.moments) {
      tensors.set(`${name}.exp_avg`, f32(mo.m.shape.slice(), Float32Array.from(mo.m.dataSync() as Float32Array)));
      tensors.set(`${name}.exp_avg_sq`, f32(mo.v.shape.slice(), Float32Array.from(mo.v.dataSync() as Float32Array)));
    }
    const groupSteps: Record<string, number> = {};
    for (const g of this.groups) groupSteps[g.name] = g.step;
    return { kind: this.kind, groupSteps, tensors };
  }

  setState(state: { groupSteps: Record<string, number>; tensors: Map<string, SafeTensor> }): void {
    // Validate everything first so a bad state leaves the optimizer untouched.
    for (const [name, mo] of this.moments) {
      for (const [suffix, v] of [['exp_avg', mo.m], ['exp_avg_sq', mo.v]] as const) {
        const t = state.tensors.get(`${name}.${suffix}`);
        if (!t) throw new Error(`optimizer state: missing ${name}.${suffix}`);
        if (t.shape.length !== v.shape.length || t.shape.some((d, i) => d !== v.shape[i])) {
          throw new Error(`optimizer state: ${name}.${suffix} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(v.shape)}`);
        }
      }
    }
    for (const g of this.groups) {
      const s = state.groupSteps[g.name];
      if (s === undefined) throw new Error(`optimizer state: missing step counter of group ${g.name}`);
    }
    for (const [name, mo] of this.moments) {
      const m = state.tensors.get(`${name}.exp_avg`)!;
      const v = state.tensors.get(`${name}.exp_avg_sq`)!;
      tf.tidy(() => {
        mo.m.assign(tf.tensor(toFloat32(m), mo.m.shape, 'float32'));
        mo.v.assign(tf.tensor(toFloat32(v), mo.v.shape, 'float32'));
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
  }
}

export class Lamb extends BaseOptimizer {
  readonly kind = 'lamb' as const;
  readonly biasCorrection: boolean;
  readonly alwaysAdapt: boolean;
  readonly trustClip: boolean;

  constructor(groups: ParamGroup[], opts: LambOptions = {}) {
    super(groups, opts, { eps: 1e-6, maxGradNorm: 5 });
    this.biasCorrection = opts.biasCorrection ?? true;
    this.alwaysAdapt = opts.alwaysAdapt ?? false;
    this.trustClip = opts.trustClip ?? false;
  }

  apply(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper): number {
    const { beta1, beta2, eps } = this;
    const gnorm = tf.tidy(() => {
      const G = this.globalNorm(grads);
      // timm: grad.div_(G / max if G > max else 1)
      const clipDiv = Number.isFinite(this.maxGradNorm) ? tf.maximum(tf.div(G, this.maxGradNorm), 1) : tf.scalar(1);
      for (const group of this.groups) {
        group.step += 1; // timm counts every group's step, with or without gradients
        const bc1 = this.biasCorrection ? 1 - Math.pow(beta1, group.step) : 1;
        const bc2 = this.biasCorrection ? 1 - Math.pow(beta2, group.step) : 1;
        const lr = hyper.lr * group.lrScale;
        const wd = hyper.wd * group.weightDecayScale;
        for (const p of group.params) {
          const g0 = this.gradOf(grads, p.name);
          if (!g0) continue;
          const { m, v } = this.updateMoments(p.name, tf.div(g0, clipDiv));
          const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), eps);
          let u: tf.Tensor = tf.div(tf.div(m, bc1), denom);
          if (wd !== 0) u = tf.add(u, tf.mul(p.variable, wd));
          if (wd !== 0 || this.alwaysAdapt) {
            const wNorm = tf.sqrt(tf.sum(tf.square(p.variable)));
            const uNorm = tf.sqrt(tf.sum(tf.square(u)));
            const ok = tf.logicalAnd(tf.greater(wNorm, 0), tf.greater(uNorm, 0));
            let trust: tf.Tensor = tf.where(ok, tf.div(wNorm, tf.where(ok, uNorm, tf.onesLike(uNorm))), tf.onesLike(wNorm));
            if (this.trustClip) trust = tf.minimum(trust, 1);
            u = tf.mul(u, trust);
          }
          p.variable.assign(tf.sub(p.variable, tf.mul(u, lr)));
        }
      }
      return G;
    });
    const n = gnorm.dataSync()[0]!;
    gnorm.dispose();
    return n;
  }
}

export class AdamW extends BaseOptimizer {
  readonly kind = 'adamw' as const;

  constructor(groups: ParamGroup[], opts: AdamWOptions = {}) {
    super(groups, opts, { eps: 1e-8, maxGradNorm: 0 });
  }

  apply(grads: Map<string, tf.Tensor> | Record<string, tf.Tensor>, hyper: StepHyper): number {
    const { beta1, beta2, eps } = this;
    const gnorm = tf.tidy(() => {
      const G = this.globalNorm(grads);
      // torch.nn.utils.clip_grad_norm_: coef = max / (G + 1e-6), applied when < 1.
      const coef = Number.isFinite(this.maxGradNorm) ? tf.minimum(tf.div(this.maxGradNorm, tf.add(G, 1e-6)), 1) : tf.scalar(1);
      for (const group of this.groups) {
        if (!group.params.some((p) => this.gradOf(grads, p.name))) continue;
        group.step += 1;
        const bc1 = 1 - Math.pow(beta1, group.step);
        const bc2 = 1 - Math.pow(beta2, group.step);
        const lr = hyper.lr * group.lrScale;
        const wd = hyper.wd * group.weightDecayScale;
        for (const p of group.params) {
          const g0 = this.gradOf(grads, p.name);
          if (!g0) continue;
          const decayed = wd !== 0 ? tf.mul(p.variable, 1 - lr * wd) : p.variable;
          const { m, v } = this.updateMoments(p.name, tf.mul(g0, coef));
          const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), eps);
          p.variable.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), lr / bc1)));
        }
      }
      return G;
    });
    const n = gnorm.dataSync()[0]!;
    gnorm.dispose();
    return n;
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
