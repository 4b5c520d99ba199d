import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveConfig } from '../src/spec/index.js';
import { runSweep, type TrialRunRequest, type TrialRunResult, type LoadedSpec } from '../src/sweep/runner.js';
import { readSweep } from '../src/sweep/state.js';
import { storeTracker } from '../src/sweep/tracker.js';
import { sweepStatus } from '../src/sweep/status.js';

function tmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'spark-sweep-track-'));
}

function loadedFor(dir: string, sweep: object, over: Record<string, unknown> = {}): LoadedSpec {
  const raw = {
    name: 'tr',
    model: { encoder: 'resnet_mini', decoder: { type: 'light', width: 32 } },
    data: { source: 'synthetic', input_size: 64, synthetic_size: 8, workers: 0 },
    train: { steps: 2, batch_size: 2, warmup_steps: 1 },
    runtime: { backend: 'cpu', threads: 1 },
    output: { dir: path.join(dir, 'runs'), checkpoint_every: 0, log_every: 1, reconstruct_every: 0 },
    tracking: { uri: path.join(dir, 'mlruns'), experiment: 'sweep-track' },
    ...over,
    sweep,
  };
  const specPath = path.join(dir, 'spec.yaml');
  return { config: resolveConfig(raw, { file: specPath }), specPath, raw };
}

const silent = () => {};

async function openTrack() {
  try {
    return await import('../src/track/index.js');
  } catch (e) {
    return `the tracker module cannot be loaded: ${(e as Error).message}`;
  }
}

test('nested runs in a file store: a parent (spark.sweep=1) and one child per trial with mlflow.parentRunId', async (t) => {
  const track = await openTrack();
  if (typeof track === 'string') return t.skip(track);
  const dir = tmp();
  const store = track.openStore(path.join(dir, 'mlruns'));
  const tracker = storeTracker(store);
  // a stand-in trainer that creates the child run the way runExperiment does (nested under the parent)
  const runner = async (req: TrialRunRequest): Promise<TrialRunResult> => {
    const exp = await store.getOrCreateExperiment('sweep-track');
    const child = await store.createRun({ experimentId: exp, runName: req.trial.name, tags: { 'mlflow.parentRunId': req.parentRunId!, ...req.tags } });
    await store.logParams(child.runId, req.trial.params);
    const loss = req.trial.index === 1 ? 0.25 : 0.5 + req.trial.index;
    await store.logMetrics(child.runId, [
      { key: 'loss', value: loss, timestamp: Date.now(), step: 2 },
      { key: 'val_acc', value: 10 - req.trial.index, timestamp: Date.now(), step: 2 },
    ]);
    await store.setTerminated(child.runId, 'FINISHED');
    return { status: 'FINISHED', step: 2, finalLoss: loss, mlflowRunId: child.runId };
  };
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6, 0.75] }, metric: ['loss', { name: 'val_acc', mode: 'max' }] });
  const r = await runSweep({ loaded }, { runTrial: runner, tracker, console: null, log: silent });
  assert.equal(r.exitCode, 0);
  const s = await readSweep(r.sweepDir);
  const parent = await store.getRun(s.tracking.parentRunId!);
  assert.equal(parent.data.tags['spark.sweep'], '1');
  assert.equal(parent.data.tags['sweep.dir'], r.sweepDir);
  assert.equal(parent.data.params['model.encoder'], 'resnet_mini');
  // the swept key is logged as the sweep definition (Python's str of the list), never as one value
  assert.equal(parent.data.params['model.mask_ratio'], undefined);
  assert.equal(parent.data.params['sweep.model.mask_ratio'], '[0.4, 0.6, 0.75]');
  assert.equal(parent.data.params['sweep.trials'], '3');
  const hits = await store.searchRuns([parent.info.experimentId], "params.`model.mask_ratio` = '0.6'");
  assert.deepEqual(hits.runs.map((x) => x.data.tags['sweep.trial']), ['1'], 'only the trial with 0.6 matches, not the parent');
  assert.equal(parent.info.status, 'FINISHED');
  // best trial: tags and metrics (params never change in MLflow)
  assert.equal(parent.data.params['best.loss.trial'], undefined);
  assert.equal(parent.data.tags['best.loss.trial'], '1');
  assert.equal(parent.data.tags['best.loss.run_id'], s.trials[1]!.mlflowRunId);
  assert.equal(parent.data.metrics['best.loss'], 0.25);
  assert.equal(parent.data.tags['best.val_acc.trial'], '0');
  assert.equal(parent.data.metrics['best.val_acc'], 10);
  // updated as trials ended: 0.5 after trial 1, 0.25 from trial 2 on
  assert.deepEqual((await store.getMetricHistory(parent.info.runId, 'best.loss')).map((m) => [m.step, m.value]), [
    [1, 0.5],
    [2, 0.25],
    [3, 0.25],
    [3, 0.25],
  ]);
  const artifacts = parent.info.artifactUri.replace(/^file:\/\//, '');
  assert.ok(existsSync(path.join(artifacts, 'summary.md')), 'summary.md logged on the parent');
  assert.match(readFileSync(path.join(artifacts, 'summary.csv'), 'utf8'), /^trial,name,model.mask_ratio,status,final loss,val_acc,steps,run dir\n0,mask_ratio=0.4,0.4,FINISHED,0.5,10,2,trials\/000\/run\n/);
  const children = await store.searchRuns([parent.info.experimentId], `tags.mlflow.parentRunId = '${parent.info.runId}'`);
  assert.deepEqual(children.runs.map((c) => c.data.tags['sweep.trial']).sort(), ['0', '1', '2']);
  const rep = await sweepStatus(r.sweepDir, { tracker });
  assert.deepEqual(rep.rows.map((x) => [x.status, x.mlflow]), [
    ['FINISHED', 'FINISHED'],
    ['FINISHED', 'FINISHED'],
    ['FINISHED', 'FINISHED'],
  ]);
});

