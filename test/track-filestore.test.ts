/**
 * The file store writes exactly the layout MLflow 2.12.2 wrote in the golden store (field by field: key sets, value
 * types, line formats) and reads the golden store back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync, readdirSync, rmSync, writeFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { FileStore, readStore, parseMetricLines, latestMetric } from '../src/track/filestore.js';
import { dumpMeta } from '../src/track/metayaml.js';
import { formatNumber, validateKey } from '../src/track/keys.js';
import { TrackingError } from '../src/util/errors.js';
import { goldenDir, GOLDEN_EXPERIMENT, GOLDEN_PARENT, GOLDEN_RUNS } from './helpers/mlflow-server.js';

const goldenRoot = path.join(goldenDir(), 'mlruns-written-by-mlflow-2.12.2');

function tmpStore(): { root: string; store: FileStore; done: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-fs-'));
  const root = path.join(dir, 'mlruns');
  return { root, store: new FileStore(root), done: () => rmSync(dir, { recursive: true, force: true }) };
}

/** key → typeof value (null as 'null') of a meta.yaml, as PyYAML (YAML 1.1) reads it. */
function metaTypes(file: string): Record<string, string> {
  const m = YAML.parse(readFileSync(file, 'utf8'), { schema: 'yaml-1.1' }) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v]));
}

test('experiment and run meta.yaml match the golden store key by key and type by type', async () => {
  const { root, store, done } = tmpStore();
  try {
    const expId = await store.getOrCreateExperiment('sweep-demo');
    assert.match(expId, /^[1-9]\d{17}$/);
    const info = await store.createRun({ experimentId: expId, runName: 'mr=0.6', startTime: 1795688958348, tags: { 'mlflow.user': 'root' } });
    assert.match(info.runId, /^[0-9a-f]{32}$/);
    await store.setTerminated(info.runId, 'FINISHED', 1795688958358);

    // experiment meta: same keys, same types; order sorted like PyYAML
    const gExp = metaTypes(path.join(goldenRoot, GOLDEN_EXPERIMENT, 'meta.yaml'));
    const mExp = metaTypes(path.join(root, expId, 'meta.yaml'));
    assert.deepEqual(mExp, gExp);
    assert.deepEqual(metaTypes(path.join(root, '0', 'meta.yaml')), metaTypes(path.join(goldenRoot, '0', 'meta.yaml')));
    assert.ok(existsSync(path.join(root, '.trash')), 'existsSync(path.join(root, \'.trash\'))');

    // run meta: the golden run (ended) against ours (ended)
    const gRun = metaTypes(path.join(goldenRoot, GOLDEN_EXPERIMENT, GOLDEN_RUNS['mr=0.6']!, 'meta.yaml'));
    const mRunFile = path.join(root, expId, info.runId, 'meta.yaml');
    assert.deepEqual(metaTypes(mRunFile), gRun);
    const text = readFileSync(mRunFile, 'utf8');
    const keys = text.trimEnd().split('\n').map((l) => l.split(':')[0]);
    assert.deepEqual(keys, [...keys].sort(), 'keys sorted');
    assert.match(text, new RegExp(`^experiment_id: '${expId}'$`, 'm'), 'digit-only ids single-quoted');
    assert.match(text, /^status: 3$/m);
    assert.match(text, /^source_type: 4$/m);
    assert.match(text, /^tags: \[\]$/m);
    assert.match(text, /^entry_point_name: ''$/m);
    assert.match(text, /^run_name: mr=0\.6$/m);
    assert.match(text, new RegExp(`^run_id: ${info.runId}$`, 'm'));
    assert.match(text, new RegExp(`^run_uuid: ${info.runId}$`, 'm'));
    assert.match(text, new RegExp(`^artifact_uri: file://${root}/${expId}/${info.runId}/artifacts$`, 'm'));
    const m = YAML.parse(text, { schema: 'yaml-1.1' }) as Record<string, unknown>;
    assert.equal(m['start_time'], 1795688958348);
    assert.equal(m['end_time'], 1795688958358);

    // a running run has end_time null (key present)
    const r2 = await store.createRun({ experimentId: expId, runName: 'running' });
    const t2 = YAML.parse(readFileSync(path.join(root, expId, r2.runId, 'meta.yaml'), 'utf8'), { schema: 'yaml-1.1' }) as Record<string, unknown>;
    assert.ok('end_time' in t2 && t2['end_time'] === null, '\'end_time\' in t2 && t2[\'end_time\'] === null');
    assert.equal(t2['status'], 1);
    for (const [s, code] of [['FAILED', 4], ['KILLED', 5], ['FINISHED', 3]] as const) {
      await store.setTerminated(r2.runId, s, 5);
      assert.equal((YAML.parse(readFileSync(path.join(root, expId, r2.runId, 'meta.yaml'), 'utf8')) as { status: number }).status, code);
    }
    await store.setTerminated(r2.runId, 'RUNNING');
    assert.equal((YAML.parse(readFileSync(path.join(root, expId, r2.runId, 'meta.yaml'), 'utf8')) as { end_time: unknown }).end_time, null);
  } finally {
    done();
  }
});

