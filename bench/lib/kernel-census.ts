/**
 * Count the kernels (`tf.profile`) of one SparK training step of a small model on the current backend: the training
 * forward alone, forward+backward (`tf.variableGrads` of the loss), and the whole `trainStep` (with LAMB, clip 5,
 * wd 0.04). Used by bench/kernel-census.ts and the kernel-budget test.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../../src/spec/types.js';
import { Rng } from '../../src/util/rng.js';
import { buildSparK } from '../../src/models/spark.js';
import { trainStep } from '../../src/train/step.js';
import { buildParamGroups, Lamb } from '../../src/train/optimizers.js';

export interface KernelCount {
  total: number;
  byKernel: Record<string, number>;
}
export interface KernelCensus {
  forward: KernelCount;
  forwardBackward: KernelCount;
  step: KernelCount;
  /** Wall times (ms) of `timeSteps` further steps (when asked). */
  stepMs: number[];
  /** Live tensors after the profiled step and after each timed step (flat when steps release what they make). */
  tensorsAfterStep: number[];
}

type ProfileInfo = Awaited<ReturnType<typeof tf.profile>>;

/** Tally a profile right away: tfjs reuses one profile object across `tf.profile` calls. */
function tally(info: ProfileInfo): KernelCount {
  const byKernel: Record<string, number> = {};
  for (const k of info.kernels) byKernel[k.name] = (byKernel[k.name] ?? 0) + 1;
  return { total: info.kernels.length, byKernel };
}

function seededInput(shape: [number, number, number, number], seed: number): tf.Tensor4D {
  const r = Rng.from(seed, 'census-input');
  const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < d.length; i++) d[i] = r.normal();
  return tf.tensor4d(d, shape);
}

export async function countStepKernels(encoder: string, opts: { size?: number; batch?: number; width?: number; timeSteps?: number } = {}): Promise<KernelCensus> {
  const size = opts.size ?? 64;
  const batch = opts.batch ?? 2;
  const model: ModelConfig = { encoder, decoder: { type: 'light', width: opts.width ?? 64 }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' };
  const m = buildSparK(model, size, 0);
  const optimizer = new Lamb(buildParamGroups(m.params), { betas: [0.9, 0.95], eps: 1e-6, maxGradNorm: 5 });
  const x = seededInput([batch, size, size, 3], 1);
  const hyper = { lr: 1e-4, wd: 0.04 };
  const vars = [...m.params.values()];
  try {
    await trainStep(m, optimizer, [x], { seed: 0, it: 0, hyper }); // warm-up
    const mask = m.makeMask(batch, Rng.from(0, 'mask', 1, 0));
    const fwd = tally(
      await tf.profile(() => {
        tf.tidy(() => {
          m.forward(x, mask, { training: true, rng: Rng.from(0, 'droppath', 1, 0) });
        });
      }),
    );
    const fb = tally(await tf.profile(() => {
      tf.tidy(() => {
        tf.variableGrads(() => m.forward(x, mask, { training: true, rng: Rng.from(0, 'droppath', 1, 0) }).loss, vars);
      });
    }));
    mask.dispose();
    const step = tally(
      await tf.profile(async () => {
        await trainStep(m, optimizer, [x], { seed: 0, it: 1, hyper });
      }),
    );
    const stepMs: number[] = [];
    const tensorsAfterStep = [tf.memory().numTensors];
    for (let i = 0; i < (opts.timeSteps ?? 0); i++) {
      const t0 = performance.now();
      await trainStep(m, optimizer, [x], { seed: 0, it: 2 + i, hyper });
      stepMs.push(performance.now() - t0);
      tensorsAfterStep.push(tf.memory().numTensors);
    }
    return { forward: fwd, forwardBackward: fb, step, stepMs, tensorsAfterStep };
  } finally {
    optimizer.dispose();
    m.dispose();
    x.dispose();
  }
}
