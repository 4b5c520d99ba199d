import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expandSweep, parseCliSweep, splitTopLevel, formatValue, varyingPaths } from '../src/sweep/expand.js';
import { SpecError, UsageError } from '../src/util/errors.js';

const base = () => ({
  name: 'sw',
  data: { source: 'synthetic', input_size: 64 },
  train: { steps: 2, batch_size: 2 },
  model: { encoder: 'resnet_mini', mask_ratio: 0.6 },
});

const convnext = { family: 'convnext', depths: [1, 1, 2, 1], dims: [32, 64, 128, 256] };

test('grid: cartesian product, keys in spec order, last key fastest; names from the varying values', () => {
  const raw = { ...base(), sweep: { grid: { 'model.mask_ratio': [0.4, 0.6, 0.75], 'train.optimizer.base_lr': [1e-4, 2e-4] } } };
  const trials = expandSweep(raw, [], { file: 'x.yaml' });
  assert.equal(trials.length, 6);
  assert.deepEqual(
    trials.map((t) => [t.config.model.mask_ratio, t.config.train.optimizer.base_lr]),
    [
      [0.4, 1e-4],
      [0.4, 2e-4],
      [0.6, 1e-4],
      [0.6, 2e-4],
      [0.75, 1e-4],
      [0.75, 2e-4],
    ],
  );
  assert.deepEqual(trials.map((t) => t.index), [0, 1, 2, 3, 4, 5]);
  assert.equal(trials[0]!.name, 'mask_ratio=0.4,base_lr=0.0001');
  assert.equal(trials[5]!.name, 'mask_ratio=0.75,base_lr=0.0002');
  // the trial name becomes the child run's name; the sweep section is gone from the trial config
  assert.equal(trials[3]!.config.tracking.run_name, 'mask_ratio=0.6,base_lr=0.0002');
  assert.equal(trials[3]!.config.sweep, null);
  assert.deepEqual(trials[3]!.params, { 'model.mask_ratio': '0.6', 'train.optimizer.base_lr': '0.0002' });
});

test('zip pairs values and is combined as grid × zip (zip fastest); list is appended', () => {
  const raw = {
    ...base(),
    sweep: {
      grid: { 'model.mask_ratio': [0.5, 0.7] },
      zip: { 'train.batch_size': [2, 4, 8], 'train.optimizer.base_lr': [1e-4, 2e-4, 4e-4] },
      list: [{ 'model.mask_ratio': 0.8, 'train.batch_size': 16 }, {}],
    },
  };
  const trials = expandSweep(raw, [], { file: 'x.yaml' });
  assert.equal(trials.length, 2 * 3 + 2);
  assert.deepEqual(
    trials.slice(0, 6).map((t) => [t.config.model.mask_ratio, t.config.train.batch_size, t.config.train.optimizer.base_lr]),
    [
      [0.5, 2, 1e-4],
      [0.5, 4, 2e-4],
      [0.5, 8, 4e-4],
      [0.7, 2, 1e-4],
      [0.7, 4, 2e-4],
      [0.7, 8, 4e-4],
    ],
  );
  assert.equal(trials[6]!.config.model.mask_ratio, 0.8);
  assert.equal(trials[6]!.config.train.batch_size, 16);
  assert.equal(trials[6]!.config.train.optimizer.base_lr, trials[7]!.config.train.optimizer.base_lr); // base value
  assert.equal(trials[7]!.config.model.mask_ratio, 0.6); // the empty entry is the base spec
  assert.equal(trials[6]!.name, 'mask_ratio=0.8,batch_size=16');
  assert.equal(trials[7]!.name, 'trial-7');
});

test('zip lists of different lengths and a path in both grid and zip are spec errors', () => {
  const bad = { ...base(), sweep: { zip: { 'train.batch_size': [2, 4], 'model.mask_ratio': [0.4] } } };
  assert.throws(() => expandSweep(bad, [], { file: 'x.yaml' }), (e: unknown) => e instanceof SpecError && /equal lengths/.test(e.message));
  const dup = { ...base(), sweep: { grid: { 'model.mask_ratio': [0.4] }, zip: { 'model.mask_ratio': [0.5] } } };
  assert.throws(() => expandSweep(dup, [], { file: 'x.yaml' }), (e: unknown) => e instanceof SpecError && /swept only once/.test(e.message));
});

