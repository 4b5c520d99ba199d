/**
 * The first-step memory check of `train.accumulate: auto` (the memory model is models/memory.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { leanVariableGrads } from './lean-grads.js';
import { stepRngs, type TrainableModel } from './step.js';

/**
 * Measure one micro-batch: forward + backward of `x` as micro-batch 0 of iteration `it` (the same mask and DropPath
 * draws as the step), gradients discarded, BatchNorm running statistics restored, so the run is unchanged.
 * Returns the RSS before and the peak RSS after.
 */
export function probeMicroBatch(model: TrainableModel, x: tf.Tensor4D, seed: number, it: number): { rssBefore: number; peakAfter: number } {
  const saved = new Map<string, tf.Tensor>();
  for (const [k, v] of model.buffers) saved.set(k, v.clone());
  const vars = [...model.params.values()];
  const rssBefore = process.memoryUsage().rss;
  const maxBefore = process.resourceUsage().maxRSS * 1024;
  try {
    const r = stepRngs(seed, it, 0);
    const { value, grads } = tf.tidy(() => {
      const mask = model.makeMask(x.shape[0], r.mask);
      return leanVariableGrads(() => model.forward(x, mask, { training: true, rng: r.dropPath }).loss, vars);
    });
    value.dataSync();
    // the process's peak RSS is the probe's peak when the probe raised it; else the RSS now is a lower bound
    const maxAfter = process.resourceUsage().maxRSS * 1024;
    const rssAfter = process.memoryUsage().rss;
    const peakAfter = maxAfter > maxBefore ? Math.max(maxAfter, rssAfter) : rssAfter;
    value.dispose();
    tf.dispose(Object.values(grads));
    return { rssBefore, peakAfter };
  } finally {
    for (const [k, v] of model.buffers) v.assign(saved.get(k)!);
    tf.dispose([...saved.values()]);
  }
}
