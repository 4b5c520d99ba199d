import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { requireNative } from './helpers/backend.js';
import { probeBenchmark, formatProbeBenchmark } from '../src/interop/probe-benchmark.js';

/*
 * Issue 7.5. What this test can honestly assert: a short SparK pre-training (here 100 steps of 16 images, 64 px,
 * resnet_mini, LAMB base_lr 1e-2) makes its loss fall, and both the pre-trained and the random-init encoder give a
 * linear probe well above chance on the texture-family dataset. It does NOT make the pre-trained encoder reliably beat
 * the random-init one under the same linear probe. Measured with exactly this configuration (8 classes, 320 train /
 * 240 val images, val top-1 pre-trained vs random, chance 12.5 %): seed 0 24.2 vs 27.5, seed 1 29.2 vs 25.0, seed 2
 * 20.0 vs 30.0; longer (200–400 steps) or larger (96 px) pre-training, other pre-training lrs (5e-4 … 1e-2), probe
 * weight decay up to 0.5 and features pooled from all four stages did not change the sign either. That claim is
 * therefore not asserted here; the test prints both numbers, and `bench/probe-benchmark.ts` runs the longer version.
 */

test('probe benchmark: short SparK pre-training on the texture dataset, then the same linear probe on both encoders', async (t) => {
  if (!(await requireNative(t, 'the pre-training + probe benchmark'))) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-probe-bench-'));
  try {
    const r = await probeBenchmark({
      dir,
      dataset: 'texture',
      classes: 8,
      trainPerClass: 40,
      valPerClass: 30,
      size: 64,
      pretrainSteps: 100,
      batchSize: 16,
      pretrainLr: 1e-2,
      encoder: 'resnet_mini',
      seed: 0,
      backend: 'auto',
      probeEpochs: 100,
    });
    process.stdout.write(formatProbeBenchmark(r) + '\n');
    assert.ok(r.pretrain.finalLoss! < r.pretrain.firstLoss! - 0.02, `pre-training loss fell: ${r.pretrain.firstLoss} → ${r.pretrain.finalLoss}`);
    // 240 validation images, chance 12.5 %: one binomial standard error at chance is ≈ 2.1 points, so 4 points above
    // chance is ≈ 2 SE; both encoders measured ≥ 7.5 points above chance on seeds 0–2 (this test is seed 0: 24.2 / 27.5).
    const chance = 100 / 8;
    assert.ok(r.random.top1 > chance + 4, `random-init probe ${r.random.top1}% should be above chance ${chance}%`);
    assert.ok(r.pretrained.top1 > chance + 4, `pre-trained probe ${r.pretrained.top1}% should be above chance ${chance}%`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
