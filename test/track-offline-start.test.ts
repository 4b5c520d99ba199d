/**
 * A tracking server that is unreachable when the run starts: the run starts offline (its creation journaled under
 * a placeholder run id), finishes, and its MLflow run is created exactly once when the server is back (during the
 * run, at close, or by `spark sync --run`), holding every param and every metric step once. A create whose answer
 * was lost is found again by its client token; resume continues the placeholder (or the real id once created).
 * A sweep's parent run is not started offline: a clear one-line error.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { RunEvent } from '../src/train/events.js';
import { runSync } from '../src/cli/commands/sync.js';
import { configParams, createParentRun, createRunTracker, readTrackingState, type RunTracker } from '../src/track/index.js';
import { FileStore } from '../src/track/filestore.js';
import { RestStore } from '../src/track/rest.js';
import { JOURNAL_FILE, readJournal } from '../src/track/journal.js';
import { CLIENT_TOKEN_TAG, searchAllRuns, type Run, type TrackingStore } from '../src/track/types.js';
import { TrackingError } from '../src/util/errors.js';
import { startMlflowServer, trackedConfig, type MlflowTestServer } from './helpers/mlflow-server.js';
import { tinyConfig, tmpDir } from './helpers/train.js';
import { runExperiment } from '../src/train/run.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'spark-offline-start-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
/** A run folder with a run.json, as RunFolder writes it. */
function newRunDir(): string {
  const d = path.join(tmp, `run-${n++}`);
  mkdirSync(d, { recursive: true });
  writeFileSync(path.join(d, 'run.json'), JSON.stringify({ runId: `local-${n}`, name: 'q', specPath: null, createdAt: '2026-01-01T00:00:00.000Z' }, null, 2) + '\n');
  return d;
}
const runInfo = (d: string) => JSON.parse(readFileSync(path.join(d, 'run.json'), 'utf8')) as Record<string, unknown>;

const config = (uri: string, experiment = 'offline-start') => trackedConfig(uri, { experiment, run_name: 'offline-trial', tags: { team: 'vision' } });

const T0 = 1_800_000_000_000;
const step = (s: number): RunEvent => ({ type: 'step', time: T0 + s, step: s, epoch: 1, epochStep: s, loss: 2 - s / 100, lr: 1e-3, wd: 0.04, gradNorm: 1, imgPerSec: 10, etaSec: 0 });
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** No retries and short timeouts: an outage is seen at once. */
const fastStore = (srv: MlflowTestServer) => new RestStore(srv.url, { maxRetries: 0, timeout: 5, env: {} });
const flushNow = (t: RunTracker) => (t as unknown as { flushNow(): Promise<void> }).flushNow();

async function sync(args: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await runSync(args, (s) => (out += s));
  return { code, out };
}

