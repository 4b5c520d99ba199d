/**
 * Issue 5's acceptance check: a real quickstart run (the spec in experiments/, shortened) writes an ./mlruns store
 * that spark's own reader reads back, and whose files have the golden MLflow 2.12.2 format field by field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, readFileSync, existsSync, readdirSync } from 'node:fs';
import YAML from 'yaml';
import { testBackend } from './helpers/backend.js';
import { goldenDir, GOLDEN_EXPERIMENT, GOLDEN_RUNS } from './helpers/mlflow-server.js';
import { loadExperiment } from '../src/spec/index.js';
import { runExperiment } from '../src/train/run.js';
import { readStore } from '../src/track/index.js';
import { packageRoot } from '../src/util/paths.js';

const goldenRoot = path.join(goldenDir(), 'mlruns-written-by-mlflow-2.12.2');

function metaTypes(file: string): Record<string, string> {
  const m = YAML.parse(readFileSync(file, 'utf8'), { schema: 'yaml-1.1' }) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v === null ? 'null' : typeof v]));
}

test('a quickstart run writes an MLflow store in the golden format that the reader reads back', async () => {
  const info = await testBackend();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-qs-store-'));
  const mlruns = path.join(dir, 'mlruns');
  const spec = path.join(packageRoot(), 'experiments', 'quickstart.yaml');
  const loaded = await loadExperiment(spec, {
    set: [
      'train.steps=4',
      'train.warmup_steps=1',
      `train.batch_size=${info.native ? 8 : 2}`,
      'data.input_size=64',
      'output.reconstruct_every=0',
      `output.dir=${path.join(dir, 'runs')}`,
      `tracking.uri=${mlruns}`,
    ],
  });
  const r = await runExperiment({ config: loaded.config, specPath: loaded.specPath, resolvedYaml: loaded.resolvedYaml, subscribers: [] });
  assert.equal(r.status, 'FINISHED');

  // read back through spark's own store reader
  const snap = await readStore(mlruns);
  const exp = snap.experiments.find((e) => e.name === 'spark-quickstart');
  assert.ok(exp, 'experiment spark-quickstart exists');
  assert.equal(exp.runs.length, 1);
  const run = exp.runs[0]!;
  assert.equal(run.info.runId, r.mlflowRunId);
  assert.equal(run.info.status, 'FINISHED');
  assert.equal(run.data.params['model.mask_ratio'], '0.6');
  assert.equal(run.data.params['model.encoder'], 'resnet_mini');
  assert.equal(run.data.params['train.steps'], '4');
  assert.equal(run.data.tags['mlflow.runName'], 'quickstart');
  assert.ok(run.data.tags['mlflow.source.name'], 'source tag');
  assert.deepEqual(run.history['loss']!.map((m) => m.step), [1, 2, 3, 4], 'one loss point per step');
  for (const k of ['lr', 'wd', 'grad_norm', 'img_per_sec']) assert.equal(run.history[k]?.length, 4, `${k} logged per step`);
  const runDir = path.join(mlruns, exp.experimentId, run.info.runId);
  assert.ok(existsSync(path.join(runDir, 'artifacts', 'spec', 'quickstart.yaml')), 'spec artifact');
  assert.ok(existsSync(path.join(runDir, 'artifacts', 'spec', 'resolved.yaml')), 'resolved config artifact');

  // field by field against the store MLflow 2.12.2 wrote
  assert.deepEqual(metaTypes(path.join(mlruns, exp.experimentId, 'meta.yaml')), metaTypes(path.join(goldenRoot, GOLDEN_EXPERIMENT, 'meta.yaml')));
  const gRun = path.join(goldenRoot, GOLDEN_EXPERIMENT, GOLDEN_RUNS['mr=0.6']!);
  assert.deepEqual(metaTypes(path.join(runDir, 'meta.yaml')), metaTypes(path.join(gRun, 'meta.yaml')));
  const lineRe = /^\d{13} (-?\d+(\.\d+)?(e[+-]\d+)?|nan|inf|-inf) -?\d+$/;
  for (const f of readdirSync(path.join(runDir, 'metrics'))) {
    for (const l of readFileSync(path.join(runDir, 'metrics', f), 'utf8').trimEnd().split('\n')) assert.match(l, lineRe, `metrics/${f}`);
  }
  // params and tags: one file per key holding the bare value, no trailing newline, as in the golden store
  assert.equal(readFileSync(path.join(runDir, 'params', 'model.mask_ratio'), 'utf8'), '0.6');
  assert.equal(readFileSync(path.join(runDir, 'tags', 'mlflow.runName'), 'utf8'), 'quickstart');
  assert.equal(readFileSync(path.join(gRun, 'tags', 'mlflow.runName'), 'utf8').endsWith('\n'), false, 'golden tag files have no newline');
});