test('params, tags and metric files have the golden formats (nested keys, no trailing newline, ts value step)', async () => {
  const { root, store, done } = tmpStore();
  try {
    const expId = await store.getOrCreateExperiment('e');
    const { runId } = await store.createRun({ experimentId: expId, runName: 'r', tags: { team: 'vision' } });
    await store.logBatch(runId, {
      params: [
        { key: 'lr', value: '0.001' },
        { key: 'opt/name', value: 'adamw' },
      ],
      metrics: [
        { key: 'train/loss', value: 1.6, timestamp: 1795688958353, step: 0 },
        { key: 'train/loss', value: 0.9333333333333333, timestamp: 1795688958355, step: 2 },
        { key: 'val_acc', value: NaN, timestamp: 1795688958355, step: 0 },
        { key: 'x', value: Infinity, timestamp: 1, step: 0 },
        { key: 'x', value: -Infinity, timestamp: 2, step: 1 },
      ],
      tags: [{ key: 'mlflow.parentRunId', value: GOLDEN_PARENT }],
    });
    const runDir = path.join(root, expId, runId);
    const gRun = path.join(goldenRoot, GOLDEN_EXPERIMENT, GOLDEN_RUNS['mr=0.6']!);
    // same relative file set for the shared keys
    for (const rel of ['params/lr', 'params/opt/name', 'metrics/train/loss', 'metrics/val_acc', 'tags/mlflow.parentRunId', 'tags/team', 'tags/mlflow.runName']) {
      assert.ok(existsSync(path.join(gRun, rel)), `golden has ${rel}`);
      assert.ok(statSync(path.join(runDir, rel)).isFile(), `we wrote ${rel}`);
    }
    assert.equal(readFileSync(path.join(runDir, 'params/lr'), 'utf8'), readFileSync(path.join(gRun, 'params/lr'), 'utf8'));
    assert.equal(readFileSync(path.join(runDir, 'params/opt/name'), 'utf8'), 'adamw');
    assert.equal(readFileSync(path.join(runDir, 'tags/mlflow.runName'), 'utf8'), 'r');
    const lineRe = /^\d+ (-?\d+(\.\d+)?(e[+-]\d+)?|nan|inf|-inf) -?\d+$/;
    for (const f of ['metrics/train/loss', 'metrics/val_acc']) {
      for (const l of readFileSync(path.join(gRun, f), 'utf8').trimEnd().split('\n')) assert.match(l, lineRe, `golden ${f}`);
      for (const l of readFileSync(path.join(runDir, f), 'utf8').trimEnd().split('\n')) assert.match(l, lineRe, `ours ${f}`);
    }
    assert.equal(readFileSync(path.join(runDir, 'metrics/train/loss'), 'utf8'), '1795688958353 1.6 0\n1795688958355 0.9333333333333333 2\n');
    assert.equal(readFileSync(path.join(runDir, 'metrics/val_acc'), 'utf8'), readFileSync(path.join(gRun, 'metrics/val_acc'), 'utf8').replace(/^\d+/, '1795688958355'));
    assert.equal(readFileSync(path.join(runDir, 'metrics/x'), 'utf8'), '1 inf 0\n2 -inf 1\n');
    // read back
    const run = await store.getRun(runId);
    assert.equal(run.data.metrics['train/loss'], 0.9333333333333333);
    assert.ok(Number.isNaN(run.data.metrics['val_acc']), 'Number.isNaN(run.data.metrics[\'val_acc\'])');
    assert.equal(run.data.metrics['x'], -Infinity);
    assert.deepEqual(run.data.params, { lr: '0.001', 'opt/name': 'adamw' });
    assert.equal(run.data.tags['team'], 'vision');
    // appends
    await store.logMetrics(runId, [{ key: 'train/loss', value: 0.5, timestamp: 9, step: 3 }]);
    assert.equal((await store.getMetricHistory(runId, 'train/loss')).length, 3);
  } finally {
    done();
  }
});