test('list only; no sweep at all is one trial of the base', () => {
  const raw = { ...base(), sweep: { list: [{ 'model.mask_ratio': 0.3 }, { 'model.mask_ratio': 0.8, 'model.encoder': 'convnext_mini' }] } };
  const trials = expandSweep(raw, [], { file: 'x.yaml' });
  assert.equal(trials.length, 2);
  assert.equal(trials[0]!.name, 'mask_ratio=0.3');
  assert.equal(trials[1]!.name, 'mask_ratio=0.8,encoder=convnext_mini');
  const one = expandSweep(base(), [], { file: 'x.yaml' });
  assert.equal(one.length, 1);
  assert.equal(one[0]!.config.model.mask_ratio, 0.6);
});

test('object values: an encoder given as a mapping is applied whole and named compactly', () => {
  const raw = { ...base(), sweep: { grid: { 'model.encoder': ['resnet_mini', convnext] } } };
  const trials = expandSweep(raw, [], { file: 'x.yaml' });
  assert.equal(trials.length, 2);
  assert.equal(trials[0]!.config.model.encoder, 'resnet_mini');
  assert.deepEqual(trials[1]!.config.model.encoder, convnext);
  assert.equal(trials[1]!.name, 'encoder=convnext(depths=[1,1,2,1],dims=[32,64,128,256])');
  assert.equal(formatValue({ family: 'resnet', layers: [1, 1, 1, 1], name: 'tiny' }), 'tiny');
});

test('name_template placeholders: {index}, {name}, dotted paths from overrides or the resolved config', () => {
  const raw = { ...base(), sweep: { grid: { 'model.mask_ratio': [0.4, 0.6] }, name_template: 'r{index}-mr{model.mask_ratio}-bs{train.batch_size}|{name}' } };
  const trials = expandSweep(raw, [], { file: 'x.yaml' });
  assert.deepEqual(trials.map((t) => t.name), ['r0-mr0.4-bs2|mask_ratio=0.4', 'r1-mr0.6-bs2|mask_ratio=0.6']);
  assert.equal(trials[1]!.config.tracking.run_name, 'r1-mr0.6-bs2|mask_ratio=0.6');
});

test('--sweep axes: split on top-level commas, typed by the schema, appended to (or replacing) the grid', () => {
  assert.deepEqual(splitTopLevel('0.4,0.6,[1,2],{a: 1, b: 2},"x,y"'), ['0.4', '0.6', '[1,2]', '{a: 1, b: 2}', '"x,y"']);
  const [p, vals] = parseCliSweep('model.mask_ratio=0.4,0.6,0.75', base());
  assert.equal(p, 'model.mask_ratio');
  assert.deepEqual(vals, [0.4, 0.6, 0.75]);
  assert.deepEqual(parseCliSweep('data.crop_scale=[0.2,1],[0.5,1]', base())[1], [
    [0.2, 1],
    [0.5, 1],
  ]);
  assert.deepEqual(parseCliSweep('model.encoder=resnet_mini,{family: convnext, depths: [1,1,2,1], dims: [32,64,128,256]}', base())[1], ['resnet_mini', convnext]);
  // strings stay strings where the schema says string (a name that looks like a number)
  assert.deepEqual(parseCliSweep('tracking.experiment=123,abc', base())[1], ['123', 'abc']);

  const raw = { ...base(), sweep: { grid: { 'model.mask_ratio': [0.1, 0.2], 'train.batch_size': [2, 4] } } };
  const trials = expandSweep(raw, ['model.mask_ratio=0.5,0.55,0.65', 'train.optimizer.base_lr=1e-3,2e-3'], { file: 'x.yaml' });
  assert.equal(trials.length, 3 * 2 * 2);
  // the replaced axis keeps its position; the new one is last (fastest)
  assert.deepEqual(
    trials.slice(0, 3).map((t) => [t.config.model.mask_ratio, t.config.train.batch_size, t.config.train.optimizer.base_lr]),
    [
      [0.5, 2, 1e-3],
      [0.5, 2, 2e-3],
      [0.5, 4, 1e-3],
    ],
  );
});

