/**
 * Parameter/buffer definitions and their deterministic initialisation. Every tensor of a model is declared once,
 * with its reference state-dict key, its TF-layout shape and its initialiser; a store either materialises it as a
 * tf.Variable or (shapes-only mode) just records the definition, which is how key lists and counts of full-size
 * models are obtained without allocating them.
 *
 * Each tensor's initial values come from `Rng.from(seed, 'init', key)`, so they do not depend on build order.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../util/rng.js';
import type { BatchNormVars } from './ops.js';

export type Init =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'const'; value: number }
  /** N(0, std²), resampled outside [a, b] (timm trunc_normal_, absolute bounds). */
  | { kind: 'truncNormal'; std: number; a: number; b: number }
  /** N(0, std²) (kaiming_normal_). */
  | { kind: 'normal'; std: number }
  /** U(−bound, bound). */
  | { kind: 'uniform'; bound: number };

export type Role = 'param' | 'buffer';

/** The PyTorch layout kind of a tensor (spec §8.4); determines the layout conversion. */
export type LayoutKind = 'conv' | 'depthwise' | 'linear' | 'convTranspose' | 'token' | 'vector' | 'scalar';

export interface TensorDef {
  /** Reference state-dict key. */
  key: string;
  /** Shape in the TF layout used here. */
  shape: number[];
  role: Role;
  dtype: 'float32' | 'int32';
  layout: LayoutKind;
  init: Init;
}

export const truncNormal02: Init = { kind: 'truncNormal', std: 0.02, a: -2, b: 2 };

/** Fill `n` values for an initialiser from the tensor's own generator. */
export function initValues(init: Init, n: number, rng: Rng): Float32Array {
  const out = new Float32Array(n);
  switch (init.kind) {
    case 'zeros':
      break;
    case 'ones':
      out.fill(1);
      break;
    case 'const':
      out.fill(init.value);
      break;
    case 'normal':
      fillNormal(out, init.std, -Infinity, Infinity, rng);
      break;
    case 'truncNormal':
      fillNormal(out, init.std, init.a, init.b, rng);
      break;
    case 'uniform':
      for (let i = 0; i < n; i++) out[i] = (rng.float() * 2 - 1) * init.bound;
      break;
  }
  return out;
}

/**
 * N(0, std²) values rejected outside [a, b], by Box–Muller using both outputs of each pair (uniforms from 32-bit
 * draws: plenty for initialisation, and twice as fast as `Rng.normal`).
 */
function fillNormal(out: Float32Array, std: number, a: number, b: number, rng: Rng): void {
  const twoPi = 2 * Math.PI;
  let i = 0;
  while (i < out.length) {
    const u1 = (rng.nextU32() + 0.5) / 4294967296;
    const u2 = rng.nextU32() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    const z0 = r * Math.cos(twoPi * u2);
    const z1 = r * Math.sin(twoPi * u2);
    if (z0 >= a && z0 <= b) out[i++] = z0;
    if (i < out.length && z1 >= a && z1 <= b) out[i++] = z1;
  }
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Collects tensor definitions under a key prefix and (unless shapes-only) creates the variables. Variables are
 * created unnamed (tfjs variable names are process-global); the maps hold them by reference key.
 */
export class ParamStore {
  readonly defs: TensorDef[] = [];
  private readonly keys = new Set<string>();
  readonly params = new Map<string, tf.Variable>();
  readonly buffers = new Map<string, tf.Variable>();

  constructor(
    readonly seed: number,
    readonly materialize = true,
  ) {}

  /** A child view that prefixes keys with `prefix` (e.g. 'sparse_encoder.sp_cnn.'). */
  scope(prefix: string): ParamScope {
    return new ParamScope(this, prefix);
  }

  add(def: TensorDef): tf.Variable {
    if (this.keys.has(def.key)) throw new Error(`duplicate tensor key ${def.key}`);
    this.keys.add(def.key);
    this.defs.push(def);
    if (!this.materialize) return undefined as unknown as tf.Variable;
    const n = numel(def.shape);
    let v: tf.Variable;
    if (def.dtype === 'int32') {
      v = tf.tidy(() => tf.variable(tf.zeros(def.shape, 'int32'), false)); // tidy frees the initial value
    } else {
      const vals = initValues(def.init, n, Rng.from(this.seed, 'init', def.key));
      v = tf.tidy(() => tf.variable(tf.tensor(vals, def.shape, 'float32'), def.role === 'param'));
    }
    (def.role === 'param' ? this.params : this.buffers).set(def.key, v);
    return v;
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    for (const v of this.buffers.values()) v.dispose();
    this.params.clear();
    this.buffers.clear();
  }
}

export class ParamScope {
  constructor(
    readonly store: ParamStore,
    readonly prefix: string,
  ) {}

  scope(prefix: string): ParamScope {
    return new ParamScope(this.store, this.prefix + prefix);
  }

  param(name: string, shape: number[], init: Init, layout: LayoutKind): tf.Variable {
    return this.store.add({ key: this.prefix + name, shape, role: 'param', dtype: 'float32', layout, init });
  }

  /** Conv weight [kH,kW,I,O]. */
  conv(name: string, k: number, cin: number, cout: number, init: Init): tf.Variable {
    return this.param(name, [k, k, cin, cout], init, 'conv');
  }

  vector(name: string, c: number, init: Init): tf.Variable {
    return this.param(name, [c], init, 'vector');
  }

  /** BatchNorm2d(c): weight (γ, default 1), bias, running_mean, running_var, num_batches_tracked. */
  batchNorm(name: string, c: number, gamma: Init = { kind: 'ones' }): BatchNormVars {
    const p = name ? name + '.' : '';
    const weight = this.vector(p + 'weight', c, gamma);
    const bias = this.vector(p + 'bias', c, { kind: 'zeros' });
    const runningMean = this.store.add({ key: this.prefix + p + 'running_mean', shape: [c], role: 'buffer', dtype: 'float32', layout: 'vector', init: { kind: 'zeros' } });
    const runningVar = this.store.add({ key: this.prefix + p + 'running_var', shape: [c], role: 'buffer', dtype: 'float32', layout: 'vector', init: { kind: 'ones' } });
    const numBatchesTracked = this.store.add({ key: this.prefix + p + 'num_batches_tracked', shape: [], role: 'buffer', dtype: 'int32', layout: 'scalar', init: { kind: 'zeros' } });
    return { weight, bias, runningMean, runningVar, numBatchesTracked };
  }

  /** LayerNorm(c): weight 1, bias 0. */
  layerNorm(name: string, c: number): { weight: tf.Variable; bias: tf.Variable } {
    const p = name ? name + '.' : '';
    return { weight: this.vector(p + 'weight', c, { kind: 'ones' }), bias: this.vector(p + 'bias', c, { kind: 'zeros' }) };
  }
}

/** PyTorch's default Conv2d/Linear init bound: kaiming_uniform(a=√5) ⇒ U(±1/√fan_in), same for the bias. */
export function torchDefaultBound(fanIn: number): Init {
  return { kind: 'uniform', bound: 1 / Math.sqrt(fanIn) };
}

/** kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = √(2/fan_out). */
export function kaimingNormalFanOut(fanOut: number): Init {
  return { kind: 'normal', std: Math.sqrt(2 / fanOut) };
}
