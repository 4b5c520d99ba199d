/**
 * Kernel budget of the training step (issue 12): `tf.profile` kernel calls of forward+backward of the 64-px mini
 * models (decoder width 64, batch 2) stay within the budget the fused ops reached — on a backend with spark's fused
 * kernels (tensorflow) and with the portable composites (cpu, wasm); and training steps leave the number of live
 * tensors flat; with the fused kernels, the whole step (with the optimizer) within issue 12's 1,800.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { countStepKernels } from '../bench/lib/kernel-census.js';
import { BN_TRAIN, backendHasKernel } from '../src/models/fused.js';

const info = await testBackend();

// forward+backward kernel calls: before the fused ops 4,378 (resnet_mini) and 3,114 (convnext_mini) on tensorflow
const BUDGET: Record<string, { fused: number; portable: number }> = {
  resnet_mini: { fused: 780, portable: 2100 },
  convnext_mini: { fused: 870, portable: 1700 },
};

for (const name of Object.keys(BUDGET)) {
  test(`${name}: forward+backward within the kernel budget; live tensors flat over training steps`, async () => {
    const fused = backendHasKernel(BN_TRAIN);
    const before = tf.memory().numTensors;
    const c = await countStepKernels(name, { size: 64, batch: 2, width: 64, timeSteps: 2 });
    assert.equal(tf.memory().numTensors, before, 'model, optimizer and steps released everything');
    assert.equal(c.tensorsAfterStep.length, 3);
    assert.ok(c.tensorsAfterStep.every((n) => n === c.tensorsAfterStep[0]), `live tensors after steps 2, 3, 4: ${c.tensorsAfterStep.join(', ')}`);
    const budget = BUDGET[name]![fused ? 'fused' : 'portable'];
    const top = Object.entries(c.forwardBackward.byKernel)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    console.log(`# ${name} on ${info.name} (${fused ? 'fused kernels' : 'portable composites'}): forward+backward ${c.forwardBackward.total} kernels (${top}); whole step ${c.step.total}`);
    assert.ok(c.forwardBackward.total <= budget, `${name}: ${c.forwardBackward.total} kernel calls in forward+backward > budget ${budget}`);
    // issue 12's target for the whole step (forward, backward, LAMB) where the backend has the fused kernels
    if (fused) assert.ok(c.step.total <= 1800, `${name}: ${c.step.total} kernel calls per training step > 1,800`);
    assert.ok(c.forwardBackward.byKernel['Step'] === undefined, 'no Step kernels (ReLU gradients come from the fused ops)');
  });
}
