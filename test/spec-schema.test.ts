/**
 * The schema and src/spec/types.ts describe the same config: a fully typed sample ExperimentConfig (the compiler
 * checks it against the type) must have exactly the schema's property tree, and resolving a minimal spec must
 * produce exactly that tree too (every field has a default). Plus: defaults follow spec §6, bounds are present,
 * the encoder enum is the model registry's preset list.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { resolveConfig, experimentSchema, type ExperimentConfig } from '../src/spec/index.js';
import { PRESET_NAMES } from '../src/models/registry.js';
import { schemasDir } from '../src/util/paths.js';

type Node = Record<string, unknown> & { properties?: Record<string, Node> };

/** Every field of ExperimentConfig, with non-default values where it matters (the compiler checks this literal). */
const SAMPLE: ExperimentConfig = {
  name: 'sample',
  description: 'a sample',
  task: 'pretrain',
  model: {
    encoder: 'resnet50',
    decoder: { type: 'light', width: 768 },
    mask_ratio: 0.6,
    drop_path: null,
    densify_norm: 'auto',
  },
  data: {
    source: 'imagefolder',
    root: '/data/train',
    val_root: null,
    input_size: 224,
    crop_scale: [0.67, 1],
    crop_ratio: [0.75, 4 / 3],
    hflip: 0.5,
    workers: 2,
    prefetch: 2,
    synthetic_size: 1024,
  },
  train: {
    epochs: 1600,
    steps: null,
    batch_size: 4096,
    accumulate: 1,
    optimizer: {
      name: 'lamb',
      base_lr: 2e-4,
      base_batch_size: 256,
      betas: null,
      eps: null,
      weight_decay: 0.04,
      weight_decay_end: 0.2,
      clip_grad: 5,
    },
    warmup_epochs: 40,
    warmup_steps: null,
  },
  runtime: { backend: 'auto', device: 'auto', tf32: true, seed: 0, threads: null },
  output: { dir: 'runs', checkpoint_every: 1000, log_every: 10, reconstruct_every: 10, reconstruct_images: 8 },
  tracking: { enabled: true, uri: null, experiment: 'spark', run_name: null, tags: {}, close_timeout: 5 },
  sweep: null,
  finetune: null,
};

/** Sections whose content is free-form (not a fixed set of keys). */
const FREE_FORM = new Set(['tracking.tags', 'sweep', 'finetune', 'model.encoder']);

function dataTree(v: unknown, prefix = ''): string[] {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || FREE_FORM.has(prefix)) return [];
  return Object.entries(v).flatMap(([k, x]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    return [p, ...dataTree(x, p)];
  });
}

function schemaTree(s: Node, prefix = ''): string[] {
  if (FREE_FORM.has(prefix) || !s.properties) return [];
  return Object.entries(s.properties)
    .filter(([k]) => !(prefix === '' && k === 'extends'))
    .flatMap(([k, x]) => {
      const p = prefix ? `${prefix}.${k}` : k;
      return [p, ...schemaTree(x, p)];
    });
}

test('the schema property tree equals the ExperimentConfig key tree', () => {
  assert.deepEqual(schemaTree(experimentSchema() as Node).sort(), dataTree(SAMPLE).sort());
});

test('a spec with only a name resolves to a complete config (every field has a default)', () => {
  const cfg = resolveConfig({ name: 'minimal' }, { file: 'minimal.yaml' });
  assert.deepEqual(dataTree(cfg).sort(), dataTree(SAMPLE).sort());
  // and the order of keys follows the schema (what resolvedYaml shows)
  assert.deepEqual(Object.keys(cfg), Object.keys(SAMPLE));
  assert.deepEqual(Object.keys(cfg.train), Object.keys(SAMPLE.train));
});

test('name is required', () => {
  assert.throws(() => resolveConfig({}, { file: 'x.yaml' }), /missing required field 'name'/);
  assert.throws(() => resolveConfig({ name: '' }, { file: 'x.yaml' }), /name must not be empty/);
  assert.throws(() => resolveConfig({ name: 'a/b' }, { file: 'x.yaml' }), /name must use letters, digits/);
});

test('defaults follow the paper (spec §6.1)', () => {
  const c = resolveConfig({ name: 'd' }, { file: 'd.yaml' });
  assert.equal(c.task, 'pretrain');
  assert.equal(c.model.encoder, 'resnet50');
  assert.equal(c.model.mask_ratio, 0.6);
  assert.equal(c.model.decoder.width, 768);
  assert.equal(c.model.drop_path, null);
  assert.equal(c.model.densify_norm, 'auto');
  assert.equal(c.data.input_size, 224);
  assert.deepEqual(c.data.crop_scale, [0.67, 1]);
  assert.equal(c.data.hflip, 0.5);
  assert.equal(c.train.batch_size, 4096);
  assert.equal(c.train.epochs, 1600);
  assert.equal(c.train.steps, null);
  assert.equal(c.train.warmup_epochs, 40);
  assert.deepEqual(c.train.optimizer, {
    name: 'lamb',
    base_lr: 2e-4,
    base_batch_size: 256,
    betas: null,
    eps: null,
    weight_decay: 0.04,
    weight_decay_end: 0.2,
    clip_grad: 5,
  });
  assert.equal(c.sweep, null);
  assert.equal(c.finetune, null);
  assert.equal('extends' in c, false);
});

