/**
 * Tracking under faults, with the real trainer: a run hard-killed (SIGKILL) after a checkpoint and resumed has
 * exactly one loss point per step in the store (file store and REST); a run against a server that accepts
 * connections but never answers finishes within tracking.close_timeout after its last step, leaves what is
 * pending in its journal with the `npx spark sync --run` reminder, and that journal replays completely and once;
 * a 3-trial sweep against such a server takes no longer than with the server down.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadExperiment, resolveConfig } from '../src/spec/index.js';
import { runExperiment } from '../src/train/run.js';
import { createRunTracker, openStore, readJournal, JOURNAL_FILE, configParams, RestStore, TRACKER_REST_OPTIONS, type TrackingStore } from '../src/track/index.js';
import { syncRunJournal } from '../src/track/sync.js';
import { runSweep } from '../src/sweep/runner.js';
import { readSweep } from '../src/sweep/state.js';
import type { RunEvent } from '../src/train/events.js';
import { startMlflowServer, trackedConfig, type MlflowTestServer } from './helpers/mlflow-server.js';
import { onlyRunDir, spawnSpark, tinySpecYaml, tmpDir, waitForCheckpoint } from './helpers/train.js';

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** The tiny spec of the train-* tests, tracked to `uri`. */
function trackedSpec(outDir: string, name: string, uri: string, o: { steps: number; checkpointEvery: number; closeTimeout?: number }): string {
  const file = path.join(outDir, `${name}.yaml`);
  const tracking = `tracking: {enabled: true, uri: ${JSON.stringify(uri)}, experiment: faults, close_timeout: ${o.closeTimeout ?? 5}}`;
  writeFileSync(file, tinySpecYaml({ outDir, name, steps: o.steps, checkpointEvery: o.checkpointEvery }).replace('tracking: {enabled: false}', tracking));
  return file;
}

/** The loss steps of the only run of experiment 'faults'. */
async function lossSteps(store: TrackingStore): Promise<number[]> {
  const exp = await store.getExperimentByName('faults');
  assert.ok(exp, 'experiment faults exists');
  const runs = (await store.searchRuns([exp.experimentId])).runs;
  assert.equal(runs.length, 1, 'one MLflow run');
  return (await store.getMetricHistory(runs[0]!.info.runId, 'loss')).map((m) => m.step).sort((a, b) => a - b);
}

/** `spark run <spec>` killed with SIGKILL once a checkpoint at `ckpt` exists, then `spark run --resume`. */
async function killAfterCheckpointAndResume(
  spec: string,
  outDir: string,
  name: string,
  ckpt: number,
  between?: () => Promise<void>,
  resumed?: (r: { stdout: string; stderr: string }) => void,
): Promise<string> {
  const env = { SPARK_TEST_STEP_DELAY_MS: '300' };
  const first = spawnSpark('run', [spec], env);
  let runDir: string;
  try {
    runDir = await waitForCheckpoint(outDir, name, ckpt);
  } finally {
    first.child.kill('SIGKILL');
  }
  const r1 = await first.done;
  assert.equal(r1.signal, 'SIGKILL', r1.stderr);
  await between?.();
  const second = spawnSpark('run', ['--resume', runDir]);
  const r2 = await second.done;
  assert.equal(r2.code, 0, r2.stderr);
  resumed?.(r2);
  return runDir;
}

test('SIGKILL after a checkpoint, then --resume: exactly one loss point per step in the file store', { timeout: 240_000 }, async () => {
  const out = tmpDir('spark-kill-file-');
  const uri = path.join(out, 'mlruns');
  const spec = trackedSpec(out, 'k', uri, { steps: 12, checkpointEvery: 4 });
  const runDir = await killAfterCheckpointAndResume(spec, out, 'k', 4, async () => {
    // what the killed run logged up to its checkpoint is in the store or waits in the journal
    const dir = onlyRunDir(out, 'k');
    const ck = (JSON.parse(readFileSync(path.join(dir, 'checkpoint', 'state.json'), 'utf8')) as { step: number }).step;
    const j = await readJournal(path.join(dir, JOURNAL_FILE));
    const journaled = j.pending.flatMap((e) => (e.op.type === 'batch' ? (e.op.batch.metrics ?? []) : [])).filter((m) => m.key === 'loss').map((m) => m.step);
    const stored = await lossSteps(openStore(uri)).catch(() => [] as number[]);
    for (const s of range(1, ck)) assert.ok(journaled.includes(s) || stored.includes(s), `step ${s} (checkpoint ${ck}) is durable`);
    // the killed run still says RUNNING, with the liveness record of its dead process
    assert.equal(JSON.parse(readFileSync(path.join(dir, 'run.json'), 'utf8')).status, 'RUNNING');
    assert.ok(existsSync(path.join(dir, 'alive.json')));
  }, (r2) => assert.match(r2.stdout + r2.stderr, /previous-run-failed.*killed by the system.*last checkpoint at step \d+/));
  assert.equal(JSON.parse(readFileSync(path.join(runDir, 'run.json'), 'utf8')).status, 'FINISHED');
  assert.deepEqual(await lossSteps(openStore(uri)), range(1, 12));
  assert.equal((await readJournal(path.join(runDir, JOURNAL_FILE))).pending.length, 0);
});