test('--sweep errors: no =, empty value, unknown path', () => {
  assert.throws(() => parseCliSweep('model.mask_ratio', base()), UsageError);
  assert.throws(() => parseCliSweep('model.mask_ratio=0.4,,0.6', base()), UsageError);
  assert.throws(
    () => parseCliSweep('model.mask_ratoi=0.4', base()),
    (e: unknown) => e instanceof SpecError && e.format() === "--sweep model.mask_ratoi=0.4: unknown key 'mask_ratoi' in model (did you mean 'mask_ratio'?)",
  );
});

test('one invalid trial fails the whole expansion, naming the trial and the override', () => {
  const raw = { ...base(), sweep: { grid: { 'model.mask_ratio': [0.4, 0.6, 0.75, 1.2] } } };
  assert.throws(
    () => expandSweep(raw, [], { file: 'x.yaml' }),
    (e: unknown) => {
      assert.ok(e instanceof SpecError);
      assert.equal(e.exitCode, 2);
      assert.equal(e.format(), 'trial 4/4 (mask_ratio=1.2): --set model.mask_ratio=1.2: must be < 1');
      return true;
    },
  );
  // an object value with a bad field is reported against its override
  const bad = { ...base(), sweep: { list: [{}, { 'model.encoder': { family: 'convnext', depths: [1, 1, 2], dims: [32, 64, 128, 256] } }] } };
  assert.throws(
    () => expandSweep(bad, [], { file: 'x.yaml' }),
    (e: unknown) => e instanceof SpecError && e.format().startsWith('trial 2/2 (encoder=convnext(depths=[1,1,2],dims=[32,64,128,256])): --set model.encoder='),
  );
});

test('varying paths ignore axes that are the same in every trial', () => {
  assert.deepEqual(varyingPaths([{ a: 1, b: 2 }, { a: 1, b: 3 }, { a: 1 }]), ['b']);
  const raw = { ...base(), sweep: { grid: { 'model.mask_ratio': [0.5], 'train.batch_size': [2, 4] } } };
  assert.deepEqual(expandSweep(raw, [], { file: 'x.yaml' }).map((t) => t.name), ['batch_size=2', 'batch_size=4']);
});

test('the sweep schema: a full section loads through the spec loader; a misspelt key is a located spec error', async () => {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { loadExperiment } = await import('../src/spec/index.js');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-sweep-schema-'));
  const ok = path.join(dir, 'ok.yaml');
  writeFileSync(
    ok,
    [
      'name: sch',
      'data: {source: synthetic, input_size: 64}',
      'sweep:',
      '  grid: {model.mask_ratio: [0.4, 0.6]}',
      '  zip: {train.batch_size: [2, 4], train.optimizer.base_lr: [1.0e-4, 2.0e-4]}',
      '  list: [{model.encoder: {family: convnext, depths: [1, 1, 2, 1], dims: [32, 64, 128, 256]}}]',
      '  name_template: "t{index}-{model.mask_ratio}"',
      '  metric: [loss, {name: val_acc, mode: max}]',
      '',
    ].join('\n'),
  );
  const loaded = await loadExperiment(ok);
  const trials = expandSweep(loaded.raw, [], { file: loaded.specPath });
  assert.deepEqual(trials.map((t) => t.name), ['t0-0.4', 't1-0.4', 't2-0.6', 't3-0.6', 't4-0.6']);
  assert.deepEqual(trials[4]!.config.model.encoder, convnext);
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'name: sch\nsweep:\n  gird: {model.mask_ratio: [0.4, 0.6]}\n');
  await assert.rejects(loadExperiment(bad), (e: unknown) => e instanceof SpecError && e.line === 3 && /unknown key 'gird' in sweep/.test(e.message));
  const bad2 = path.join(dir, 'bad2.yaml');
  writeFileSync(bad2, 'name: sch\nsweep:\n  metric: {name: val_acc, mode: maximal}\n');
  await assert.rejects(loadExperiment(bad2), SpecError);
});