test('bad keys are rejected before anything is written; params are immutable as in MLflow', async () => {
  const { root, store, done } = tmpStore();
  try {
    const expId = await store.getOrCreateExperiment('e');
    const { runId } = await store.createRun({ experimentId: expId, runName: 'r' });
    const runDir = path.join(root, expId, runId);
    for (const bad of ['bad*name', "o'quote", '../x', 'a//b', '/abs', 'trail/', '.', 'a/./b', '', 'x:y', 'k'.repeat(251)]) {
      await assert.rejects(() => store.setTags(runId, { [bad]: 'v' }), (e: unknown) => e instanceof TrackingError && e.errorCode === 'INVALID_PARAMETER_VALUE', `tag '${bad}'`);
      assert.throws(() => validateKey('metric', bad), TrackingError);
    }
    // a batch with one bad key writes nothing at all
    await assert.rejects(() =>
      store.logBatch(runId, { params: [{ key: 'good', value: '1' }], metrics: [{ key: 'm', value: 1, timestamp: 1, step: 0 }], tags: [{ key: 'bad*', value: 'x' }] }),
    );
    assert.deepEqual(readdirSync(path.join(runDir, 'params')), []);
    assert.deepEqual(readdirSync(path.join(runDir, 'metrics')), []);
    for (const ok of ['loss', 'train/loss', 'a b', 'x-y.z_1', 'mlflow.parentRunId']) validateKey('metric', ok);

    await store.logParams(runId, { lr: '0.1' });
    await store.logParams(runId, { lr: '0.1' }); // same value: fine
    await assert.rejects(
      () => store.logParams(runId, { lr: '0.2' }),
      (e: unknown) => e instanceof TrackingError && e.errorCode === 'INVALID_PARAMETER_VALUE' && /Changing param values is not allowed/.test(e.message),
    );
    assert.equal(readFileSync(path.join(runDir, 'params/lr'), 'utf8'), '0.1');
    // over-long values are truncated like MLflow 2.11+
    await store.logParams(runId, { long: 'x'.repeat(6001) });
    assert.equal(readFileSync(path.join(runDir, 'params/long'), 'utf8').length, 6000);
    // a key that is both a value and a folder
    await store.logMetrics(runId, [{ key: 'a', value: 1, timestamp: 1, step: 0 }]);
    await assert.rejects(() => store.logMetrics(runId, [{ key: 'a/b', value: 1, timestamp: 1, step: 0 }]), /both a value and a folder/);
    // duplicate experiment
    await assert.rejects(() => store.createExperiment('e'), (e: unknown) => e instanceof TrackingError && e.errorCode === 'RESOURCE_ALREADY_EXISTS' && e.message === "Experiment 'e' already exists.");
    assert.equal(await store.getOrCreateExperiment('e'), expId);
    await assert.rejects(() => store.getRun('0123456789abcdef0123456789abcdef'), (e: unknown) => e instanceof TrackingError && e.errorCode === 'RESOURCE_DOES_NOT_EXIST');
    await assert.rejects(() => store.createRun({ experimentId: expId, runName: 'a', tags: { 'mlflow.runName': 'b' } }), /different values/);
  } finally {
    done();
  }
});

test('the reader reads the golden store written by MLflow 2.12.2', async () => {
  const snap = await readStore(goldenRoot);
  assert.deepEqual(snap.experiments.map((e) => e.name).sort(), ['Default', 'sweep-demo']);
  const exp = snap.experiments.find((e) => e.name === 'sweep-demo')!;
  assert.equal(exp.experimentId, GOLDEN_EXPERIMENT);
  assert.equal(exp.artifactLocation, `file:///home/user/project/mlruns/${GOLDEN_EXPERIMENT}`);
  assert.equal(exp.creationTime, 1795688958296);
  assert.deepEqual(exp.runs.map((r) => r.info.runName), ['mr=0.6', 'mr=0.4', 'sweep-parent'], 'start_time DESC');
  const r = exp.runs.find((x) => x.info.runName === 'mr=0.4')!;
  assert.deepEqual(r.info, {
    runId: GOLDEN_RUNS['mr=0.4'],
    runName: 'mr=0.4',
    experimentId: GOLDEN_EXPERIMENT,
    userId: 'root',
    status: 'FINISHED',
    startTime: 1795688958335,
    endTime: 1795688958346,
    artifactUri: `file:///home/user/project/mlruns/${GOLDEN_EXPERIMENT}/${GOLDEN_RUNS['mr=0.4']}/artifacts`,
    lifecycleStage: 'active',
  });
  assert.deepEqual(r.data.params, { lr: '0.001', mask_ratio: '0.4', 'opt/name': 'adamw' });
  assert.equal(r.data.tags['mlflow.parentRunId'], GOLDEN_PARENT);
  assert.equal(r.data.metrics['train/loss'], 0.7333333333333334);
  assert.ok(Number.isNaN(r.data.metrics['val_acc']), 'Number.isNaN(r.data.metrics[\'val_acc\'])');
  assert.deepEqual(
    r.history['train/loss']!.map((m) => [m.timestamp, m.value, m.step]),
    [
      [1795688958341, 1.4, 0],
      [1795688958341, 0.9, 1],
      [1795688958342, 0.7333333333333334, 2],
    ],
  );
  const parent = exp.runs.find((x) => x.info.runName === 'sweep-parent')!;
  assert.deepEqual(parent.data.metrics, { best_loss: 0.73 });
  assert.deepEqual(parent.data.params, { sweep: 'mask_ratio' });
});

