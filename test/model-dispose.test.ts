import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { buildSparK, buildEncoder } from '../src/models/spark.js';
import { resolveConfig } from '../src/spec/index.js';
import { runExperiment } from '../src/train/run.js';

test('building and disposing models leaves no tensor behind (initial values included)', async () => {
  await testBackend();
  const before = tf.memory().numTensors;
  const m = buildSparK({ encoder: 'resnet_mini', decoder: { type: 'light', width: 64 }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' }, 64, 0);
  assert.equal(tf.memory().numTensors - before, m.params.size + m.buffers.size, 'one tensor per variable');
  m.dispose();
  const e = buildEncoder('convnext_mini', { seed: 0, numClasses: 5 });
  e.dispose();
  assert.equal(tf.memory().numTensors, before);
});

test('consecutive in-process runs (as sweep trials are) do not accumulate tensors', async () => {
  await testBackend();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-dispose-'));
  const config = resolveConfig(
    {
      name: 'dispose',
      model: { encoder: 'resnet_mini', decoder: { width: 64 } },
      data: { source: 'synthetic', synthetic_size: 8, input_size: 64, workers: 0 },
      train: { steps: 2, batch_size: 2, warmup_steps: 1 },
      output: { dir: path.join(dir, 'runs'), reconstruct_every: 1, reconstruct_images: 2 },
      tracking: { uri: path.join(dir, 'mlruns') },
    },
    { file: 'inline' },
  );
  const counts: number[] = [];
  for (let i = 0; i < 2; i++) {
    const r = await runExperiment({ config, specPath: null, subscribers: [] });
    assert.equal(r.status, 'FINISHED');
    counts.push(tf.memory().numTensors);
  }
  assert.equal(counts[1], counts[0], `tensors after each run: ${counts.join(', ')}`);
});
