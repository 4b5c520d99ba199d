/**
 * One pre-training step: for each of `accumulate` micro-batches, a fresh random mask per image from
 * `Rng.from(seed, 'mask', it, micro)` and DropPath draws from `Rng.from(seed, 'droppath', it, micro)`, forward and
 * backward with `tf.variableGrads`, gradients averaged over the micro-batches, then one optimizer update with the
 * scheduled lr / wd of iteration `it` (0-based; optimizer step it + 1). Every tensor made here is released: the
 * number of live tensors after a step equals the number before it.
 *
 * Nothing is read back while the step is dispatched: a non-finite loss skips the update on the device (the
 * optimizer's `applyIf`), and the loss and the gradient norm come back together in one read at the end —
 * asynchronous in `trainStepAsync` (what the training loop uses), synchronous in `trainStep`.
 */
import * as tf from '@tensorflow/tfjs';
import { leanVariableGrads } from './lean-grads.js';
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

export interface StepOptions {
  seed: number;
  it: number;
  hyper: StepHyper;
  /** Masks per micro-batch instead of the step's own random ones. */
  masks?: tf.Tensor4D[];
}

/** A dispatched step: [loss, gradient norm] still on the device, and the undo of the optimizer's bookkeeping. */
interface Dispatched {
  stats: tf.Tensor1D;
  revert(): void;
}

/**
 * Dispatch one optimizer step over the given micro-batches (normalised NHWC images; not disposed here): forward,
 * backward and update, the update skipped on the device when the mean loss is not finite. Reads nothing.
 */
function dispatchStep(model: TrainableModel, optimizer: SparkOptimizer, micro: tf.Tensor4D[], opts: StepOptions): Dispatched {
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
        return leanVariableGrads(() => model.forward(x, mask, { training: true, rng: r.dropPath }).loss, varList);
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
    const summed = acc!;
    let revert = (): void => undefined;
    const stats = tf.tidy(() => {
      const loss = n === 1 ? losses[0]! : tf.div(tf.addN(losses), n);
      const gradMap = new Map<string, tf.Tensor>();
      names.forEach((nm, i) => {
        const t = summed[i];
        if (t) gradMap.set(nm, t);
      });
      // the mean over micro-batches: the optimizer divides the sums (one kernel per flat block)
      const u = optimizer.update(gradMap, opts.hyper, { applyIf: tf.isFinite(loss), gradDivisor: n });
      revert = u.revert;
      return tf.stack([loss, u.gradNorm]) as tf.Tensor1D;
    });
    return { stats, revert };
  } finally {
    if (acc) tf.dispose(live(acc));
    tf.dispose(losses);
  }
}

/** The step's result from [loss, norm]; a non-finite loss means the device skipped the update. */
function settle(values: ArrayLike<number>, d: Dispatched): StepResult {
  const loss = values[0]!;
  if (!Number.isFinite(loss)) {
    d.revert();
    return { loss, gradNorm: NaN, applied: false };
  }
  return { loss, gradNorm: values[1]!, applied: true };
}

/**
 * One optimizer step over the given micro-batches (normalised NHWC images; not disposed here), with one
 * asynchronous read (loss and gradient norm). A non-finite loss skips the update (weights, moments and step
 * counters untouched) and returns `applied: false`.
 */
export async function trainStepAsync(model: TrainableModel, optimizer: SparkOptimizer, micro: tf.Tensor4D[], opts: StepOptions): Promise<StepResult> {
  const d = dispatchStep(model, optimizer, micro, opts);
  try {
    return settle(await d.stats.data(), d);
  } finally {
    d.stats.dispose();
  }
}

/** `trainStepAsync` with a synchronous read (tests and tools that step by hand on a backend that can). */
export function trainStep(model: TrainableModel, optimizer: SparkOptimizer, micro: tf.Tensor4D[], opts: StepOptions): StepResult {
  const d = dispatchStep(model, optimizer, micro, opts);
  try {
    return settle(d.stats.dataSync(), d);
  } finally {
    d.stats.dispose();
  }
}
