/** The dry-run plan: mask geometry (spec §1.2, O1), batch/lr arithmetic, schedule lengths (O10), model sizes (§3.4). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { formatPlan, loadExperiment, planRun, resolveConfig, type ExperimentConfig } from '../src/spec/index.js';
import { packageRoot } from '../src/util/paths.js';

const EXP = path.join(packageRoot(), 'experiments');
const cfg = (raw: Record<string, unknown>): ExperimentConfig => resolveConfig({ name: 'p', ...raw }, { file: 'p.yaml' });

test('O1: visible cells per image with round-half-even', () => {
  const cases: Array<[number, number, number, number]> = [
    // input, ratio, cells, visible
    [224, 0.4, 49, 29],
    [224, 0.5, 49, 24],
    [224, 0.6, 49, 20],
    [224, 0.7, 49, 15],
    [224, 0.75, 49, 12],
    [224, 0.8, 49, 10],
    [224, 0.9, 49, 5],
    [384, 0.6, 144, 58],
    [384, 0.75, 144, 36],
    [384, 0.5, 144, 72],
    [128, 0.6, 16, 6],
    [128, 0.75, 16, 4],
    [160, 0.5, 25, 12],
    [160, 0.7, 25, 8],
    [160, 0.9, 25, 2],
    [256, 0.6, 64, 26],
    [256, 0.75, 64, 16],
    [512, 0.6, 256, 102],
    [512, 0.75, 256, 64],
  ];
  for (const [input, ratio, cells, keep] of cases) {
    const p = planRun(cfg({ data: { input_size: input }, model: { mask_ratio: ratio } }));
    assert.equal(p.mask.fmap, input / 32);
    assert.equal(p.mask.cells, cells, `${input}@${ratio}`);
    assert.equal(p.mask.lenKeep, keep, `${input}@${ratio}`);
    assert.equal(p.mask.masked, cells - keep);
  }
});

test('ResNet-50 recipe on an ImageNet-sized data set: 313 it/epoch, peak lr 3.2e-3, O10 lengths', async () => {
  const { config } = await loadExperiment(path.join(EXP, 'resnet50.yaml'), {
    set: ['data.source=synthetic', 'data.synthetic_size=1281167'],
  });
  const p = planRun(config);
  assert.equal(p.encoder.name, 'resnet50');
  assert.equal(p.encoder.params, 23_508_032);
  assert.equal(p.sparkParams, 52_921_835);
  assert.equal(p.batch.effective, 4096);
  assert.ok(Math.abs(p.lr.peak - 3.2e-3) < 1e-15);
  assert.equal(p.schedule.itersPerEpoch, 313);
  assert.equal(p.schedule.totalIters, 500_800);
  assert.equal(p.schedule.warmupIters, 12_520);
  assert.deepEqual(p.optimizer.betas, [0.9, 0.95]);
  assert.equal(p.optimizer.betasAreDefault, true);
  assert.equal(p.dropPath, 0.05);
  assert.equal(p.dropPathIsDefault, true);
  assert.equal(p.densifyNorm, 'bn');
  assert.equal(p.mask.lenKeep, 20);
  assert.equal(p.outputDir, path.join('runs', 'resnet50', '<run-id>'));
  assert.equal(planRun(config, { runId: 'abc' }).outputDir, path.join('runs', 'resnet50', 'abc'));
  // 800 epochs with 20 warm-up (the author's re-run)
  const p800 = planRun({ ...config, train: { ...config.train, epochs: 800, warmup_epochs: 20 } });
  assert.equal(p800.schedule.warmupIters, 6260);
  assert.equal(p800.schedule.totalIters, 250_400);
});

test('ConvNeXt-L at 384: 36 of 144 visible, bs 2048 × 4e-4 → peak 3.2e-3, β2 0.999, drop path 0.4', async () => {
  const { config } = await loadExperiment(path.join(EXP, 'convnext_l_384.yaml'));
  const p = planRun(config);
  assert.equal(p.encoder.family, 'convnext');
  assert.equal(p.encoder.params, 196_227_264);
  assert.equal(p.sparkParams, 224_083_755);
  assert.equal(p.mask.cells, 144);
  assert.equal(p.mask.lenKeep, 36);
  assert.equal(p.batch.effective, 2048);
  assert.ok(Math.abs(p.lr.peak - 3.2e-3) < 1e-15);
  assert.deepEqual(p.optimizer.betas, [0.9, 0.999]);
  assert.equal(p.dropPath, 0.4);
  assert.equal(p.densifyNorm, 'ln');
});

test('explicit betas, drop path and accumulation are used as given', () => {
  const p = planRun(
    cfg({
      model: { encoder: 'convnext_small', drop_path: 0.1 },
      train: { batch_size: 256, accumulate: 4, optimizer: { betas: [0.8, 0.9], base_lr: 1e-3, base_batch_size: 128 } },
      data: { synthetic_size: 1000 },
    }),
  );
  assert.equal(p.batch.effective, 256);
  assert.equal(p.batch.micro, 64);
  assert.equal(p.batch.accumulate, 4);
  assert.equal(p.batch.mode, 'explicit');
  assert.equal(p.lr.peak, 2e-3);
  assert.deepEqual(p.optimizer.betas, [0.8, 0.9]);
  assert.equal(p.optimizer.betasAreDefault, false);
  assert.equal(p.dropPath, 0.1);
  assert.equal(p.dropPathIsDefault, false);
  assert.equal(p.schedule.itersPerEpoch, 4); // ceil(1000 / 256)
  assert.equal(p.encoder.params, 49_453_152);
  assert.equal(p.sparkParams, 74_383_083);
});

test('steps-based length: total = steps, warm-up from warmup_steps, epochs fractional', async () => {
  const { config } = await loadExperiment(path.join(EXP, 'quickstart.yaml'));
  const p = planRun(config);
  const N = config.data.synthetic_size;
  const eff = config.train.batch_size;
  assert.equal(p.schedule.lengthFrom, 'steps');
  assert.equal(p.schedule.itersPerEpoch, Math.ceil(N / eff));
  assert.equal(p.schedule.totalIters, config.train.steps);
  assert.equal(p.schedule.warmupIters, config.train.warmup_steps);
  assert.equal(p.schedule.epochs, config.train.steps! / Math.ceil(N / eff));
  assert.deepEqual(p.warnings, []);
});

test('imagefolder: N is the number of image files under root, or unknown when it does not exist', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'spark-plan-'));
  try {
    for (const cls of ['n01', 'n02']) {
      mkdirSync(path.join(root, cls));
      for (let i = 0; i < 5; i++) writeFileSync(path.join(root, cls, `img${i}.JPEG`), '');
    }
    writeFileSync(path.join(root, 'n01', 'notes.txt'), '');
    writeFileSync(path.join(root, 'n02', 'x.png'), '');
    mkdirSync(path.join(root, '.hidden'));
    writeFileSync(path.join(root, '.hidden', 'y.jpg'), '');
    const p = planRun(cfg({ data: { source: 'imagefolder', root }, train: { batch_size: 4, epochs: 50, warmup_epochs: 2 } }));
    assert.equal(p.dataset.size, 11);
    assert.equal(p.schedule.itersPerEpoch, 3);
    assert.equal(p.schedule.totalIters, 150);
    assert.equal(p.schedule.warmupIters, 6);
    const missing = planRun(cfg({ data: { source: 'imagefolder', root: path.join(root, 'nope') } }));
    assert.equal(missing.dataset.size, null);
    assert.equal(missing.schedule.itersPerEpoch, null);
    assert.equal(missing.schedule.totalIters, null);
    assert.match(missing.warnings.join('\n'), /does not exist/);
    assert.match(formatPlan(missing), /iterations\/epoch\s+unknown/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('warm-up longer than the run is a warning in the plan', () => {
  const p = planRun(cfg({ train: { steps: 100 }, data: { synthetic_size: 64 }, model: { encoder: 'resnet_mini' } }));
  // 40 warm-up epochs × ceil(64/4096) = 40 iterations: fine; make the batch small to exceed
  assert.deepEqual(p.warnings.filter((w) => w.includes('warm-up')), []);
  const q = planRun(cfg({ train: { steps: 100, batch_size: 8 }, data: { synthetic_size: 64 }, model: { encoder: 'resnet_mini' } }));
  assert.equal(q.schedule.warmupIters, 320);
  assert.match(q.warnings.join('\n'), /warm-up \(320 iterations\) is not shorter than the run \(100\)/);
});

test('formatPlan shows the numbers and the resolved config', async () => {
  const { config } = await loadExperiment(path.join(EXP, 'resnet50.yaml'), { set: ['data.source=synthetic', 'data.synthetic_size=1281167'] });
  const text = formatPlan(planRun(config, { budget: { limitBytes: 24 * 2 ** 30, source: 'a test budget' } }));
  for (const frag of [
    'resnet50',
    '23,508,032',
    '52,921,835',
    '7×7 = 49 cells',
    '20 visible, 29 masked of 49',
    // 16 B per activation element (models/memory.ts CALIBRATION, measured after the lean backward pass)
    '4,096 per step = 128 micro-batches of 32 (gradients averaged), accumulate auto',
    'estimated peak 21.9 GiB at micro-batch 32 (353 MiB per image',
    'of a 24.0 GiB budget (a test budget)',
    'peak 3.2e-3',
    'betas (0.9, 0.95)',
    '313',
    '1,600 epochs = 500,800 iterations',
    '12,520 iterations',
    path.join('runs', 'resnet50', '<run-id>'),
    'nothing is written',
    'resolved config',
    'mask_ratio: 0.6',
  ]) {
    assert.ok(text.includes(frag), `plan lacks '${frag}':\n${text}`);
  }
});