test('SIGKILL after a checkpoint, then --resume: exactly one loss point per step through REST (steps only in the journal)', { timeout: 240_000 }, async () => {
  const srv = await startMlflowServer();
  try {
    const out = tmpDir('spark-kill-rest-');
    const spec = trackedSpec(out, 'k', srv.url, { steps: 12, checkpointEvery: 4 });
    // the server freezes right after the run is created: nothing the killed process logs reaches it
    srv.afterAnswer('/runs/create', () => srv.hang());
    await killAfterCheckpointAndResume(spec, out, 'k', 8, async () => {
      srv.unhang();
      assert.deepEqual(await lossSteps(new RestStore(srv.url, { env: {} })), [], 'nothing reached the server');
    });
    const store = new RestStore(srv.url, { env: {} });
    assert.deepEqual(await lossSteps(store), range(1, 12));
    const exp = (await store.getExperimentByName('faults'))!;
    const run = (await store.searchRuns([exp.experimentId])).runs[0]!;
    assert.equal(run.info.status, 'FINISHED');
    assert.ok(Object.keys(run.data.params).length > 20, 'params replayed');
  } finally {
    await srv.close();
  }
});

test('a server that accepts but never answers: the run finishes within close_timeout of its last step; the journal replays completely, once', { timeout: 240_000 }, async () => {
  const srv = await startMlflowServer();
  try {
    const out = tmpDir('spark-hung-');
    const spec = trackedSpec(out, 'h', srv.url, { steps: 12, checkpointEvery: 4, closeTimeout: 2 });
    const l = await loadExperiment(spec);
    // frozen once the run exists and its params are stored
    srv.afterAnswer('/runs/log-batch', () => srv.hang());
    let lastStep = 0;
    const res = await runExperiment({ config: l.config, specPath: l.specPath, resolvedYaml: l.resolvedYaml, subscribers: [{ onEvent: (e: RunEvent) => void (e.type === 'step' && (lastStep = Date.now())) }] });
    const tail = Date.now() - lastStep;
    assert.equal(res.status, 'FINISHED');
    assert.ok(srv.hungRequests > 0, 'the server was hung');
    assert.ok(tail < 2000 + 2500, `finished ${tail} ms after the last step (close_timeout 2 s)`);
    assert.match(res.trackingReminder ?? '', /npx spark sync --run /);
    assert.ok((res.trackingReminder ?? '').includes(res.runDir));

    // the server answers again: the journal replays everything, once
    srv.unhang();
    const store = new RestStore(srv.url, { env: {} });
    const r = await syncRunJournal(res.runDir, store);
    assert.equal(r.remaining, 0);
    assert.deepEqual(await lossSteps(store), range(1, 12));
    const run = await store.getRun(r.state.runId);
    assert.equal(run.info.status, 'FINISHED');
    // every config value, plus the batch split the run resolved (batch 2, accumulate 1: one micro-batch of 2)
    assert.deepEqual(run.data.params, { ...configParams(l.config), 'train.micro_batch': '2', 'train.accumulate_resolved': '1' });
    const again = await syncRunJournal(res.runDir, store);
    assert.equal(again.replayed, 0);
    assert.deepEqual(await lossSteps(store), range(1, 12));
  } finally {
    await srv.close();
  }
});