test('resolveConfig does not modify its input', () => {
  const raw = { name: 'x', model: { mask_ratio: 0.5 } };
  const copy = structuredClone(raw);
  resolveConfig(raw, { file: 'x.yaml' });
  assert.deepEqual(raw, copy);
});

function walk(s: unknown, at: string, visit: (n: Node, at: string) => void): void {
  if (Array.isArray(s)) s.forEach((x, i) => walk(x, `${at}[${i}]`, visit));
  else if (s && typeof s === 'object') {
    visit(s as Node, at);
    for (const [k, v] of Object.entries(s)) walk(v, `${at}/${k}`, visit);
  }
}

test('every field has a description and a default; every mapping refuses unknown keys', () => {
  const schema = experimentSchema() as Node;
  // fields that are required (no default) or only exist inside an encoder definition
  const noDefault = new Set(['name', 'extends']);
  const check = (s: Node, prefix: string) => {
    for (const [k, v] of Object.entries(s.properties ?? {})) {
      const p = prefix ? `${prefix}.${k}` : k;
      assert.equal(typeof v['description'], 'string', `${p} has no description`);
      if (!noDefault.has(p)) assert.ok('default' in v, `${p} has no default`);
      if (v.properties) check(v, p);
    }
  };
  check(schema, '');
  walk(schema, '#', (n, at) => {
    // encoderFamily only dispatches on `family`: its resnet/convnext branches are the closed mappings
    if (n.properties && n.type === 'object' && !at.endsWith('/encoderFamily')) assert.equal(n['additionalProperties'], false, `${at} accepts unknown keys`);
    if (n.properties && !at.includes('/if')) {
      for (const [k, v] of Object.entries(n.properties)) assert.equal(typeof v['description'], 'string', `${at}/${k} has no description`);
    }
  });
});

test('bounds: ratios, sizes, batch sizes, learning rates, betas', () => {
  const p = (experimentSchema() as Node).properties!;
  const model = p['model']!.properties!;
  assert.equal(model['mask_ratio']!['exclusiveMinimum'], 0);
  assert.equal(model['mask_ratio']!['exclusiveMaximum'], 1);
  const data = p['data']!.properties!;
  assert.equal(data['input_size']!['multipleOf'], 32);
  assert.equal(data['input_size']!['minimum'], 32);
  const train = p['train']!.properties!;
  assert.equal(train['batch_size']!['minimum'], 1);
  assert.equal(train['accumulate']!['minimum'], 1);
  const opt = train['optimizer']!.properties!;
  assert.equal(opt['base_lr']!['exclusiveMinimum'], 0);
  const betaItems = opt['betas']!['items'] as Node;
  assert.equal(betaItems['minimum'], 0);
  assert.equal(betaItems['exclusiveMaximum'], 1);
  for (const bad of [
    { model: { mask_ratio: 0 } },
    { model: { mask_ratio: 1 } },
    { data: { input_size: 16 } },
    { data: { input_size: 230 } },
    { train: { batch_size: 0 } },
    { train: { optimizer: { base_lr: 0 } } },
    { train: { optimizer: { betas: [0.9, 1] } } },
    { train: { optimizer: { betas: [0.9] } } },
    { train: { accumulate: 1.5 } },
    { runtime: { backend: 'gpu' } },
    { runtime: { device: 'gpu' } },
    { runtime: { device: 'cuda:x' } },
    { runtime: { tf32: 'yes' } },
  ]) {
    assert.throws(() => resolveConfig({ name: 'b', ...bad }, { file: 'b.yaml' }), /must/, JSON.stringify(bad));
  }
});

test('the encoder preset enum is exactly the model registry preset list', () => {
  const enc = (experimentSchema() as Node).properties!['model']!.properties!['encoder']!;
  assert.deepEqual((enc['then'] as Node)['enum'], [...PRESET_NAMES]);
  for (const name of PRESET_NAMES) {
    assert.equal(resolveConfig({ name: 'p', model: { encoder: name } }, { file: 'p.yaml' }).model.encoder, name);
  }
});

