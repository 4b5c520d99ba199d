/** Shared inputs of the model tests: a small SparK config, a seeded normal input, a parameter count. */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../../src/spec/types.js';
import { Rng } from '../../src/util/rng.js';

export const cfg = (encoder: string, width = 64, dropPath: number | null = 0.1): ModelConfig => ({
  encoder,
  decoder: { type: 'light', width },
  mask_ratio: 0.6,
  drop_path: dropPath,
  densify_norm: 'auto',
});

export function randn(shape: number[], seed: number): tf.Tensor4D {
  const r = Rng.from(seed, 'test-input');
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = r.normal();
  return tf.tensor4d(d, shape as [number, number, number, number]);
}

export function countParams(m: { params: Map<string, tf.Variable> }): number {
  let n = 0;
  for (const v of m.params.values()) n += v.size;
  return n;
}