async function withNoRetries<T>(f: () => Promise<T>): Promise<T> {
  process.env['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] = '0';
  try {
    return await f();
  } finally {
    delete process.env['MLFLOW_HTTP_REQUEST_MAX_RETRIES'];
  }
}

/** Every run of the experiment on the server (none when the experiment does not exist). */
async function serverRuns(store: TrackingStore, experiment = 'offline-start'): Promise<Run[]> {
  const e = await store.getExperimentByName(experiment);
  return e ? searchAllRuns(store, [e.experimentId]) : [];
}

async function startTracker(srv: MlflowTestServer, runDir: string, warnings: string[], resume = false, experiment?: string): Promise<RunTracker> {
  return createRunTracker({
    config: config(srv.url, experiment),
    runDir,
    specPath: null,
    resolvedYaml: 'name: q\n',
    resume,
    store: fastStore(srv),
    flushEvery: 10,
    flushSeconds: 3600,
    emit: (e) => void (e.type === 'warning' && warnings.push(e.code)),
  });
}

test('server down at start: the run starts offline, finishes; `spark sync --run` creates exactly one run with every param and metric step once', async () => {
  const srv = await startMlflowServer();
  try {
    await srv.stop();
    const runDir = newRunDir();
    const warnings: string[] = [];
    const t0 = Date.now();
    const t = await startTracker(srv, runDir, warnings);
    assert.ok(Date.now() - t0 < 3000, 'the start does not wait for the server');
    assert.deepEqual(warnings, ['tracking-offline']);
    assert.equal(t.runId, '', 'no MLflow run id yet');
    const st0 = readTrackingState(runDir)!;
    assert.match(st0.runId, /^offline-[0-9a-f]{32}$/);
    assert.equal(st0.placeholderRunId, st0.runId);
    assert.equal(st0.offline, true);
    assert.equal(st0.experimentId, '');

    const png = path.join(runDir, 'recon.png');
    writeFileSync(png, Buffer.from([137, 80, 78, 71]));
    for (let s = 1; s <= 40; s++) {
      t.onEvent(step(s));
      if (s === 20) t.onEvent({ type: 'epoch', time: T0 + 20, epoch: 1, step: 20, meanLoss: 1.9, minLoss: 1.8, seconds: 1 });
      if (s === 30) t.onEvent({ type: 'reconstruction', time: T0 + 30, step: 30, epoch: 1, path: png, loss: 0.7 });
    }
    t.onEvent({ type: 'run-end', time: T0 + 100, status: 'FINISHED', step: 40, epoch: 1, finalLoss: 1.6 });
    await t.close!();
    assert.equal(t.runId, '');
    const journal = await readJournal(path.join(runDir, JOURNAL_FILE));
    assert.equal(journal.pending[0]!.op.type, 'create-run', 'the creation is the first journaled call');
    assert.ok(journal.pending.every((e) => e.op.runId === st0.runId), 'every call names the placeholder');
    assert.equal(readTrackingState(runDir)!.lastLoggedStep, 40);
    assert.equal(runInfo(runDir)['mlflowRunId'], undefined);

    // still down: a clear error, nothing created or lost
    await withNoRetries(() => assert.rejects(() => sync(['--run', runDir]), /0 call\(s\) replayed, \d+ still pending: cannot reach/));
    assert.equal(readTrackingState(runDir)!.runId, st0.runId);

    await srv.start();
    const r = await sync(['--run', runDir]);
    assert.equal(r.code, 0, r.out);
    const store = fastStore(srv);
    const runs = await serverRuns(store);
    assert.equal(runs.length, 1, 'exactly one MLflow run');
    const run = await store.getRun(runs[0]!.info.runId);
    const id = run.info.runId;
    assert.match(r.out, new RegExp(`^replayed ${journal.pending.length} call\\(s\\) .*\\(run ${id}\\)\\n  created MLflow run ${id} `));
    // tracking state and run-info hold the real id; the placeholder is kept for the record
    const st = readTrackingState(runDir)!;
    assert.deepEqual(st, { uri: srv.url, experimentId: run.info.experimentId, runId: id, lastLoggedStep: 40, placeholderRunId: st0.runId });
    assert.equal(runInfo(runDir)['mlflowRunId'], id);
    assert.equal(runInfo(runDir)['mlflowExperimentId'], run.info.experimentId);
    assert.equal(runInfo(runDir)['name'], 'q', 'run.json is patched, not replaced');
    // the run: name, tags, start time from when it started offline, every param, every metric step once, status
    assert.equal(run.info.runName, 'offline-trial');
    assert.ok(run.info.startTime >= t0 && run.info.startTime <= t0 + 3000, 'start time of the run, not of the sync');
    assert.equal(run.data.tags[CLIENT_TOKEN_TAG], st0.runId.slice('offline-'.length));
    assert.equal(run.data.tags['team'], 'vision');
    assert.deepEqual(run.data.params, configParams(config(srv.url)));
    for (const k of ['loss', 'lr', 'grad_norm']) assert.deepEqual((await store.getMetricHistory(id, k)).map((m) => m.step), range(1, 40), k);
    assert.deepEqual((await store.getMetricHistory(id, 'epoch_loss')).map((m) => m.step), [20]);
    assert.deepEqual((await store.getMetricHistory(id, 'recon_loss')).map((m) => m.step), [30]);
    assert.equal(run.info.status, 'FINISHED');
    assert.equal(run.info.endTime, T0 + 100);
    const art = path.join(srv.artifactsDir, run.info.experimentId, id, 'artifacts');
    assert.ok(existsSync(path.join(art, 'reconstructions', 'recon.png')), 'reconstruction uploaded');
    assert.equal(readFileSync(path.join(art, 'spec', 'resolved.yaml'), 'utf8'), 'name: q\n');
    assert.equal(srv.requests.filter((q) => q.path.endsWith('/runs/create')).length, 1);

    // a second sync sends nothing and creates nothing
    const again = await sync(['--run', runDir]);
    assert.match(again.out, /^replayed 0 call\(s\)/);
    assert.equal((await serverRuns(store)).length, 1);
    assert.equal((await store.getMetricHistory(id, 'loss')).length, 40);
  } finally {
    await srv.close();
  }
});

test('server back mid-run: the run is created and the journal replayed during the run; later calls use the real id', async () => {
  const srv = await startMlflowServer();
  try {
    await srv.stop();
    const runDir = newRunDir();
    const warnings: string[] = [];
    const t = await startTracker(srv, runDir, warnings);
    for (let s = 1; s <= 30; s++) t.onEvent(step(s));
    await flushNow(t);
    assert.equal(t.runId, '');
    assert.ok((await readJournal(path.join(runDir, JOURNAL_FILE))).pending.length > 3, 'steps 1..30 wait in the journal');

    await srv.start();
    for (let s = 31; s <= 40; s++) t.onEvent(step(s)); // the 10th buffered step triggers a flush
    await flushNow(t);
    // replayed during the run, before run-end
    const id = t.runId;
    assert.match(id, /^[0-9a-f]{32}$/);
    assert.deepEqual(warnings, ['tracking-offline', 'tracking-online']);
    assert.equal(readTrackingState(runDir)!.runId, id);
    assert.equal(readTrackingState(runDir)!.offline, undefined);
    assert.equal(runInfo(runDir)['mlflowRunId'], id, 'run-info gets the id as soon as it is known');
    const store = fastStore(srv);
    assert.equal((await store.getRun(id)).info.status, 'RUNNING');
    assert.deepEqual((await store.getMetricHistory(id, 'loss')).map((m) => m.step), range(1, 40));
    assert.equal((await readJournal(path.join(runDir, JOURNAL_FILE))).pending.length, 0);

    const before = srv.requests.length;
    for (let s = 41; s <= 60; s++) t.onEvent(step(s));
    t.onEvent({ type: 'run-end', time: T0 + 100, status: 'FINISHED', step: 60, epoch: 1, finalLoss: 1.4 });
    await t.close!();
    assert.ok(srv.requests.slice(before).every((q) => (q.body as { run_id?: string } | undefined)?.run_id === undefined || (q.body as { run_id: string }).run_id === id), 'later calls name the real run id');
    assert.deepEqual((await store.getMetricHistory(id, 'loss')).map((m) => m.step), range(1, 60));
    assert.equal((await serverRuns(store)).length, 1);
    const run = await store.getRun(id);
    assert.equal(run.info.status, 'FINISHED');
    assert.deepEqual(run.data.params, configParams(config(srv.url)));
    assert.equal(t.runId, id);
  } finally {
    await srv.close();
  }
});

test('a create carried out by the server whose answer was lost: replay finds the run by its token, no second run', async () => {
  const srv = await startMlflowServer();
  try {
    // (a) at start: the tracker's own create is dropped after the server stored it
    srv.dropAfterProcessing(1, '/runs/create');
    const runDir = newRunDir();
    const warnings: string[] = [];
    const t = await startTracker(srv, runDir, warnings);
    assert.deepEqual(warnings, ['tracking-offline']);
    const store = fastStore(srv);
    assert.equal((await serverRuns(store)).length, 1, 'the server did create the run');
    const lines = readFileSync(path.join(runDir, JOURNAL_FILE), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { op?: { type: string } });
    assert.equal(lines[0]!.op?.type, 'create-run');
    for (let s = 1; s <= 10; s++) t.onEvent(step(s));
    t.onEvent({ type: 'run-end', time: T0 + 100, status: 'FINISHED', step: 10, epoch: 1, finalLoss: 1.9 });
    await t.close!();
    const runs = await serverRuns(store);
    assert.equal(runs.length, 1, 'no duplicate');
    assert.equal(t.runId, runs[0]!.info.runId);
    assert.equal(srv.requests.filter((q) => q.path.endsWith('/runs/create')).length, 1, 'runs/create was sent once');
    assert.ok(srv.requests.some((q) => q.path.endsWith('/runs/search') && JSON.stringify(q.body).includes(CLIENT_TOKEN_TAG)), 'searched by token');
    assert.deepEqual((await store.getMetricHistory(t.runId, 'loss')).map((m) => m.step), range(1, 10));
    assert.equal((await store.getRun(t.runId)).info.status, 'FINISHED');

    // (b) by `spark sync --run`: the replay's create is dropped; the next sync finds it instead of creating again
    await srv.stop();
    const dir2 = newRunDir();
    const t2 = await startTracker(srv, dir2, [], false, 'offline-start-b');
    for (let s = 1; s <= 5; s++) t2.onEvent(step(s));
    t2.onEvent({ type: 'run-end', time: T0 + 50, status: 'FINISHED', step: 5, epoch: 1, finalLoss: 1.95 });
    await t2.close!();
    await srv.start();
    srv.dropAfterProcessing(1, '/runs/create');
    await withNoRetries(() => assert.rejects(() => sync(['--run', dir2]), /0 call\(s\) replayed, \d+ still pending: cannot reach .*runs\/create/));
    assert.equal((await serverRuns(store, 'offline-start-b')).length, 1, 'stored, answer lost');
    const journal = await readJournal(path.join(dir2, JOURNAL_FILE));
    assert.equal(journal.pending[0]!.op.type, 'create-run');
    assert.equal(journal.pending[0]!.maybeSent, true);
    const r = await sync(['--run', dir2]);
    assert.match(r.out, /\n  found MLflow run [0-9a-f]{32} /);
    const runs2 = await serverRuns(store, 'offline-start-b');
    assert.equal(runs2.length, 1, 'no duplicate');
    assert.equal(readTrackingState(dir2)!.runId, runs2[0]!.info.runId);
    assert.deepEqual((await store.getMetricHistory(runs2[0]!.info.runId, 'loss')).map((m) => m.step), range(1, 5));
  } finally {
    await srv.close();
  }
});

test('a replay interrupted after the create keeps the mapping: the next replay creates nothing and sends each step once', async () => {
  const srv = await startMlflowServer();
  try {
    await srv.stop();
    const runDir = newRunDir();
    const t = await startTracker(srv, runDir, [], false, 'offline-start-c');
    for (let s = 1; s <= 25; s++) t.onEvent(step(s));
    t.onEvent({ type: 'run-end', time: T0 + 100, status: 'FINISHED', step: 25, epoch: 1, finalLoss: 1.75 });
    await t.close!();
    const placeholder = readTrackingState(runDir)!.runId;
    await srv.start();
    srv.failNext(1, 503, '/runs/log-batch'); // the server goes away right after the create
    await withNoRetries(() => assert.rejects(() => sync(['--run', runDir]), /1 call\(s\) replayed, \d+ still pending: .*HTTP 503/));
    const store = fastStore(srv);
    const runs = await serverRuns(store, 'offline-start-c');
    assert.equal(runs.length, 1);
    const st = readTrackingState(runDir)!;
    assert.equal(st.runId, runs[0]!.info.runId, 'the mapping was persisted before the rest');
    assert.equal(st.placeholderRunId, placeholder);
    assert.equal(st.offline, true);
    assert.equal(runInfo(runDir)['mlflowRunId'], st.runId);
    const r = await sync(['--run', runDir]);
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.out, /created|found/);
    assert.equal((await serverRuns(store, 'offline-start-c')).length, 1);
    assert.equal(srv.requests.filter((q) => q.path.endsWith('/runs/create')).length, 1);
    assert.deepEqual((await store.getMetricHistory(st.runId, 'loss')).map((m) => m.step), range(1, 25));
    assert.equal((await store.getRun(st.runId)).info.status, 'FINISHED');
  } finally {
    await srv.close();
  }
});