test('a resumed sweep whose best trial changed keeps MLflow params immutable (the new best goes to a tag)', async (t) => {
  const track = await openTrack();
  if (typeof track === 'string') return t.skip(track);
  const dir = tmp();
  const store = track.openStore(path.join(dir, 'mlruns'));
  const tracker = storeTracker(store);
  const id = await tracker.createParent({ experiment: 'e', runName: 'p', params: { a: '1' }, tags: { 'spark.sweep': '1' } });
  assert.deepEqual(await tracker.finishParent(id, { status: 'FAILED', params: { 'best.loss.trial': '0' }, metrics: { 'best.loss': 0.5 }, tags: {}, artifacts: [] }), []);
  await tracker.reopenParent(id);
  assert.equal((await store.getRun(id)).info.status, 'RUNNING');
  const warnings = await tracker.finishParent(id, { status: 'FINISHED', params: { 'best.loss.trial': '2' }, metrics: { 'best.loss': 0.3 }, tags: {}, artifacts: [] });
  const run = await store.getRun(id);
  assert.equal(run.info.status, 'FINISHED');
  assert.equal(run.data.metrics['best.loss'], 0.3);
  if (run.data.params['best.loss.trial'] === '0') {
    assert.equal(warnings.length, 1);
    assert.equal(run.data.tags['best.loss.trial'], '2');
  } else {
    // a store that lets params change simply holds the new value
    assert.equal(run.data.params['best.loss.trial'], '2');
  }
});

test('REST: the parent logs the sweep definition, not the swept values; filters on them match trials only', async (t) => {
  const track = await openTrack();
  if (typeof track === 'string') return t.skip(track);
  const { startMlflowServer } = await import('./helpers/mlflow-server.js');
  const server = await startMlflowServer();
  t.after(() => server.close());
  const dir = tmp();
  const store = track.openStore(server.url);
  const tracker = storeTracker(store);
  const runner = async (req: TrialRunRequest): Promise<TrialRunResult> => {
    const exp = await store.getOrCreateExperiment('sweep-track');
    const child = await store.createRun({ experimentId: exp, runName: req.trial.name, tags: { 'mlflow.parentRunId': req.parentRunId!, ...req.tags } });
    await store.logParams(child.runId, req.trial.params);
    await store.logMetrics(child.runId, [{ key: 'loss', value: 1 - req.trial.index / 10, timestamp: Date.now(), step: 2 }]);
    await store.setTerminated(child.runId, 'FINISHED');
    return { status: 'FINISHED', step: 2, finalLoss: 1 - req.trial.index / 10, mlflowRunId: child.runId };
  };
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6, 0.75], 'model.encoder': ['resnet_mini', 'convnext_mini'] } }, { tracking: { uri: server.url, experiment: 'sweep-track' } });
  const r = await runSweep({ loaded }, { runTrial: runner, tracker, console: null, log: silent });
  assert.equal(r.exitCode, 0);
  const s = await readSweep(r.sweepDir);
  const parent = await store.getRun(s.tracking.parentRunId!);
  assert.equal(parent.data.params['sweep.model.mask_ratio'], '[0.4, 0.6, 0.75]');
  assert.equal(parent.data.params['sweep.model.encoder'], "['resnet_mini', 'convnext_mini']");
  assert.equal(parent.data.params['model.mask_ratio'], undefined);
  assert.equal(parent.data.params['model.encoder'], undefined);
  assert.equal(parent.data.params['sweep.trials'], '6');
  const hits = await store.searchRuns([parent.info.experimentId], "params.`model.mask_ratio` = '0.6'");
  assert.deepEqual(hits.runs.map((x) => x.data.tags['sweep.trial']).sort(), ['2', '3']);
  assert.equal(parent.data.tags['best.loss.trial'], '5');
  assert.equal(parent.data.metrics['best.loss'], 0.5);
});

