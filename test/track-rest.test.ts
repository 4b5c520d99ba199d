/** The REST client against the in-process MLflow test server (spec mlflow.md §1). */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RestStore, chunkBatch, UNREACHABLE, UnreachableError } from '../src/track/rest.js';
import type { Metric } from '../src/track/types.js';
import { TrackingError } from '../src/util/errors.js';
import { MlflowTestServer, startMlflowServer } from './helpers/mlflow-server.js';

let srv: MlflowTestServer;
const fast = { backoffFactor: 0.01, backoffJitter: 0, maxRetries: 3, timeout: 5, env: {} };

before(async () => {
  srv = await startMlflowServer();
});
after(async () => {
  await srv.close();
});

function isTE(code: string | undefined, status?: number) {
  return (e: unknown) => e instanceof TrackingError && e.errorCode === code && (status === undefined || e.httpStatus === status);
}

test('experiments: get-by-name 404 → create; duplicate create is 400 RESOURCE_ALREADY_EXISTS; get-or-create', async () => {
  const c = new RestStore(srv.url, fast);
  assert.equal(await c.getExperimentByName('exp-a'), null);
  const n0 = srv.requests.length;
  const id = await c.getOrCreateExperiment('exp-a');
  assert.deepEqual(srv.requests.slice(n0).map((r) => `${r.method} ${r.path}`), ['GET /api/2.0/mlflow/experiments/get-by-name', 'POST /api/2.0/mlflow/experiments/create']);
  assert.equal(srv.requests[n0]!.query['experiment_name'], 'exp-a');
  assert.equal(await c.getOrCreateExperiment('exp-a'), id);
  await assert.rejects(() => c.createExperiment('exp-a'), isTE('RESOURCE_ALREADY_EXISTS', 400));
  const e = await c.getExperiment(id);
  assert.equal(e.name, 'exp-a');
  assert.equal(e.artifactLocation, `mlflow-artifacts:/${id}`);
  assert.ok((await c.listExperiments()).some((x) => x.experimentId === id), '(await c.listExperiments()).some((x) => x.experimentId === id)');
  await assert.rejects(() => c.getRun('ffffffffffffffffffffffffffffffff'), isTE('RESOURCE_DOES_NOT_EXIST', 404));
});

test('run lifecycle: create (name + system tags), log, terminate, get, search', async () => {
  const c = new RestStore(srv.url, fast);
  const expId = await c.getOrCreateExperiment('exp-life');
  const info = await c.createRun({ experimentId: expId, runName: 'trial-1', startTime: 1000, tags: { 'mlflow.user': 'me', team: 'v' } });
  const create = srv.requests.filter((r) => r.path.endsWith('/runs/create')).pop()!;
  assert.equal(create.headers['content-type'], 'application/json');
  assert.deepEqual(create.body, {
    experiment_id: expId,
    user_id: 'me',
    run_name: 'trial-1',
    start_time: 1000,
    tags: [
      { key: 'mlflow.user', value: 'me' },
      { key: 'team', value: 'v' },
      { key: 'mlflow.runName', value: 'trial-1' },
    ],
  });
  assert.equal(info.status, 'RUNNING');
  assert.equal(info.artifactUri, `mlflow-artifacts:/${expId}/${info.runId}/artifacts`);
  await c.logParams(info.runId, { 'model.mask_ratio': '0.6' });
  await c.logMetrics(info.runId, [{ key: 'loss', value: 1.5, timestamp: 1100, step: 1 }, { key: 'loss', value: 1.2, timestamp: 1200, step: 2 }]);
  await assert.rejects(() => c.logParams(info.runId, { 'model.mask_ratio': '0.7' }), isTE('INVALID_PARAMETER_VALUE', 400));
  await c.setTags(info.runId, { 'mlflow.runName': 'renamed', x: 'y' });
  await c.setTerminated(info.runId, 'FINISHED', 2000);
  const run = await c.getRun(info.runId);
  assert.equal(run.info.status, 'FINISHED');
  assert.equal(run.info.endTime, 2000);
  assert.equal(run.info.runName, 'renamed');
  assert.deepEqual(run.data.metrics, { loss: 1.2 });
  assert.equal(run.data.params['model.mask_ratio'], '0.6');
  assert.equal(run.data.tags['x'], 'y');
  const found = await c.searchRuns([expId], "params.model.mask_ratio = '0.6' and metrics.loss < 1.3", ['metrics.loss ASC']);
  assert.deepEqual(found.runs.map((r) => r.info.runId), [info.runId]);
  await assert.rejects(() => c.searchRuns([expId], "params.x = 1"), (e: unknown) => e instanceof TrackingError && /Expected a quoted string value/.test(e.message));
  // pagination through the server
  for (let i = 0; i < 3; i++) await c.createRun({ experimentId: expId, runName: `p${i}` });
  const p1 = await c.searchRuns([expId], '', [], 2);
  assert.equal(p1.runs.length, 2);
  assert.ok(p1.nextPageToken, 'p1.nextPageToken');
  const p2 = await c.searchRuns([expId], '', [], 2, p1.nextPageToken);
  assert.equal(p2.runs.length, 2);
  assert.equal(p2.nextPageToken, undefined);
});