test('resume of a run that started offline: the same placeholder while the create is journaled, the real id once replayed', async () => {
  const srv = await startMlflowServer();
  try {
    await srv.stop();
    // (a) server down the whole time: killed at 20, resumed from a checkpoint at 15, finished at 40
    const runDir = newRunDir();
    const a = await startTracker(srv, runDir, []);
    const placeholder = readTrackingState(runDir)!.runId;
    for (let s = 1; s <= 20; s++) a.onEvent(step(s));
    a.onEvent({ type: 'run-end', time: T0 + 20, status: 'KILLED', step: 20, epoch: 1, finalLoss: 1.8 });
    await a.close!();
    const warnings: string[] = [];
    const b = await startTracker(srv, runDir, warnings, true);
    assert.deepEqual(warnings, ['tracking-offline']);
    assert.equal(b.runId, '');
    assert.equal(readTrackingState(runDir)!.runId, placeholder, 'the same placeholder');
    for (let s = 16; s <= 40; s++) b.onEvent(step(s)); // 16..20 were logged before the kill: skipped
    b.onEvent({ type: 'run-end', time: T0 + 40, status: 'FINISHED', step: 40, epoch: 1, finalLoss: 1.6 });
    await b.close!();
    const j = await readJournal(path.join(runDir, JOURNAL_FILE));
    assert.equal(j.pending.filter((e) => e.op.type === 'create-run').length, 1, 'one creation in the journal');
    assert.ok(j.pending.every((e) => e.op.runId === placeholder));
    await srv.start();
    await sync(['--run', runDir]);
    const store = fastStore(srv);
    const runs = await serverRuns(store);
    const mine = runs.filter((r) => r.data.tags[CLIENT_TOKEN_TAG] === placeholder.slice('offline-'.length));
    assert.equal(mine.length, 1);
    const id = mine[0]!.info.runId;
    assert.deepEqual((await store.getMetricHistory(id, 'loss')).map((m) => m.step), range(1, 40));
    assert.equal(mine[0]!.info.status, 'FINISHED');

    // (b) the create was replayed (by sync) before the resume: the resume continues the real run
    await srv.stop();
    const dir2 = newRunDir();
    const c = await startTracker(srv, dir2, [], false, 'offline-start-d');
    for (let s = 1; s <= 10; s++) c.onEvent(step(s));
    c.onEvent({ type: 'run-end', time: T0 + 10, status: 'KILLED', step: 10, epoch: 1, finalLoss: 1.9 });
    await c.close!();
    await srv.start();
    await sync(['--run', dir2]);
    const real = readTrackingState(dir2)!.runId;
    assert.match(real, /^[0-9a-f]{32}$/);
    const w2: string[] = [];
    const d = await startTracker(srv, dir2, w2, true, 'offline-start-d');
    assert.equal(d.runId, real);
    assert.deepEqual(w2, []);
    for (let s = 11; s <= 20; s++) d.onEvent(step(s));
    d.onEvent({ type: 'run-end', time: T0 + 20, status: 'FINISHED', step: 20, epoch: 1, finalLoss: 1.8 });
    await d.close!();
    assert.equal((await serverRuns(store, 'offline-start-d')).length, 1);
    assert.deepEqual((await store.getMetricHistory(real, 'loss')).map((m) => m.step), range(1, 20));
    assert.equal((await store.getRun(real)).info.status, 'FINISHED');
    assert.match(readTrackingState(dir2)!.placeholderRunId ?? '', /^offline-[0-9a-f]{32}$/, 'the placeholder is kept for the journaled calls');
  } finally {
    await srv.close();
  }
});