test('one flush in flight: a hung server sees one log-batch for 100 flush requests; the breaker keeps the rest offline; close is bounded', async () => {
  const srv = await startMlflowServer();
  try {
    const runDir = tmpDir('spark-one-flight-');
    const t = await createRunTracker({ config: trackedConfig(srv.url, { experiment: 'flight', close_timeout: 1 }), runDir, specPath: null, resolvedYaml: '', resume: false, flushEvery: 1 });
    await (t as unknown as { flushNow(): Promise<void> }).flushNow();
    srv.hang();
    const T0 = Date.now();
    for (let s = 1; s <= 100; s++) {
      t.onEvent({ type: 'step', time: T0 + s, step: s, epoch: 1, epochStep: s, loss: 1 / s, lr: 0.1, wd: 0.05, gradNorm: 1, imgPerSec: 10, etaSec: 0 });
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(srv.hungRequests, 1, 'one request in flight, the other flushes folded into the pump');
    t.onEvent({ type: 'run-end', time: T0 + 200, status: 'FINISHED', step: 100, epoch: 1, finalLoss: 0.01 });
    const c0 = Date.now();
    await t.close!();
    assert.ok(Date.now() - c0 < 1000 + 700, `close took ${Date.now() - c0} ms (close_timeout 1 s)`);
    assert.match(t.pendingReminder ?? '', /npx spark sync --run /);
    // the breaker is open: a call of any breaker store of that URI fails at once, sending nothing
    const before = srv.requests.length;
    const q0 = Date.now();
    await assert.rejects(() => openStore(srv.url, TRACKER_REST_OPTIONS).getRun(t.runId), /not answering/);
    assert.ok(Date.now() - q0 < 200);
    assert.ok(srv.requests.slice(before).every((r) => r.path.endsWith('/experiments/get-by-name')), 'at most a probe went out');

    srv.unhang();
    const store = new RestStore(srv.url, { env: {} });
    await syncRunJournal(runDir, store);
    assert.deepEqual((await store.getMetricHistory(t.runId, 'loss')).map((m) => m.step), range(1, 100));
    assert.equal((await store.getRun(t.runId)).info.status, 'FINISHED');
  } finally {
    await srv.close();
  }
});

test('spark run against a server that is down prints, once, the line that sends what is left: npx spark sync --run <dir>', { timeout: 120_000 }, async () => {
  const srv = await startMlflowServer();
  await srv.stop();
  try {
    const out = tmpDir('spark-reminder-');
    const spec = trackedSpec(out, 'r', srv.url, { steps: 3, checkpointEvery: 0, closeTimeout: 1 });
    const r = await spawnSpark('run', [spec]).done;
    assert.equal(r.code, 0, r.stderr);
    const lines = (r.stdout + r.stderr).split('\n').filter((l) => l.startsWith('MLflow: ') && l.includes('npx spark sync --run '));
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.ok(lines[0]!.endsWith(`npx spark sync --run ${onlyRunDir(out, 'r')}`), lines[0]);
  } finally {
    await srv.close();
  }
});

function sweepSpec(srv: MlflowTestServer, fault: string): { config: ReturnType<typeof resolveConfig>; specPath: string; raw: Record<string, unknown> } {
  const dir = tmpDir(`spark-sweep-${fault}-`);
  const raw = {
    name: 'sw',
    model: { encoder: { family: 'convnext', depths: [1, 1, 1, 1], dims: [8, 16, 32, 64] }, decoder: { type: 'light', width: 32 } },
    data: { source: 'synthetic', input_size: 64, synthetic_size: 8, workers: 0, prefetch: 1 },
    train: { steps: 3, batch_size: 2, warmup_steps: 1 },
    runtime: { backend: process.env['SPARK_BACKEND'] ?? 'auto', seed: 1, threads: 1 },
    output: { dir: path.join(dir, 'runs'), checkpoint_every: 0, log_every: 1, reconstruct_every: 0 },
    tracking: { uri: srv.url, experiment: `sweep-${fault}`, close_timeout: 1 },
    sweep: { grid: { 'model.mask_ratio': [0.4, 0.5, 0.6] } },
  };
  const specPath = path.join(dir, 'spec.yaml');
  return { config: resolveConfig(raw, { file: specPath }), specPath, raw };
}

async function timedSweep(srv: MlflowTestServer, fault: 'down' | 'hung'): Promise<number> {
  const loaded = sweepSpec(srv, fault);
  // the parent run is created (its params are the sweep's first log-batch), then the server goes away
  srv.afterAnswer('/runs/log-batch', () => (fault === 'hung' ? srv.hang() : void srv.stop()));
  const t0 = Date.now();
  const r = await runSweep({ loaded, plain: true }, { console: null, log: () => {} });
  const ms = Date.now() - t0;
  const s = await readSweep(r.sweepDir);
  assert.deepEqual(s.trials.map((t) => t.status), ['FINISHED', 'FINISHED', 'FINISHED'], fault);
  return ms;
}

test('a 3-trial sweep against a server that never answers takes no longer than with the server down', { timeout: 300_000 }, async (t) => {
  const down = await startMlflowServer();
  const hung = await startMlflowServer();
  try {
    const tDown = await timedSweep(down, 'down');
    const tHung = await timedSweep(hung, 'hung');
    t.diagnostic(`sweep: server down ${tDown} ms, server hung ${tHung} ms`);
    assert.ok(hung.hungRequests > 0, 'the server was hung');
    // the hung server costs at most one close_timeout (1 s) at the first trial's start, not a timeout per call
    // (slack for a loaded machine; a single unbounded request timeout would add 20 s, the old client 60 s per call)
    assert.ok(tHung <= tDown * 1.3 + 2000, `hung ${tHung} ms vs down ${tDown} ms`);
  } finally {
    await down.close();
    await hung.close();
  }
});

test('a server that never answers from the start stops a sweep at its parent run within the first-answer timeout, like one that is down', { timeout: 60_000 }, async (t) => {
  const times: Record<string, number> = {};
  for (const fault of ['down', 'hung'] as const) {
    const srv = await startMlflowServer();
    try {
      if (fault === 'down') await srv.stop();
      else srv.hang();
      const loaded = sweepSpec(srv, `start-${fault}`);
      const t0 = Date.now();
      await assert.rejects(() => runSweep({ loaded, plain: true }, { console: null, log: () => {} }), /cannot create the sweep's parent MLflow run: the tracking server .* is unreachable/);
      times[fault] = Date.now() - t0;
    } finally {
      await srv.close();
    }
  }
  t.diagnostic(`sweep start: server down ${times['down']} ms, server hung ${times['hung']} ms`);
  // one request of at most 5 s (RestOptions.firstAnswerTimeout) instead of 3 × 20 s
  assert.ok(times['hung']! < 5000 + 1500, `hung: ${times['hung']} ms`);
});