test('log-batch is chunked to ≤1000 metrics / ≤100 params / ≤100 tags / ≤1000 entities; over-limit requests get 400', async () => {
  const c = new RestStore(srv.url, fast);
  const expId = await c.getOrCreateExperiment('exp-batch');
  const { runId } = await c.createRun({ experimentId: expId, runName: 'big' });
  const metrics: Metric[] = Array.from({ length: 2500 }, (_, i) => ({ key: `m${i % 3}`, value: i, timestamp: 10 + i, step: i }));
  const params = Array.from({ length: 150 }, (_, i) => ({ key: `p${i}`, value: String(i) }));
  const tags = Array.from({ length: 120 }, (_, i) => ({ key: `t${i}`, value: String(i) }));
  const n0 = srv.requests.length;
  await c.logBatch(runId, { metrics, params, tags });
  const reqs = srv.requests.slice(n0).filter((r) => r.path.endsWith('/runs/log-batch'));
  assert.ok(reqs.length >= 3, 'reqs.length >= 3');
  let nm = 0;
  let np = 0;
  let nt = 0;
  for (const r of reqs) {
    const b = r.body as { metrics: unknown[]; params: unknown[]; tags: unknown[] };
    assert.ok(b.metrics.length <= 1000 && b.params.length <= 100 && b.tags.length <= 100, 'b.metrics.length <= 1000 && b.params.length <= 100 && b.tags.length <= 100');
    assert.ok(b.metrics.length + b.params.length + b.tags.length <= 1000, 'b.metrics.length + b.params.length + b.tags.length <= 1000');
    nm += b.metrics.length;
    np += b.params.length;
    nt += b.tags.length;
  }
  assert.deepEqual([nm, np, nt], [2500, 150, 120]);
  const h = await c.getMetricHistory(runId, 'm0');
  assert.equal(h.length, 834);
  assert.deepEqual(h.slice(0, 2).map((m) => m.step), [0, 3], 'order kept');
  const run = await c.getRun(runId);
  assert.equal(Object.keys(run.data.params).length, 150);
  // the server enforces the limits (so the chunking matters)
  await assert.rejects(
    () => c.logBatchRequest(runId, { metrics: Array.from({ length: 1001 }, (_, i) => ({ key: 'z', value: 1, timestamp: 1, step: i })) }),
    (e: unknown) => e instanceof TrackingError && e.errorCode === 'INVALID_PARAMETER_VALUE' && /at most 1000 metrics/.test(e.message),
  );
  await assert.rejects(() => c.logBatchRequest(runId, { params: Array.from({ length: 101 }, (_, i) => ({ key: `q${i}`, value: '1' })) }), /at most 100 params/);
  // chunkBatch on its own: entities cap across kinds
  const chunks = chunkBatch({ params: params.slice(0, 100), metrics: metrics.slice(0, 1000), tags: tags.slice(0, 100) });
  assert.ok(chunks.every((ch) => (ch.params?.length ?? 0) + (ch.metrics?.length ?? 0) + (ch.tags?.length ?? 0) <= 1000), 'chunks.every((ch) => (ch.params?.length ?? 0) + (ch.metrics?.length ?? 0) + (ch.tags?.length ?? 0) <= 1000)');
  assert.equal(chunks.reduce((s, ch) => s + (ch.metrics?.length ?? 0), 0), 1000);
});