test('the file store path is unchanged: no token tag, no placeholder, no journal', async () => {
  const runDir = newRunDir();
  const mlruns = path.join(tmp, 'mlruns-file');
  const warnings: string[] = [];
  const t = await createRunTracker({ config: config(mlruns), runDir, specPath: null, resolvedYaml: '', resume: false, emit: (e) => void (e.type === 'warning' && warnings.push(e.code)) });
  for (let s = 1; s <= 5; s++) t.onEvent(step(s));
  await t.close!();
  const run = await new FileStore(mlruns).getRun(t.runId);
  assert.equal(run.data.tags[CLIENT_TOKEN_TAG], undefined);
  assert.deepEqual(Object.keys(readTrackingState(runDir)!).sort(), ['experimentId', 'lastLoggedStep', 'runId', 'uri']);
  assert.ok(!existsSync(path.join(runDir, JOURNAL_FILE)));
  assert.deepEqual(warnings, []);
});

test('sweeps: an unreachable server when the parent run is created is a one-line error naming the URI and the fix', async () => {
  const srv = await startMlflowServer();
  await srv.stop();
  try {
    const check = (e: unknown) => {
      assert.ok(e instanceof TrackingError);
      assert.ok(!e.message.includes('\n'), 'one line');
      assert.match(e.message, new RegExp(`^cannot create the sweep's parent MLflow run: the tracking server ${srv.url.replace(/\./g, '\\.')} is unreachable`));
      assert.match(e.message, /spark sync \.\/mlruns --to http:\/\/127\.0\.0\.1:\d+/);
      assert.match(e.message, /tracking\.uri=\.\/mlruns/);
      return true;
    };
    await assert.rejects(() => createParentRun({ uri: srv.url, experiment: 'sw', runName: 'sweep', store: fastStore(srv) }), check);
    const { storeTracker } = await import('../src/sweep/tracker.js');
    await assert.rejects(() => storeTracker(fastStore(srv)).createParent({ experiment: 'sw', runName: 'sweep', params: {}, tags: {} }), check);
  } finally {
    await srv.close();
  }
});