test('parameterised encoders: resnet {layers, width} and convnext {depths, dims}', () => {
  const r = resolveConfig({ name: 'r', model: { encoder: { family: 'resnet', layers: [1, 1, 1, 1] } } }, { file: 'r.yaml' });
  assert.deepEqual(r.model.encoder, { family: 'resnet', layers: [1, 1, 1, 1], width: 64 });
  const c = resolveConfig(
    { name: 'c', model: { encoder: { family: 'convnext', depths: [1, 1, 1, 1], dims: [8, 16, 32, 64] } } },
    { file: 'c.yaml' },
  );
  assert.deepEqual(c.model.encoder, { family: 'convnext', depths: [1, 1, 1, 1], dims: [8, 16, 32, 64] });
  assert.throws(
    () => resolveConfig({ name: 'x', model: { encoder: { family: 'resnet', layers: [1, 1, 1, 1], dims: [1, 1, 1, 1] } } }, { file: 'x.yaml' }),
    /unknown key 'dims' in model\.encoder/,
  );
  assert.throws(() => resolveConfig({ name: 'x', model: { encoder: { family: 'vit' } } }, { file: 'x.yaml' }), /model\.encoder\.family must be one of: resnet, convnext/);
  assert.throws(() => resolveConfig({ name: 'x', model: { encoder: { layers: [1, 1, 1, 1] } } }, { file: 'x.yaml' }), /missing required field 'family'/);
  assert.throws(() => resolveConfig({ name: 'x', model: { encoder: 5 } }, { file: 'x.yaml' }), /model\.encoder must be a string or a mapping/);
});

test('cross-field rules: epochs xor steps, warm-up shorter than the run, a mask that keeps and hides cells', () => {
  assert.throws(() => resolveConfig({ name: 'x', train: { epochs: 5, steps: 10 } }, { file: 'x.yaml' }), /set only one of train\.epochs \(5\) and train\.steps \(10\)/);
  const s = resolveConfig({ name: 'x', train: { steps: 10, warmup_steps: 2 } }, { file: 'x.yaml' });
  assert.equal(s.train.epochs, null);
  assert.equal(s.train.steps, 10);
  assert.throws(() => resolveConfig({ name: 'x', train: { epochs: 10 } }, { file: 'x.yaml' }), /train\.epochs must be > train\.warmup_epochs \(40, the default\)/);
  assert.throws(() => resolveConfig({ name: 'x', train: { steps: 10, warmup_steps: 10 } }, { file: 'x.yaml' }), /train\.warmup_steps must be < train\.steps/);
  assert.throws(() => resolveConfig({ name: 'x', data: { input_size: 64 }, model: { mask_ratio: 0.9 } }, { file: 'x.yaml' }), /leaves no visible cell/);
  assert.throws(() => resolveConfig({ name: 'x', data: { input_size: 32 }, model: { mask_ratio: 0.3 } }, { file: 'x.yaml' }), /masks no cell/);
  assert.throws(() => resolveConfig({ name: 'x', data: { crop_scale: [0.9, 0.5] } }, { file: 'x.yaml' }), /crop_scale must be \[min, max\]/);
});

test('resolveConfig attributes errors to overrides (sweep trials)', () => {
  assert.throws(
    () => resolveConfig({ name: 'x', model: { mask_ratio: 1.2 } }, { file: 'x.yaml', overrides: ['model.mask_ratio=1.2'], overrideLabel: 'trial 2:' }),
    (err: Error & { file?: string }) => err.message === 'must be < 1' && err.file === 'trial 2: model.mask_ratio=1.2',
  );
});

test('the sub-schema stubs are valid JSON Schema documents the experiment schema references', () => {
  const exp = JSON.parse(readFileSync(path.join(schemasDir(), 'experiment.schema.json'), 'utf8')) as Node;
  for (const [key, file] of [['sweep', 'sweep.schema.json'], ['finetune', 'finetune.schema.json']] as const) {
    const sub = JSON.parse(readFileSync(path.join(schemasDir(), file), 'utf8')) as Node;
    assert.equal(sub['$schema'], 'https://json-schema.org/draft/2020-12/schema');
    assert.equal(typeof sub['description'], 'string');
    assert.equal(exp.properties![key]!['$ref'], file);
    assert.equal(exp.properties![key]!['default'], null);
  }
  const c = resolveConfig({ name: 'x', sweep: { grid: { 'model.mask_ratio': [0.4, 0.6] } } }, { file: 'x.yaml' });
  assert.deepEqual(c.sweep?.grid, { 'model.mask_ratio': [0.4, 0.6] });
  assert.throws(() => resolveConfig({ name: 'x', sweep: 3 }, { file: 'x.yaml' }), /sweep must be a mapping or null/);
});

test("train.accumulate: 'auto' by default, or an integer that divides the batch", () => {
  assert.equal(resolveConfig({ name: 'a' }, { file: 'a.yaml' }).train.accumulate, 'auto');
  assert.equal(resolveConfig({ name: 'a', train: { batch_size: 64, accumulate: 8 } }, { file: 'a.yaml' }).train.accumulate, 8);
  for (const bad of ['banana', 1.5, true]) {
    assert.throws(() => resolveConfig({ name: 'a', train: { accumulate: bad } }, { file: 'a.yaml' }), /must be 'auto' or an integer >= 1/, String(bad));
  }
  assert.throws(
    () => resolveConfig({ name: 'a', train: { batch_size: 64, accumulate: 3 } }, { file: 'a.yaml' }),
    /train\.accumulate \(3\) must divide train\.batch_size \(64\) into equal micro-batches/,
  );
});
