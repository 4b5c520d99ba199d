import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, existsSync, readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { applyMix, planMix, sampleBeta, softTargetLoss } from '../src/downstream/session.js';
import { runProbe, trainLinearProbe } from '../src/downstream/probe.js';
import { runFinetune } from '../src/downstream/finetune.js';
import { recipeFor } from '../src/downstream/finetune-config.js';
import { importCheckpoint } from '../src/formats/import.js';
import { writeSyntheticFolder } from '../src/data/index.js';
import { resolveConfig } from '../src/spec/index.js';
import { Rng } from '../src/util/rng.js';
import { packageRoot } from '../src/util/paths.js';
import { readStore } from '../src/track/index.js';

const close = (a: number, b: number, tol = 1e-6) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

test('Beta sampler: symmetric mean 1/2 and the right variance', () => {
  const rng = Rng.from(0, 'beta');
  for (const a of [0.1, 0.8, 1.0, 4.0]) {
    const xs = Array.from({ length: 20000 }, () => sampleBeta(rng, a));
    const m = xs.reduce((s, x) => s + x, 0) / xs.length;
    const v = xs.reduce((s, x) => s + (x - m) ** 2, 0) / xs.length;
    assert.ok(xs.every((x) => x >= 0 && x <= 1));
    close(m, 0.5, 0.01);
    close(v, 1 / (4 * (2 * a + 1)), 0.01); // Var Beta(a,a) = 1/(4(2a+1))
  }
});

test('mixup / CutMix with label smoothing: soft targets and pixels', async () => {
  await testBackend();
  const B = 4;
  const K = 5;
  const S = 8;
  const imgs = tf.tidy(() => tf.range(0, B).reshape([B, 1, 1, 1]).tile([1, S, S, 3]) as tf.Tensor4D);
  const labels = Int32Array.from([0, 1, 2, 3]);
  const before = tf.memory().numTensors;
  // no mixing: smoothed one-hot, off = 0.1/5, on = 0.9 + 0.02
  const none = applyMix(imgs, labels, K, 0.1, { kind: 'none', lam: 1 });
  const y0 = none.y.arraySync();
  close(y0[0]![0]!, 0.92);
  close(y0[0]![1]!, 0.02);
  tf.dispose([none.x, none.y]);
  // mixup with lam 0.7: image 0 mixes with image 3 (flipped batch)
  const mx = applyMix(imgs, labels, K, 0.1, { kind: 'mixup', lam: 0.7 });
  close(mx.x.arraySync()[0]![0]![0]![0]!, 0.7 * 0 + 0.3 * 3, 1e-5);
  const ym = mx.y.arraySync();
  close(ym[0]![0]!, 0.7 * 0.92 + 0.3 * 0.02, 1e-6);
  close(ym[0]![3]!, 0.7 * 0.02 + 0.3 * 0.92, 1e-6);
  for (const row of ym) close(row.reduce((a, b) => a + b, 0), 1, 1e-5);
  tf.dispose([mx.x, mx.y]);
  // CutMix: pixels inside the box come from the flipped batch, lam = 1 − box area
  const plan = planMix(Rng.from(3, 'mix', 0), { mixup: 0, cutmix: 1, mix_prob: 1, switch_prob: 0.5 }, S);
  assert.equal(plan.kind, 'cutmix');
  const [y0b, y1b, x0b, x1b] = plan.box!;
  close(plan.lam, 1 - ((y1b - y0b) * (x1b - x0b)) / (S * S));
  const cm = applyMix(imgs, labels, K, 0, plan);
  const px = cm.x.arraySync();
  for (let i = 0; i < S; i++) {
    for (let j = 0; j < S; j++) {
      const inside = i >= y0b && i < y1b && j >= x0b && j < x1b;
      assert.equal(px[1]![i]![j]![0], inside ? 2 : 1);
    }
  }
  tf.dispose([cm.x, cm.y, imgs]);
  assert.equal(tf.memory().numTensors, before - 1);
});

test('soft-target CE and BCE-with-logits equal hand computations', async () => {
  await testBackend();
  const z = tf.tensor2d([[1, -2, 0.5]]);
  const y = tf.tensor2d([[0.8, 0.1, 0.1]]);
  const lse = Math.log(Math.exp(1) + Math.exp(-2) + Math.exp(0.5));
  const ce = -(0.8 * (1 - lse) + 0.1 * (-2 - lse) + 0.1 * (0.5 - lse));
  close(softTargetLoss(z, y, 'ce').dataSync()[0]!, ce, 1e-5);
  const bce = [1, -2, 0.5].map((v, i) => {
    const t = [0.8, 0.1, 0.1][i]!;
    const p = 1 / (1 + Math.exp(-v));
    return -(t * Math.log(p) + (1 - t) * Math.log(1 - p));
  });
  close(softTargetLoss(z, y, 'bce').dataSync()[0]!, bce.reduce((a, b) => a + b, 0) / 3, 1e-5);
  tf.dispose([z, y]);
});

