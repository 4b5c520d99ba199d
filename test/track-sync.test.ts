/** `spark sync`: a local store replayed to a server idempotently; an offline journal replayed with --run. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runSync } from '../src/cli/commands/sync.js';
import { FileStore } from '../src/track/filestore.js';
import { RestStore } from '../src/track/rest.js';
import { createRunTracker, readTrackingState } from '../src/track/index.js';
import { JOURNAL_FILE, readJournal } from '../src/track/journal.js';
import { searchAllRuns, type Metric } from '../src/track/types.js';
import { UsageError } from '../src/util/errors.js';
import { copyGoldenStore, startMlflowServer, trackedConfig, GOLDEN_PARENT } from './helpers/mlflow-server.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'spark-sync-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function sync(args: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await runSync(args, (s) => (out += s));
  return { code, out };
}

/** A local store: a sweep parent with two children (metrics incl. NaN, nested keys, an artifact). */
async function localStore(): Promise<{ root: string; store: FileStore; parent: string; kids: string[] }> {
  const root = path.join(mkdtempSync(path.join(tmp, 'src-')), 'mlruns');
  const store = new FileStore(root);
  const exp = await store.getOrCreateExperiment('sweep-sync');
  const parent = (await store.createRun({ experimentId: exp, runName: 'sweep', startTime: 1000, tags: { 'mlflow.user': 'me' } })).runId;
  await store.logParams(parent, { sweep: 'mask_ratio' });
  const kids: string[] = [];
  for (const [i, mr] of ['0.4', '0.6'].entries()) {
    const id = (await store.createRun({ experimentId: exp, runName: `mr=${mr}`, startTime: 1100 + i, tags: { 'mlflow.parentRunId': parent, team: 'v' } })).runId;
    await store.logBatch(id, {
      params: [{ key: 'model.mask_ratio', value: mr }],
      metrics: [
        ...Array.from({ length: 5 }, (_, s): Metric => ({ key: 'train/loss', value: 2 - s / 10, timestamp: 2000 + s, step: s + 1 })),
        { key: 'val', value: NaN, timestamp: 2010, step: 5 },
      ],
    });
    const f = path.join(tmp, `note-${i}.txt`);
    writeFileSync(f, `note ${mr}`);
    await store.logArtifact(id, f, 'notes');
    await store.setTerminated(id, 'FINISHED', 3000 + i);
    kids.push(id);
  }
  return { root, store, parent, kids };
}

test('sync to a server: runs, params, metric histories, tags (parent links remapped), artifacts, status; a second sync creates nothing', async () => {
  const { root, store, parent, kids } = await localStore();
  const srv = await startMlflowServer();
  try {
    const first = await sync([root, '--to', srv.url]);
    assert.equal(first.code, 0);
    assert.match(first.out, /synced 1 experiment\(s\) .*: 3 run\(s\) created, 0 updated, 0 unchanged/);
    const target = new RestStore(srv.url, { maxRetries: 0, env: {} });
    const exp = (await target.getExperimentByName('sweep-sync'))!;
    const runs = await searchAllRuns(target, [exp.experimentId]);
    assert.equal(runs.length, 3);
    const bySource = new Map(runs.map((r) => [r.data.tags['spark.source_run_id']!, r]));
    const tParent = bySource.get(parent)!;
    assert.equal(tParent.info.runName, 'sweep');
    assert.equal(tParent.data.params['sweep'], 'mask_ratio');
    for (const k of kids) {
      const t = bySource.get(k)!;
      const s = await store.getRun(k);
      assert.equal(t.info.runName, s.info.runName);
      assert.equal(t.info.status, 'FINISHED');
      assert.equal(t.info.startTime, s.info.startTime);
      assert.equal(t.info.endTime, s.info.endTime);
      assert.deepEqual(t.data.params, s.data.params);
      assert.equal(t.data.tags['mlflow.parentRunId'], tParent.info.runId, 'parent link points at the synced parent');
      assert.equal(t.data.tags['team'], 'v');
      const h = await target.getMetricHistory(t.info.runId, 'train/loss');
      assert.deepEqual(h, await store.getMetricHistory(k, 'train/loss'));
      assert.ok(Number.isNaN(t.data.metrics['val']!), 'NaN metric synced');
      const art = path.join(srv.artifactsDir, exp.experimentId, t.info.runId, 'artifacts', 'notes');
      assert.ok(existsSync(art), 'artifacts uploaded');
    }

    // second sync: nothing created, nothing written
    const writes = () => srv.requests.filter((r) => r.method === 'PUT' || /runs\/(create|log-batch|update|set-tag)$/.test(r.path)).length;
    const w0 = writes();
    const second = await sync([root, '--to', srv.url, '--experiment', 'sweep-sync']);
    assert.equal(second.code, 0);
    assert.match(second.out, /0 run\(s\) created, 0 updated, 3 unchanged/);
    assert.equal(writes(), w0, 'a second sync writes nothing');
    assert.equal((await searchAllRuns(target, [exp.experimentId])).length, 3);

    // the local run grows: only the new points go
    await store.logMetrics(kids[0]!, [{ key: 'train/loss', value: 1.4, timestamp: 2100, step: 6 }]);
    await store.setTags(kids[0]!, { note: 'more' });
    const third = await sync([root, '--to', srv.url]);
    assert.match(third.out, /0 run\(s\) created, 1 updated, 2 unchanged/);
    assert.match(third.out, /updated\s+mr=0\.4 .*\(0 params, 1 metric points, 1 tags, 0 artifacts\)/);
    const t0 = bySource.get(kids[0]!)!;
    assert.deepEqual((await target.getMetricHistory(t0.info.runId, 'train/loss')).map((m) => m.step), [1, 2, 3, 4, 5, 6]);
  } finally {
    await srv.close();
  }
});