test('spark run with the server down at start: the run trains to the end; sync later fills run.json with the MLflow run id', async () => {
  const srv = await startMlflowServer();
  try {
    await srv.stop();
    const out = tmpDir('spark-offline-run-');
    const c = await tinyConfig({ outDir: out, name: 'offline', steps: 4, checkpointEvery: 0 });
    c.config.tracking = { enabled: true, uri: srv.url, experiment: 'offline-run', run_name: null, tags: {}, close_timeout: 5 };
    const events: RunEvent[] = [];
    const res = await runExperiment({ ...c, subscribers: [{ onEvent: (e: RunEvent) => void events.push(e) }] });
    assert.equal(res.status, 'FINISHED');
    assert.equal(res.step, 4);
    assert.equal(res.mlflowRunId, undefined, 'no MLflow run id known');
    const offline = events.filter((e) => e.type === 'warning' && e.code === 'tracking-offline');
    assert.equal(offline.length, 1);
    assert.match((offline[0] as { message: string }).message, /unreachable when the run started .*spark sync --run /);
    assert.equal(events.filter((e) => e.type === 'step').length, 4);
    assert.equal(runInfo(res.runDir)['mlflowRunId'], undefined);
    // the run says, at its end, that calls wait and how to send them
    assert.match(res.trackingReminder ?? '', /^MLflow: \d+ tracking call\(s\) could not be sent and wait in .*mlflow-offline\.jsonl; send them with: npx spark sync --run /);

    await srv.start();
    const r = await sync(['--run', res.runDir]);
    assert.equal(r.code, 0, r.out);
    const store = fastStore(srv);
    const runs = await serverRuns(store, 'offline-run');
    assert.equal(runs.length, 1);
    const id = runs[0]!.info.runId;
    assert.equal(runInfo(res.runDir)['mlflowRunId'], id);
    assert.equal(runs[0]!.info.status, 'FINISHED');
    assert.equal(runs[0]!.info.runName, 'offline');
    assert.deepEqual((await store.getMetricHistory(id, 'loss')).map((m) => m.step), range(1, 4));
  } finally {
    await srv.close();
  }
});
