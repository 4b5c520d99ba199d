/** Every ready-to-run spec in experiments/ validates, and the paper recipes carry the paper's numbers (spec §6). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadExperiment, planRun } from '../src/spec/index.js';
import { packageRoot } from '../src/util/paths.js';

const EXP = path.join(packageRoot(), 'experiments');
const files = readdirSync(EXP).filter((f) => f.endsWith('.yaml')).sort();
const runnable = files.filter((f) => !f.startsWith('_'));

test('experiments/ holds the quickstart, the paper recipes and the mask-ratio sweep', () => {
  for (const f of [
    'quickstart.yaml',
    'resnet50.yaml',
    'resnet101.yaml',
    'resnet152.yaml',
    'resnet200.yaml',
    'convnext_s.yaml',
    'convnext_b.yaml',
    'convnext_l.yaml',
    'convnext_l_384.yaml',
    'sweep_mask_ratio.yaml',
    '_base_imagenet.yaml',
  ]) {
    assert.ok(files.includes(f), `experiments/${f} is missing`);
  }
});

for (const f of runnable) {
  test(`experiments/${f} validates and its name is its file name`, async () => {
    const { config } = await loadExperiment(path.join(EXP, f));
    assert.equal(config.name, f.replace(/\.yaml$/, ''));
    // the plan can be computed (model registry knows the encoder, numbers are finite)
    const plan = planRun(config);
    assert.ok(plan.sparkParams > plan.encoder.params);
  });
}

test('partial specs (_*.yaml) are each extended by some experiment', () => {
  for (const base of files.filter((f) => f.startsWith('_'))) {
    const users = runnable.filter((f) => readFileSync(path.join(EXP, f), 'utf8').includes(`extends: ${base}`));
    assert.ok(users.length > 0, `${base} is extended by nothing`);
  }
});

const PAPER: Record<string, { encoder: string; input: number; mask: number; bs: number; lr: number }> = {
  'resnet50.yaml': { encoder: 'resnet50', input: 224, mask: 0.6, bs: 4096, lr: 2e-4 },
  'resnet101.yaml': { encoder: 'resnet101', input: 224, mask: 0.6, bs: 4096, lr: 2e-4 },
  'resnet152.yaml': { encoder: 'resnet152', input: 224, mask: 0.6, bs: 4096, lr: 2e-4 },
  'resnet200.yaml': { encoder: 'resnet200', input: 224, mask: 0.6, bs: 4096, lr: 2e-4 },
  'convnext_s.yaml': { encoder: 'convnext_small', input: 224, mask: 0.6, bs: 4096, lr: 2e-4 },
  'convnext_b.yaml': { encoder: 'convnext_base', input: 224, mask: 0.6, bs: 4096, lr: 2e-4 },
  'convnext_l.yaml': { encoder: 'convnext_large', input: 224, mask: 0.6, bs: 4096, lr: 2e-4 },
  'convnext_l_384.yaml': { encoder: 'convnext_large', input: 384, mask: 0.75, bs: 2048, lr: 4e-4 },
};

test('paper recipes: encoder, input, mask, batch, lr, 1600 epochs, 40 warm-up, LAMB, wd 0.04 → 0.2', async () => {
  for (const [f, want] of Object.entries(PAPER)) {
    const { config: c } = await loadExperiment(path.join(EXP, f));
    assert.equal(c.model.encoder, want.encoder, f);
    assert.equal(c.data.input_size, want.input, f);
    assert.equal(c.model.mask_ratio, want.mask, f);
    assert.equal(c.train.batch_size, want.bs, f);
    assert.equal(c.train.accumulate, 'auto', `${f}: the batch is split to fit the machine`);
    assert.equal(c.train.optimizer.base_lr, want.lr, f);
    assert.equal(c.train.optimizer.base_batch_size, 256, f);
    assert.equal(c.train.epochs, 1600, f);
    assert.equal(c.train.warmup_epochs, 40, f);
    assert.equal(c.train.optimizer.name, 'lamb', f);
    assert.equal(c.train.optimizer.weight_decay, 0.04, f);
    assert.equal(c.train.optimizer.weight_decay_end, 0.2, f);
    assert.equal(c.train.optimizer.clip_grad, 5, f);
    assert.equal(c.model.decoder.width, 768, f);
    assert.equal(c.model.drop_path, null, f);
    assert.deepEqual(c.data.crop_scale, [0.67, 1], f);
    assert.equal(c.data.source, 'imagefolder', f);
    assert.ok(Math.abs((c.train.optimizer.base_lr * want.bs) / 256 - 3.2e-3) < 1e-12, `${f}: peak lr 3.2e-3`);
  }
});

test('quickstart is small: a mini encoder on synthetic data, a few hundred steps at most', async () => {
  const { config: c } = await loadExperiment(path.join(EXP, 'quickstart.yaml'));
  assert.match(String(c.model.encoder), /_mini$/);
  assert.equal(c.data.source, 'synthetic');
  assert.ok(c.data.input_size <= 96);
  assert.ok(c.train.steps != null && c.train.steps <= 500);
  assert.ok(c.train.batch_size <= 32);
  assert.ok(planRun(c).sparkParams < 5e6);
});

test('the mask-ratio sweep varies model.mask_ratio over 0.4 / 0.6 / 0.75 on a small model', async () => {
  const { config: c } = await loadExperiment(path.join(EXP, 'sweep_mask_ratio.yaml'));
  assert.deepEqual(c.sweep?.grid, { 'model.mask_ratio': [0.4, 0.6, 0.75] });
  assert.equal(c.data.source, 'synthetic');
  assert.match(String(c.model.encoder), /_mini$/);
});
