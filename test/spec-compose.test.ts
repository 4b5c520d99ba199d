/** `extends:` composition and `--set` overrides. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { parse } from 'yaml';
import { applyOverride, deepMerge, loadExperiment, parseAssignment } from '../src/spec/index.js';
import { SpecError } from '../src/util/errors.js';
import { packageRoot } from '../src/util/paths.js';

const FIX = path.join(packageRoot(), 'test', 'fixtures', 'specs', 'extends');
const fx = (name: string) => path.join(FIX, name);

test('extends: mappings merge deeply, lists and scalars are replaced, the child wins', async () => {
  const { config, raw } = await loadExperiment(fx('child.yaml'));
  assert.equal(config.name, 'child');
  assert.equal(config.model.encoder, 'resnet_mini'); // from base
  assert.equal(config.model.mask_ratio, 0.75); // child wins
  assert.equal(config.model.decoder.width, 64); // base, nested
  assert.deepEqual(config.data.crop_scale, [0.8, 1.0]); // list replaced, not merged
  assert.deepEqual(config.tracking.tags, { team: 'vision', stage: 'child' }); // mapping merged
  assert.equal(config.train.epochs, 10);
  assert.equal('extends' in raw, false);
  assert.equal(raw['description'], undefined, 'raw is before defaults');
});

test('extends: a list is applied in order (later wins), then the file itself', async () => {
  const { config } = await loadExperiment(fx('list_child.yaml'));
  assert.equal(config.model.mask_ratio, 0.5); // other.yaml after base.yaml
  assert.equal(config.train.batch_size, 4); // other.yaml
  assert.equal(config.train.accumulate, 2); // the file itself
  assert.equal(config.train.optimizer.base_lr, 1e-3); // base.yaml
});

test('extends: recursive, paths relative to the extending file', async () => {
  const { config } = await loadExperiment(fx('sub/grandchild.yaml'));
  assert.equal(config.name, 'grandchild');
  assert.equal(config.runtime.seed, 7);
  assert.equal(config.model.mask_ratio, 0.75); // child.yaml
  assert.equal(config.model.encoder, 'resnet_mini'); // base.yaml, two levels up
});

test('extends: a child that sets train.steps replaces the inherited train.epochs', async () => {
  const { config } = await loadExperiment(fx('steps_child.yaml'));
  assert.equal(config.train.steps, 50);
  assert.equal(config.train.epochs, null);
  assert.equal(config.train.warmup_steps, 5);
});

test('--set overrides are typed by the schema and applied after merging', async () => {
  const { config } = await loadExperiment(fx('child.yaml'), {
    set: [
      'model.mask_ratio=0.5',
      'train.batch_size=32',
      'model.drop_path=null',
      'tracking.enabled=false',
      'tracking.run_name=123', // a string field keeps digits as text
      'data.crop_scale=[0.3, 0.9]',
      'train.optimizer.betas=[0.9, 0.98]',
      'model.encoder={family: convnext, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64]}',
      'tracking.tags.owner=me',
      'description=a: colon and = sign',
    ],
  });
  assert.equal(config.model.mask_ratio, 0.5);
  assert.equal(config.train.batch_size, 32);
  assert.equal(config.model.drop_path, null);
  assert.equal(config.tracking.enabled, false);
  assert.equal(config.tracking.run_name, '123');
  assert.deepEqual(config.data.crop_scale, [0.3, 0.9]);
  assert.deepEqual(config.train.optimizer.betas, [0.9, 0.98]);
  assert.deepEqual(config.model.encoder, { family: 'convnext', depths: [1, 1, 1, 1], dims: [8, 16, 32, 64] });
  assert.deepEqual(config.tracking.tags, { team: 'vision', stage: 'child', owner: 'me' });
  assert.equal(config.description, 'a: colon and = sign');
});

test('--set train.steps replaces train.epochs (and back)', async () => {
  const a = await loadExperiment(fx('child.yaml'), { set: ['train.steps=100', 'train.warmup_steps=10'] });
  assert.equal(a.config.train.steps, 100);
  assert.equal(a.config.train.epochs, null);
  const b = await loadExperiment(fx('steps_child.yaml'), { set: ['train.epochs=20'] });
  assert.equal(b.config.train.epochs, 20);
  assert.equal(b.config.train.steps, null);
});

test('later --set wins over earlier ones', async () => {
  const { config } = await loadExperiment(fx('child.yaml'), { set: ['model.mask_ratio=0.4', 'model.mask_ratio=0.7'] });
  assert.equal(config.model.mask_ratio, 0.7);
});

test('resolvedYaml is the resolved config', async () => {
  const loaded = await loadExperiment(fx('child.yaml'), { set: ['runtime.seed=3'] });
  assert.deepEqual(parse(loaded.resolvedYaml), loaded.config);
  assert.equal(loaded.specPath, fx('child.yaml'));
});

test('applyOverride returns a new object and leaves its input alone', () => {
  const raw = { name: 'x', model: { mask_ratio: 0.6 } };
  const out = applyOverride(raw, 'model.mask_ratio=0.75');
  assert.deepEqual(raw, { name: 'x', model: { mask_ratio: 0.6 } });
  assert.deepEqual(out, { name: 'x', model: { mask_ratio: 0.75 } });
  assert.deepEqual(applyOverride({}, 'train.optimizer.base_lr=1.5e-4'), { train: { optimizer: { base_lr: 1.5e-4 } } });
});

test('parseAssignment types values by the schema position', () => {
  assert.equal(parseAssignment('model.mask_ratio=0.75').value, 0.75);
  assert.equal(parseAssignment('runtime.threads=null').value, null);
  assert.equal(parseAssignment('runtime.threads=4').value, 4);
  assert.equal(parseAssignment('output.dir=123').value, '123');
  assert.equal(parseAssignment('tracking.enabled=true').value, true);
  assert.equal(parseAssignment('model.encoder=resnet101').value, 'resnet101');
  assert.equal(parseAssignment('name="quoted"').value, 'quoted');
  // a free-form section takes YAML values
  assert.deepEqual(parseAssignment('sweep={grid: {model.mask_ratio: [0.4, 0.6]}}').value, { grid: { 'model.mask_ratio': [0.4, 0.6] } });
  // a value of the wrong form is kept as written, so validation names its type
  assert.equal(parseAssignment('model.mask_ratio=abc').value, 'abc');
  assert.throws(() => parseAssignment('extends=x.yaml'), SpecError);
});

test('deepMerge: mappings merge, arrays replace, the alternative of train.steps is cleared', () => {
  const t = { a: { b: 1, c: [1, 2] }, train: { epochs: 5, batch_size: 2 } };
  deepMerge(t, { a: { c: [3] }, train: { steps: 9 } });
  assert.deepEqual(t, { a: { b: 1, c: [3] }, train: { epochs: null, batch_size: 2, steps: 9 } });
});