test('metric line parsing (2/3/5 fields), latest = max(step, timestamp, value), number formatting', () => {
  assert.deepEqual(parseMetricLines('k', '5 1.5\n6 nan 2\n7 -inf 1 ds digest\n'), [
    { key: 'k', timestamp: 5, value: 1.5, step: 0 },
    { key: 'k', timestamp: 6, value: NaN, step: 2 },
    { key: 'k', timestamp: 7, value: -Infinity, step: 1 },
  ]);
  assert.throws(() => parseMetricLines('k', '1 2 3 4\n'), /malformed/);
  assert.equal(latestMetric([{ key: 'k', value: 1, timestamp: 9, step: 1 }, { key: 'k', value: 2, timestamp: 1, step: 2 }, { key: 'k', value: 3, timestamp: 0, step: 2 }])!.value, 2);
  const py: Array<[number, string]> = [[1.6, '1.6'], [0.9333333333333333, '0.9333333333333333'], [1e-5, '1e-05'], [0.00015, '0.00015'], [1.5e-7, '1.5e-07'], [1e16 + 2, '1.0000000000000002e+16'], [224, '224'], [-0.5, '-0.5'], [123.456, '123.456'], [2.5e20, '2.5e+20'], [NaN, 'nan'], [-Infinity, '-inf']];
  for (const [x, s] of py) assert.equal(formatNumber(x), s, String(x));
  assert.equal(dumpMeta({ b: 'x y', a: '0123', c: null, d: [], e: 'yes', f: "it's" }), "a: '0123'\nb: 'x y'\nc: null\nd: []\ne: 'yes'\nf: 'it''s'\n");
});

test('a store root that does not exist is created with Default experiment 0 on first write only', async () => {
  const { root, store, done } = tmpStore();
  try {
    await assert.rejects(() => readStore(root), /no MLflow file store/);
    assert.deepEqual(await store.listExperiments(), []);
    assert.ok(!existsSync(root), 'reading creates nothing');
    await store.getOrCreateExperiment('x');
    const names = (await store.listExperiments()).map((e) => e.name).sort();
    assert.deepEqual(names, ['Default', 'x']);
    // a folder whose meta.yaml id differs from its name is ignored, like MLflow does
    writeFileSync(path.join(root, '0', 'meta.yaml'), readFileSync(path.join(root, '0', 'meta.yaml'), 'utf8').replace("experiment_id: '0'", "experiment_id: '7'"));
    assert.deepEqual((await store.listExperiments()).map((e) => e.name), ['x']);
  } finally {
    done();
  }
});

test('run names and ids survive meta.yaml round trips (YAML 1.1 and 1.2 readers)', async () => {
  const { root, store, done } = tmpStore();
  try {
    const expId = await store.getOrCreateExperiment('names: tricky #1');
    assert.equal((await store.getExperiment(expId)).name, 'names: tricky #1');
    for (const name of ['yes', 'on', 'null', '~', '1e5', '0x1F', '12:30', '2024-01-01', "it's", 'trial: 3', 'a #b', 'ünïcode', 'multi\nline', ' lead', '-dash', '[x]', '0.6', 'mr=0.6']) {
      const info = await store.createRun({ experimentId: expId, runName: name });
      const text = readFileSync(path.join(root, expId, info.runId, 'meta.yaml'), 'utf8');
      for (const schema of ['yaml-1.1', 'core'] as const) {
        const m = YAML.parse(text, { schema }) as Record<string, unknown>;
        assert.equal(m['run_name'], name, `${JSON.stringify(name)} (${schema})`);
        assert.equal(m['experiment_id'], expId);
        assert.equal(m['run_id'], info.runId);
      }
      assert.equal((await store.getRun(info.runId)).info.runName, name);
    }
  } finally {
    done();
  }
});