test('recipe defaults follow spec §7.1', () => {
  assert.deepEqual(recipeFor('resnet50'), { optimizer: 'lamb', layerDecay: 0.7, mixup: 0.1, dropPath: 0.05, repeatedAug: 0, emaDecay: 0.9999 });
  assert.deepEqual(recipeFor('resnet152'), { optimizer: 'lamb', layerDecay: 0.8, mixup: 0.1, dropPath: 0.2, repeatedAug: 0, emaDecay: 0.9999 });
  assert.deepEqual(recipeFor('convnext_base'), { optimizer: 'adamw', layerDecay: 0.7, mixup: 0.8, dropPath: 0.4, repeatedAug: 3, emaDecay: 0.9999 });
  assert.equal(recipeFor('convnext_large').emaDecay, 0.9999);
  assert.equal(recipeFor('convnext_large', 384).emaDecay, 0.99995, 'ConvNeXt-L at 384');
});

test('linear probe separates linearly separable features', async () => {
  await testBackend();
  const rng = Rng.from(0, 'feat');
  const make = (n: number) => {
    const dim = 8;
    const feats = new Float32Array(n * dim);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      labels[i] = i % 3;
      for (let d = 0; d < dim; d++) feats[i * dim + d] = rng.normal() * 0.3 + (d === labels[i] ? 2 : 0);
    }
    return { feats, labels, n, dim };
  };
  const before = tf.memory().numTensors;
  const r = trainLinearProbe(make(90), make(30), 3, { epochs: 60, lr: 0.05, weight_decay: 0, batch_size: 32 }, 0);
  assert.equal(tf.memory().numTensors, before);
  assert.ok(r.top1 >= 95, `val top-1 ${r.top1}`);
  assert.equal(r.top5, 100);
  assert.ok(r.losses[r.losses.length - 1]! < r.losses[0]!);
});

async function tinyData() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-ft-'));
  await writeSyntheticFolder(path.join(dir, 'train'), { classes: 4, perClass: 4, size: 32, seed: 1 });
  await writeSyntheticFolder(path.join(dir, 'val'), { classes: 4, perClass: 2, size: 32, seed: 2 });
  return dir;
}

function tinyConfig(dir: string, task: 'finetune' | 'probe', encoder: unknown) {
  return resolveConfig(
    {
      name: `tiny-${task}`,
      task,
      model: { encoder },
      data: { source: 'imagefolder', root: path.join(dir, 'train'), val_root: path.join(dir, 'val'), input_size: 32, workers: 0 },
      train: { steps: 2, batch_size: 4, warmup_steps: 1, optimizer: { base_lr: 1e-3 } },
      output: { dir: path.join(dir, 'runs'), log_every: 1 },
      tracking: { uri: path.join(dir, 'mlruns'), experiment: 'downstream' },
      finetune: { probe: { epochs: 5, batch_size: 8 } },
    },
    { file: 'inline' },
  );
}

test('spark finetune: trains a head on an imported encoder and logs top-1/top-5', async () => {
  const info = await testBackend();
  const dir = await tinyData();
  const imp = await importCheckpoint(path.join(packageRoot(), 'test', 'fixtures', 'interop', 'resnet_timm_style.pth'), { out: path.join(dir, 'imported') });
  const config = tinyConfig(dir, 'finetune', imp.encoder);
  const before = tf.memory().numTensors;
  const r = await runFinetune({ config, specPath: null, init: imp.outDir, subscribers: [] });
  assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
  assert.equal(r.status, 'FINISHED');
  assert.equal(r.steps, 2);
  assert.equal(r.numClasses, 4);
  assert.ok(r.top1 >= 0 && r.top1 <= 100 && r.top5 >= r.top1);
  const metrics = JSON.parse(readFileSync(path.join(r.runDir, 'metrics.json'), 'utf8')) as { init: string; encoder: string };
  assert.equal(metrics.init, imp.outDir);
  assert.ok(existsSync(path.join(r.runDir, 'model.safetensors')));
  void info;
});

test('spark probe: random and imported encoders give results in the store', async () => {
  await testBackend();
  const dir = await tinyData();
  const imp = await importCheckpoint(path.join(packageRoot(), 'test', 'fixtures', 'interop', 'convnext_official_style.pth'), { out: path.join(dir, 'imported') });
  const config = tinyConfig(dir, 'probe', imp.encoder);
  const a = await runProbe({ config, specPath: null, init: imp.outDir, subscribers: [] });
  const b = await runProbe({ config, specPath: null, init: null, subscribers: [], nameSuffix: '-random' });
  for (const r of [a, b]) {
    assert.equal(r.status, 'FINISHED');
    assert.ok(r.trainTop1! >= 0 && r.top5 >= r.top1);
    assert.ok(r.mlflowRunId, 'logged to MLflow');
  }
  assert.notEqual(a.runDir, b.runDir);
  // the probe's accuracy is a metric of its MLflow run, like pre-training metrics
  const snap = await readStore(path.join(dir, 'mlruns'));
  const runs = snap.experiments.flatMap((e) => e.runs);
  const run = runs.find((r) => r.info.runId === a.mlflowRunId)!;
  assert.ok(run, 'the probe run is in the store');
  assert.equal(run.info.status, 'FINISHED');
  const hist = run.history['probe_top1']!;
  assert.ok(hist && hist.length === 1, 'probe_top1 logged once');
  assert.ok(Math.abs(hist[0]!.value - a.top1) < 1e-9, 'logged value equals the result');
});
