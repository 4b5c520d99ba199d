/**
 * Exponential moving average of a model's weights, as timm's `ModelEmaV2(decay)` used by the reference fine-tuning
 * (spec §7.5): after every optimizer step, for every entry of the state dict, ema ← decay·ema + (1 − decay)·w, in
 * float32. That covers the parameters and the BatchNorm running statistics; integer buffers (`num_batches_tracked`)
 * are copied instead (timm writes the float blend back into the int64 tensor, a value nothing reads).
 *
 * The EMA lives in a second set of variables with the same names (e.g. a second `Encoder`), so it can be evaluated
 * with the model's own forward pass. It starts as a copy of the source at construction time.
 */
import * as tf from '@tensorflow/tfjs';
import type { SafeTensor } from '../util/safetensors.js';
import { assignVariables, tensorToSafe } from './checkpoint.js';

export interface WeightSet {
  params: Map<string, tf.Variable>;
  buffers: Map<string, tf.Variable>;
}

interface Pair {
  name: string;
  ema: tf.Variable;
  src: tf.Variable;
}

export class WeightEma {
  private readonly pairs: Pair[] = [];

  /** `target` receives the EMA; it must have the same names, shapes and dtypes as `source` and is set to it now. */
  constructor(
    readonly decay: number,
    readonly source: WeightSet,
    readonly target: WeightSet,
  ) {
    if (!(decay >= 0 && decay < 1)) throw new RangeError(`EMA decay must be in [0, 1), got ${decay}`);
    for (const kind of ['params', 'buffers'] as const) {
      const s = source[kind];
      const t = target[kind];
      if (s.size !== t.size) throw new Error(`EMA: source has ${s.size} ${kind}, target ${t.size}`);
      for (const [name, src] of s) {
        const ema = t.get(name);
        if (!ema) throw new Error(`EMA: target has no ${name}`);
        if (ema.dtype !== src.dtype || ema.shape.join() !== src.shape.join()) throw new Error(`EMA: ${name} differs in shape or dtype`);
        this.pairs.push({ name, ema, src });
      }
    }
    this.copyFromSource();
  }

  /** Set the EMA to the source's current values. */
  copyFromSource(): void {
    tf.tidy(() => {
      for (const p of this.pairs) p.ema.assign(tf.clone(p.src));
    });
  }

  /** One update: ema ← decay·ema + (1 − decay)·w for float tensors, copy for integer ones. */
  update(): void {
    const d = this.decay;
    tf.tidy(() => {
      for (const p of this.pairs) {
        if (p.src.dtype === 'float32') p.ema.assign(tf.add(tf.mul(p.ema, d), tf.mul(p.src, 1 - d)));
        else p.ema.assign(tf.clone(p.src));
      }
    });
  }

  /** The EMA values by name (params and buffers), for a checkpoint. */
  async state(): Promise<Map<string, SafeTensor>> {
    const out = new Map<string, SafeTensor>();
    for (const p of this.pairs) out.set(p.name, await tensorToSafe(p.ema));
    return out;
  }

  /** Restore values written by `state()` (every name must be present with the right shape). */
  load(saved: Map<string, SafeTensor>, what: string): void {
    assignVariables(this.target.params, saved, what);
    assignVariables(this.target.buffers, saved, what);
  }
}
