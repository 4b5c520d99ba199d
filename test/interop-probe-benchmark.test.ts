import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { requireNative } from './helpers/backend.js';
import { probeBenchmark, formatProbeBenchmark, type ProbeBenchmarkResult } from '../src/interop/probe-benchmark.js';

/*
 * Issue 7.5. What this test can honestly assert (measured, see the report of the benchmark in the commit message /
 * bench/probe-benchmark.ts): a short SparK pre-training (100–400 steps of 16 images, 64 px, resnet_mini) makes its
 * loss fall, and both the pre-trained and the random-init encoder give a linear probe well above chance on the
 * texture-family dataset. It does NOT (yet) make the pre-trained encoder beat the random-init one under the same
 * linear probe: at this scale the random encoder was ahead on every seed, stage and probe setting tried. That claim is
 * therefore a `todo` sub-test: it runs and prints both numbers, and it is reported (not failed) while untrue.
 */
let result: ProbeBenchmarkResult | null = null;

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
    result = r;
    process.stdout.write(formatProbeBenchmark(r) + '\n');
    assert.ok(r.pretrain.finalLoss! < r.pretrain.firstLoss! - 0.02, `pre-training loss fell: ${r.pretrain.firstLoss} → ${r.pretrain.finalLoss}`);
    // 240 validation images, chance 12.5 %: one binomial standard error at chance is ≈ 2.1 points, so 4 points above
    // chance is ≈ 2 SE; both encoders measured ≥ 8 points above chance on the seeds tried.
    const chance = 100 / 8;
    assert.ok(r.random.top1 > chance + 4, `random-init probe ${r.random.top1}% should be above chance ${chance}%`);
    assert.ok(r.pretrained.top1 > chance + 4, `pre-trained probe ${r.pretrained.top1}% should be above chance ${chance}%`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('probe benchmark: SparK pre-trained encoder beats random init under the same linear probe', { todo: 'not true at this budget (see the comment at the top)' }, () => {
  if (!result) return;
  assert.ok(result.pretrained.top1 > result.random.top1, `pre-trained ${result.pretrained.top1}% vs random ${result.random.top1}%`);
});
