/**
 * Params exactly as MLflow's Python client writes them: `str()` of the Python value of each config entry
 * (`mlflow.log_params` of the PyYAML-loaded resolved config), checked against the values recorded from real
 * MLflow 2.12.2 in test/fixtures/mlflow/params-as-python-logs-them/, in the file store and through the REST
 * client; and old stores written with JSON spellings still compare and filter as the new ones do.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../src/util/paths.js';
import { loadExperiment } from '../src/spec/index.js';
import { createRunTracker, openStore } from '../src/track/index.js';
import { FileStore } from '../src/track/filestore.js';
import { formatValue, pythonSpelling } from '../src/track/keys.js';
import { collectRuns } from '../src/track/compare.js';
import { filterRuns } from '../src/track/filter.js';
import type { TrackingStore } from '../src/track/types.js';
import { startMlflowServer } from './helpers/mlflow-server.js';

const FIX = path.join(packageRoot(), 'test', 'fixtures', 'mlflow', 'params-as-python-logs-them');
const expected = JSON.parse(readFileSync(path.join(FIX, 'quickstart-params.json'), 'utf8')) as Record<string, string>;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'spark-params-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Sections spark does not log as params (tracking → tags, sweep → the parent run, description → the note; a null finetune). */
const NOT_LOGGED = /^(tracking\.|sweep$|description$|finetune$)/;

async function paramsOfRun(uri: string, store?: TrackingStore): Promise<Record<string, string>> {
  const loaded = await loadExperiment(path.join(FIX, 'quickstart-resolved.yaml'));
  const config = { ...loaded.config, tracking: { ...loaded.config.tracking, uri } };
  const runDir = mkdtempSync(path.join(tmp, 'run-'));
  const tracker = await createRunTracker({ config, runDir, specPath: null, resolvedYaml: loaded.resolvedYaml, resume: false, ...(store ? { store } : {}) });
  tracker.onEvent({ type: 'run-end', time: Date.now(), status: 'FINISHED', step: 0, epoch: 0, finalLoss: null });
  await tracker.close!();
  const s = store ?? openStore(uri);
  return (await s.getRun(tracker.runId)).data.params;
}

function assertAsPython(params: Record<string, string>): void {
  const want = Object.keys(expected).filter((k) => !NOT_LOGGED.test(k));
  for (const k of want) assert.ok(k in params, `param ${k} is logged`);
  let checked = 0;
  for (const [k, v] of Object.entries(params)) {
    if (!(k in expected)) continue; // a config field newer than the fixture
    assert.equal(v, expected[k], `param ${k}`);
    checked++;
  }
  assert.equal(checked, want.length);
}

test('every param of a run of the fixture config equals what mlflow.log_params wrote (file store)', async () => {
  assertAsPython(await paramsOfRun(path.join(tmp, 'mlruns')));
});

test('every param of a run of the fixture config equals what mlflow.log_params wrote (REST client)', async () => {
  const srv = await startMlflowServer();
  try {
    const params = await paramsOfRun(srv.url);
    assertAsPython(params);
    // and what went over the wire is exactly that
    const sent = srv.requests.filter((r) => r.path.endsWith('/runs/log-batch')).flatMap((r) => ((r.body as { params?: Array<{ key: string; value: string }> }).params ?? []));
    for (const p of sent) if (p.key in expected) assert.equal(p.value, expected[p.key], p.key);
  } finally {
    await srv.close();
  }
});

test('formatValue is str() of the Python value', () => {
  const cases: Array<[unknown, string]> = [
    [null, 'None'],
    [true, 'True'],
    [false, 'False'],
    [224, '224'],
    [0.0002, '0.0002'],
    [1e-8, '1e-08'],
    [1.5e-5, '1.5e-05'],
    [2.5e20, '2.5e+20'],
    [0.1 + 0.2, '0.30000000000000004'],
    ['adamw', 'adamw'],
    [[0.67, 1], '[0.67, 1]'],
    [[0.75, 1.3333333333333333], '[0.75, 1.3333333333333333]'],
    [[], '[]'],
    [{}, '{}'],
    [{ a: 1, b: [null, true], c: 'x' }, "{'a': 1, 'b': [None, True], 'c': 'x'}"],
    [['a', "it's", 'q"', 'a\\b', 'é\n'], `['a', "it's", 'q"', 'a\\\\b', 'é\\n']`],
  ];
  for (const [v, s] of cases) assert.equal(formatValue(v), s, JSON.stringify(v));
});

test('old JSON spellings read as the Python ones: compare shows one spelling, filters match both', async () => {
  assert.equal(pythonSpelling('[0.67,1]'), '[0.67, 1]');
  assert.equal(pythonSpelling('null'), 'None');
  assert.equal(pythonSpelling('true'), 'True');
  assert.equal(pythonSpelling('{"a":[1,null]}'), "{'a': [1, None]}");
  assert.equal(pythonSpelling('adamw'), 'adamw');
  assert.equal(pythonSpelling('[not json'), '[not json');

  const root = path.join(tmp, 'old-store');
  const store = new FileStore(root);
  const exp = await store.getOrCreateExperiment('mixed');
  const old = await store.createRun({ experimentId: exp, runName: 'old', tags: { 'spark.run_dir': '/x/old' } });
  await store.logParams(old.runId, { 'data.crop_scale': '[0.67,1]', 'model.drop_path': 'null', lr: '0.001' });
  const now = await store.createRun({ experimentId: exp, runName: 'new', tags: { 'spark.run_dir': '/x/new' } });
  await store.logParams(now.runId, { 'data.crop_scale': '[0.67, 1]', 'model.drop_path': 'None', lr: '0.002' });
  // a run not written by spark keeps its values as they are
  const py = await store.createRun({ experimentId: exp, runName: 'python', tags: {} });
  await store.logParams(py.runId, { 'data.crop_scale': '[0.67,1]', lr: '0.003' });

  const res = await collectRuns(store, { experiment: 'mixed' });
  const byName = new Map(res.rows.map((r) => [r.run.info.runName, r.run.data.params]));
  assert.equal(byName.get('old')!['data.crop_scale'], '[0.67, 1]');
  assert.equal(byName.get('old')!['model.drop_path'], 'None');
  assert.equal(byName.get('python')!['data.crop_scale'], '[0.67,1]');
  // the two spark runs agree on crop_scale and drop_path: only lr and crop_scale (python's own spelling) vary
  assert.ok(!res.columns.includes('params.model.drop_path'), res.columns.join(' '));
  assert.ok(res.columns.includes('params.lr'));

  const runs = [await store.getRun(old.runId), await store.getRun(now.runId), await store.getRun(py.runId)];
  const names = (f: string) => filterRuns(runs, f).map((r) => r.info.runName).sort();
  assert.deepEqual(names("params.`data.crop_scale` = '[0.67, 1]'"), ['new', 'old']);
  assert.deepEqual(names("params.`data.crop_scale` = '[0.67,1]'"), ['old', 'python']);
  assert.deepEqual(names("params.`model.drop_path` = 'None'"), ['new', 'old']);
  assert.deepEqual(names("params.`model.drop_path` != 'None'"), []);
  assert.deepEqual(names("params.`data.crop_scale` != '[0.67, 1]'"), ['python']);
  assert.deepEqual(names("params.`data.crop_scale` LIKE '[0.67, %'"), ['new', 'old']);
});