test('NaN and ±Infinity travel as "NaN" / "Infinity" / "-Infinity" strings, both ways', async () => {
  const c = new RestStore(srv.url, fast);
  const expId = await c.getOrCreateExperiment('exp-nan');
  const { runId } = await c.createRun({ experimentId: expId, runName: 'nan' });
  const n0 = srv.requests.length;
  await c.logMetrics(runId, [
    { key: 'a', value: NaN, timestamp: 1, step: 0 },
    { key: 'b', value: Infinity, timestamp: 1, step: 0 },
    { key: 'c', value: -Infinity, timestamp: 1, step: 0 },
  ]);
  const raw = srv.requests[n0]!.raw.toString('utf8');
  assert.match(raw, /"value":"NaN"/);
  assert.match(raw, /"value":"Infinity"/);
  assert.match(raw, /"value":"-Infinity"/);
  assert.doesNotMatch(raw, /null/);
  const h = await c.getMetricHistory(runId, 'a');
  assert.ok(Number.isNaN(h[0]!.value), 'Number.isNaN(h[0]!.value)');
  const run = await c.getRun(runId);
  assert.equal(run.data.metrics['b'], Infinity);
  assert.equal(run.data.metrics['c'], -Infinity);
  // JSON null (what JSON.stringify(NaN) gives) is rejected by the server, as MLflow does
  const res = await fetch(`${srv.url}/api/2.0/mlflow/runs/log-batch`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ run_id: runId, metrics: [{ key: 'd', value: NaN, timestamp: 1, step: 0 }] }),
  });
  assert.equal(res.status, 400);
  assert.match(((await res.json()) as { message: string }).message, /Missing value for required parameter 'value'/);
});

test('auth: Bearer from MLFLOW_TRACKING_TOKEN, Basic from USERNAME/PASSWORD; 401 is a typed error', async () => {
  srv.requireAuth = 'Bearer s3cret';
  try {
    const ok = new RestStore(srv.url, { ...fast, env: { MLFLOW_TRACKING_TOKEN: 's3cret' } });
    assert.ok(await ok.getOrCreateExperiment('exp-auth'), 'await ok.getOrCreateExperiment(\'exp-auth\')');
    assert.equal(srv.requests[srv.requests.length - 1]!.headers['authorization'], 'Bearer s3cret');
    const none = new RestStore(srv.url, fast);
    await assert.rejects(() => none.getExperimentByName('exp-auth'), isTE('UNAUTHENTICATED', 401));
    srv.requireAuth = `Basic ${Buffer.from('alice:pw').toString('base64')}`;
    const basic = new RestStore(srv.url, { ...fast, env: { MLFLOW_TRACKING_USERNAME: 'alice', MLFLOW_TRACKING_PASSWORD: 'pw' } });
    assert.ok(await basic.getExperimentByName('exp-auth'), 'await basic.getExperimentByName(\'exp-auth\')');
  } finally {
    srv.requireAuth = null;
  }
});

test('retries with backoff on 503/429, gives up after maxRetries; timeouts and refused connections are UNREACHABLE', async () => {
  const c = new RestStore(srv.url, fast);
  srv.failNext(2, 503);
  const n0 = srv.requests.length;
  assert.equal(await c.getExperimentByName('none-such'), null);
  assert.equal(srv.requests.length - n0, 3, 'two failures + one success');
  srv.failNext(1, 429);
  assert.equal(await c.getExperimentByName('none-such'), null);

  const once = new RestStore(srv.url, { ...fast, maxRetries: 1 });
  srv.failNext(2, 503);
  await assert.rejects(() => once.getExperimentByName('x'), isTE(UNREACHABLE, 503));

  // timeout: the first answer is late, the retry is on time
  const slow = new RestStore(srv.url, { ...fast, timeout: 0.2, maxRetries: 0 });
  srv.delayNext(1, 800);
  await assert.rejects(() => slow.getExperimentByName('x'), (e: unknown) => e instanceof TrackingError && e.errorCode === UNREACHABLE && /timed out/.test(e.message));
  await new Promise((r) => setTimeout(r, 700));
  const retrying = new RestStore(srv.url, { ...fast, timeout: 0.2, maxRetries: 1 });
  srv.delayNext(1, 800);
  assert.equal(await retrying.getExperimentByName('x'), null);
  await new Promise((r) => setTimeout(r, 700));

  // a port nobody listens on
  const dead = new MlflowTestServer();
  await dead.start();
  const url = dead.url;
  await dead.close();
  const t0 = Date.now();
  await assert.rejects(() => new RestStore(url, { ...fast, maxRetries: 1 }).getExperimentByName('x'), (e: unknown) => e instanceof TrackingError && e.errorCode === UNREACHABLE && /ECONNREFUSED/.test(e.message) && e instanceof UnreachableError && !e.maybeSent);
  assert.ok(Date.now() - t0 < 3000, 'Date.now() - t0 < 3000');
});

