import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync } from 'node:fs';
import { requireNative } from './helpers/backend.js';
import { probeBenchmark, formatProbeBenchmark } from '../src/interop/probe-benchmark.js';

test('probe benchmark: SparK pre-training beats random init on the generated dataset', async (t) => {
  if (!(await requireNative(t, 'the pre-training + probe benchmark'))) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-probe-bench-'));
  const r = await probeBenchmark({
    dir,
    classes: 8,
    trainPerClass: 24,
    valPerClass: 10,
    size: 96,
    pretrainSteps: 150,
    batchSize: 32,
    encoder: 'resnet_mini',
    seed: 0,
    backend: 'auto',
    probeEpochs: 100,
  });
  process.stdout.write(formatProbeBenchmark(r) + '\n');
  assert.ok(r.pretrain.finalLoss! < r.pretrain.firstLoss!, 'pre-training loss fell');
  assert.ok(r.pretrained.top1 > r.random.top1, `pre-trained ${r.pretrained.top1}% should beat random ${r.random.top1}%`);
});
