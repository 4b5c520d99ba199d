/**
 * One pre-training step: for each of `accumulate` micro-batches, a fresh random mask per image from
 * `Rng.from(seed, 'mask', it, micro)` and DropPath draws from `Rng.from(seed, 'droppath', it, micro)`, forward and
 * backward with `tf.variableGrads`, gradients averaged over the micro-batches, then one optimizer update with the
 * scheduled lr / wd of iteration `it` (0-based; optimizer step it + 1). Every tensor made here is released: the
 * number of live tensors after a step equals the number before it.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../util/rng.js';
import type { SparkOptimizer, StepHyper } from './optimizers.js';

/** What the step needs of a SparK model (structurally a subset of models' `SparKModel`). */
export interface TrainableModel {
  params: Map<string, tf.Variable>;
  buffers: Map<string, tf.Variable>;
  makeMask(batch: number, rng: Rng): tf.Tensor4D;
  forward(x: tf.Tensor4D, mask: tf.Tensor4D, opts: { training: boolean; rng?: Rng }): { loss: tf.Scalar; pred: tf.Tensor4D };
}

export interface StepResult {
  /** Mean of the micro-batch losses. */
  loss: number;
  /** Global gradient norm before clipping (NaN when the update was skipped). */
  gradNorm: number;
  /** False when the loss was not finite: no update was applied. */
  applied: boolean;
}

/** The mask and DropPath generators of one micro-batch: pure functions of (seed, it, micro). */
export function stepRngs(seed: number, it: number, micro: number): { mask: Rng; dropPath: Rng } {
  return { mask: Rng.from(seed, 'mask', it, micro), dropPath: Rng.from(seed, 'droppath', it, micro) };
}

/**
 * Run one optimizer step over the given micro-batches (normalised NHWC images; not disposed here).
 * A non-finite loss skips the update (weights untouched) and returns `applied: false`.
 */
export function trainStep(
  model: TrainableModel,
  optimizer: SparkOptimizer,
  micro: tf.Tensor4D[],
  opts: { seed: number; it: number; hyper: StepHyper; masks?: tf.Tensor4D[] },
): StepResult {
  if (micro.length === 0) throw new Error('trainStep: no micro-batches');
  const varList = [...model.params.values()];
  const names = [...model.params.keys()];
  const n = micro.length;
  // Gradient sums per parameter; undefined for a parameter the loss does not depend on (skipped, as PyTorch does).
  let acc: Array<tf.Tensor | undefined> | null = null;
  const losses: tf.Scalar[] = [];
  const live = (a: Array<tf.Tensor | undefined>): tf.Tensor[] => a.filter((t): t is tf.Tensor => t !== undefined);
  try {
    for (let k = 0; k < n; k++) {
      const x = micro[k]!;
      const r = stepRngs(opts.seed, opts.it, k);
      const { value, grads } = tf.tidy(() => {
        const mask = opts.masks?.[k] ?? model.makeMask(x.shape[0], r.mask);
        return tf.variableGrads(() => model.forward(x, mask, { training: true, rng: r.dropPath }).loss, varList);
      });
      losses.push(value);
      const g = varList.map((v) => grads[v.name]);
      if (acc === null) {
        acc = g;
      } else {
        const prev: Array<tf.Tensor | undefined> = acc;
        acc = prev.map((a, i) => (a && g[i] ? tf.add(a, g[i]!) : (a ?? g[i])));
        // dispose the summed operands only (a lone operand was carried over)
        prev.forEach((a, i) => {
          if (a && g[i]) {
            a.dispose();
            g[i]!.dispose();
          }
        });
      }
    }
    const lossT = tf.tidy(() => (n === 1 ? losses[0]!.clone() : tf.div(tf.addN(losses), n)));
    const loss = lossT.dataSync()[0]!;
    lossT.dispose();
    if (!Number.isFinite(loss)) return { loss, gradNorm: NaN, applied: false };
    if (n > 1) {
      const summed: Array<tf.Tensor | undefined> = acc!;
      acc = summed.map((t) => (t ? tf.div(t, n) : undefined));
      tf.dispose(live(summed));
    }
    const gradMap = new Map<string, tf.Tensor>();
    names.forEach((nm, i) => {
      const t = acc![i];
      if (t) gradMap.set(nm, t);
    });
    const gradNorm = optimizer.apply(gradMap, opts.hyper);
    return { loss, gradNorm, applied: true };
  } finally {
    if (acc) tf.dispose(live(acc));
    tf.dispose(losses);
  }
}