test('unknown routes answer Flask HTML 404 → a clear ENDPOINT_NOT_FOUND; POST without JSON content type is 400', async () => {
  const res = await fetch(`${srv.url}/api/2.0/mlflow/nope`);
  assert.equal(res.status, 404);
  assert.match(res.headers.get('content-type') ?? '', /text\/html/);
  assert.match(await res.text(), /<title>404 Not Found<\/title>/);
  const wrongBase = new RestStore(`${srv.url}/not-mlflow`, fast);
  await assert.rejects(
    () => wrongBase.getExperimentByName('x'),
    (e: unknown) => e instanceof TrackingError && e.errorCode === 'ENDPOINT_NOT_FOUND' && e.httpStatus === 404 && /no such endpoint/.test(e.message),
  );
  const plain = await fetch(`${srv.url}/api/2.0/mlflow/experiments/create`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: '{"name":"x"}' });
  assert.equal(plain.status, 400);
  assert.equal(((await plain.json()) as { error_code: string }).error_code, 'INVALID_PARAMETER_VALUE');
  const get = await fetch(`${srv.url}/api/2.0/mlflow/runs/search`);
  assert.equal(get.status, 405);
});

test('artifacts are uploaded with PUT to mlflow-artifacts (files and folders)', async () => {
  const c = new RestStore(srv.url, fast);
  const expId = await c.getOrCreateExperiment('exp-art');
  const { runId } = await c.createRun({ experimentId: expId, runName: 'art' });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-art-'));
  try {
    writeFileSync(path.join(dir, 'spec.yaml'), 'name: x\n');
    mkdirSync(path.join(dir, 'recon'));
    writeFileSync(path.join(dir, 'recon', 'a b.png'), Buffer.from([137, 80, 78, 71]));
    await c.logArtifact(runId, path.join(dir, 'spec.yaml'), 'spec');
    await c.logArtifact(runId, path.join(dir, 'recon'), null);
    const put = srv.requests.filter((r) => r.method === 'PUT').map((r) => r.path);
    assert.ok(put.includes(`/api/2.0/mlflow-artifacts/artifacts/${expId}/${runId}/artifacts/spec/spec.yaml`), 'put.includes(`/api/2.0/mlflow-artifacts/artifacts/${expId}/${runId}/artifacts/spec/spec.yaml`)');
    assert.ok(put.includes(`/api/2.0/mlflow-artifacts/artifacts/${expId}/${runId}/artifacts/recon/a%20b.png`), 'put.includes(`/api/2.0/mlflow-artifacts/artifacts/${expId}/${runId}/artifacts/recon/a%20b.png`)');
    assert.equal(readFileSync(path.join(srv.artifactsDir, expId, runId, 'artifacts', 'spec', 'spec.yaml'), 'utf8'), 'name: x\n');
    assert.deepEqual([...readFileSync(path.join(srv.artifactsDir, expId, runId, 'artifacts', 'recon', 'a b.png'))], [137, 80, 78, 71]);
    assert.throws(() => c.artifactBaseUrl('s3://bucket/x'), isTE('UNSUPPORTED_ARTIFACT_URI'));
    assert.equal(c.artifactBaseUrl('mlflow-artifacts://other:9000/1/r/artifacts'), 'http://other:9000/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