test('sync of the golden store written by MLflow 2.12.2 to a server, twice', async () => {
  const root = await copyGoldenStore(false);
  const srv = await startMlflowServer();
  try {
    const a = await sync([root, '--to', srv.url]);
    assert.match(a.out, /3 run\(s\) created/);
    const b = await sync([root, '--to', srv.url]);
    assert.match(b.out, /0 run\(s\) created, 0 updated, 3 unchanged/);
    const target = new RestStore(srv.url, { maxRetries: 0, env: {} });
    const exp = (await target.getExperimentByName('sweep-demo'))!;
    const runs = await searchAllRuns(target, [exp.experimentId], "params.mask_ratio = '0.4'");
    assert.equal(runs.length, 1);
    const parent = (await searchAllRuns(target, [exp.experimentId], `tags.spark.source_run_id = '${GOLDEN_PARENT}'`))[0]!;
    assert.equal(runs[0]!.data.tags['mlflow.parentRunId'], parent.info.runId);
    assert.deepEqual((await target.getMetricHistory(runs[0]!.info.runId, 'train/loss')).map((m) => m.value), [1.4, 0.9, 0.7333333333333334]);
  } finally {
    await srv.close();
    rmSync(path.dirname(root), { recursive: true, force: true });
  }
});

test('sync --run replays the offline journal a run left when its server was down at the end', async () => {
  const srv = await startMlflowServer();
  try {
    const runDir = path.join(tmp, 'run-offline');
    mkdirSync(runDir, { recursive: true });
    const store = new RestStore(srv.url, { maxRetries: 0, timeout: 2, env: {} });
    const t = await createRunTracker({ config: trackedConfig(srv.url), runDir, specPath: null, resolvedYaml: '', resume: false, store, flushEvery: 5, flushSeconds: 3600 });
    await (t as unknown as { flushNow(): Promise<void> }).flushNow();
    await srv.stop();
    for (let s = 1; s <= 12; s++) t.onEvent({ type: 'step', time: 5000 + s, step: s, epoch: 1, epochStep: s, loss: 1 / s, lr: 0.1, wd: 0.01, gradNorm: 1, imgPerSec: 10, etaSec: 0 });
    t.onEvent({ type: 'run-end', time: 6000, status: 'FINISHED', step: 12, epoch: 1, finalLoss: 1 / 12 });
    await t.close!();
    assert.equal(readTrackingState(runDir)!.offline, true);
    assert.ok((await readJournal(path.join(runDir, JOURNAL_FILE))).pending.length > 0, 'calls wait in the journal');

    // server still down: a clear error, nothing lost (no retries, to keep the test short)
    process.env['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] = '0';
    try {
      await assert.rejects(() => sync(['--run', runDir]), /0 call\(s\) replayed, \d+ still pending: cannot reach/);
    } finally {
      delete process.env['MLFLOW_HTTP_REQUEST_MAX_RETRIES'];
    }
    await srv.start();
    const r = await sync(['--run', runDir]);
    assert.equal(r.code, 0);
    assert.match(r.out, /^replayed \d+ call\(s\)/);
    const h = await store.getMetricHistory(t.runId, 'loss');
    assert.deepEqual(h.map((m) => m.step), Array.from({ length: 12 }, (_, i) => i + 1));
    assert.equal((await store.getRun(t.runId)).info.status, 'FINISHED');
    assert.equal(readTrackingState(runDir)!.offline, undefined);
    const again = await sync(['--run', runDir]);
    assert.match(again.out, /^replayed 0 call\(s\)/);
    assert.equal((await store.getMetricHistory(t.runId, 'loss')).length, 12);
    assert.ok(readFileSync(path.join(runDir, JOURNAL_FILE), 'utf8').includes('"ack"'), 'acks appended');
  } finally {
    await srv.close();
  }
});

test('sync usage errors', async () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /needs one local store/],
    [['./mlruns'], /needs --to/],
    [['--run', path.join(tmp, 'nothing-here')], /not a tracked run folder/],
    [[path.join(tmp, 'nope'), '--to', path.join(tmp, 'other')], /no MLflow file store/],
    [['--what'], /Unknown option/],
  ];
  for (const [args, re] of cases) {
    await assert.rejects(() => sync(args), (e: unknown) => e instanceof UsageError && re.test(e.message), args.join(' '));
  }
});