test('best trial on the parent is a tag and a metric, updated as trials end and after a resume', async (t) => {
  const track = await openTrack();
  if (typeof track === 'string') return t.skip(track);
  const dir = tmp();
  const store = track.openStore(path.join(dir, 'mlruns'));
  const tracker = storeTracker(store);
  const loss = [0.5, 0.2, 0.4];
  const runner = (stopAt: number | null) => async (req: TrialRunRequest): Promise<TrialRunResult> => {
    const exp = await store.getOrCreateExperiment('sweep-track');
    const child = await store.createRun({ experimentId: exp, runName: req.trial.name, tags: { 'mlflow.parentRunId': req.parentRunId!, ...req.tags } });
    if (req.trial.index === stopAt) {
      await store.setTerminated(child.runId, 'KILLED');
      return { status: 'KILLED', step: 1, finalLoss: null, mlflowRunId: child.runId };
    }
    const v = loss[req.trial.index]!;
    await store.logMetrics(child.runId, [{ key: 'loss', value: v, timestamp: Date.now(), step: 2 }]);
    await store.setTerminated(child.runId, 'FINISHED');
    return { status: 'FINISHED', step: 2, finalLoss: v, mlflowRunId: child.runId };
  };
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6, 0.75] } });
  // trial 2/3 (index 1, the best one) is interrupted: the best so far is trial 1/3
  const r1 = await runSweep({ loaded }, { runTrial: runner(1), tracker, console: null, log: silent });
  assert.equal(r1.status, 'KILLED');
  const id = (await readSweep(r1.sweepDir)).tracking.parentRunId!;
  let p = await store.getRun(id);
  assert.equal(p.info.status, 'KILLED');
  assert.equal(p.data.tags['best.loss.trial'], '0');
  assert.equal(p.data.metrics['best.loss'], 0.5);
  // resumed: the best becomes trial 2/3; the same keys change (a param could not)
  const r2 = await runSweep({ resumeDir: r1.sweepDir }, { runTrial: runner(null), tracker, console: null, log: silent });
  assert.equal(r2.status, 'FINISHED');
  p = await store.getRun(id);
  assert.equal(p.info.status, 'FINISHED');
  assert.equal(p.data.tags['best.loss.trial'], '1');
  assert.equal(p.data.tags['best.loss.name'], 'mask_ratio=0.6');
  assert.equal(p.data.metrics['best.loss'], 0.2);
  assert.equal(p.data.metrics['sweep.finished'], 3);
  assert.equal(p.data.params['best.loss.trial'], undefined);
  assert.equal(Object.keys(p.data.params).filter((k) => k.startsWith('best.')).length, 0);
});

test('real trainer: a two-trial sweep in process, children nested under the parent', { timeout: 300_000 }, async (t) => {
  const track = await openTrack();
  if (typeof track === 'string') return t.skip(track);
  let runMod: unknown;
  try {
    runMod = await import('../src/train/run.js');
  } catch (e) {
    return t.skip(`the trainer cannot be loaded: ${(e as Error).message}`);
  }
  assert.ok(runMod);
  const dir = path.join(tmp(), "it's a dir");
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.5, 0.75] } });
  const r = await runSweep({ loaded, plain: true }, { console: null, log: silent });
  const s = await readSweep(r.sweepDir);
  assert.deepEqual(
    s.trials.map((x) => [x.status, x.step, x.error]),
    [
      ['FINISHED', 2, null],
      ['FINISHED', 2, null],
    ],
  );
  assert.ok(s.trials.every((x) => typeof x.finalLoss === 'number' && Number.isFinite(x.finalLoss)));
  assert.ok(existsSync(path.join(r.sweepDir, 'trials', '001', 'run', 'checkpoint')));
  const store = track.openStore(path.join(dir, 'mlruns'));
  const parent = await store.getRun(s.tracking.parentRunId!);
  const children = await store.searchRuns([parent.info.experimentId], `tags.mlflow.parentRunId = '${parent.info.runId}'`);
  assert.deepEqual(children.runs.map((c) => [c.data.tags['sweep.trial'], c.info.status, c.info.runName]).sort(), [
    ['0', 'FINISHED', 'mask_ratio=0.5'],
    ['1', 'FINISHED', 'mask_ratio=0.75'],
  ]);
  assert.deepEqual(s.trials.map((x) => x.mlflowRunId).sort(), children.runs.map((c) => c.info.runId).sort());
  assert.equal(parent.info.status, 'FINISHED');
  assert.equal(parent.data.tags['best.loss.trial'], String(s.best['loss']!.trial));
  assert.equal(parent.data.params['sweep.model.mask_ratio'], '[0.5, 0.75]');
});
