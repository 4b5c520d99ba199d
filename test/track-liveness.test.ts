/**
 * Liveness of run folders: alive.json and run.json's status while a run runs and when it ends; a RUNNING run whose
 * process is gone (same host: dead pid or a reused one; another host: a stale heartbeat) is marked FAILED with the
 * reason in run.json and, through its journal, in MLflow; `spark compare` does it for the runs it shows.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLivenessSubscriber, goneReason, reconcileRunFolder, runIsAlive, ALIVE_FILE, type AliveRecord } from '../src/track/liveness.js';
import { createRunTracker, JOURNAL_FILE, readJournal } from '../src/track/index.js';
import { FileStore } from '../src/track/filestore.js';
import { collectRuns } from '../src/track/compare.js';
import { trackedConfig } from './helpers/mlflow-server.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'spark-liveness-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function runDir(): string {
  const d = path.join(tmp, `run-${n++}`);
  mkdirSync(d, { recursive: true });
  writeFileSync(path.join(d, 'run.json'), JSON.stringify({ runId: path.basename(d), name: 'x', specPath: null, createdAt: new Date().toISOString() }));
  return d;
}
const info = (d: string) => JSON.parse(readFileSync(path.join(d, 'run.json'), 'utf8')) as Record<string, unknown>;
const T = Date.now();

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('alive.json and run.json status RUNNING while the run runs; the final status and no alive.json at its end', async () => {
  const d = runDir();
  const sub = createLivenessSubscriber(d, { heartbeatMs: 20 });
  sub.onEvent({ type: 'run-start', time: T, runId: 'r', runDir: d, name: 'x', config: trackedConfig('x'), encoder: 'e', backend: 'cpu', totalSteps: 2, stepsPerEpoch: 2, totalEpochs: 1, startStep: 0, resumed: false, specPath: null });
  const a = JSON.parse(readFileSync(path.join(d, ALIVE_FILE), 'utf8')) as AliveRecord;
  assert.equal(a.pid, process.pid);
  assert.equal(a.host, os.hostname());
  assert.equal(info(d)['status'], 'RUNNING');
  await new Promise((r) => setTimeout(r, 80));
  const b = JSON.parse(readFileSync(path.join(d, ALIVE_FILE), 'utf8')) as AliveRecord;
  assert.ok(Date.parse(b.heartbeat) > Date.parse(a.heartbeat), 'the heartbeat moves');
  assert.equal(runIsAlive(d), null, 'our own run is not "another live run"');
  assert.equal(await reconcileRunFolder(d), null, 'a live run is left alone');
  sub.onEvent({ type: 'run-end', time: T + 5, status: 'KILLED', step: 1, epoch: 0, finalLoss: 1 });
  await sub.close!();
  assert.equal(info(d)['status'], 'KILLED');
  assert.equal(info(d)['endedAt'], new Date(T + 5).toISOString());
  assert.ok(!existsSync(path.join(d, ALIVE_FILE)));
});

test('gone: a dead pid or a reused one on this host; on another host a heartbeat older than 15 minutes', () => {
  const now = new Date().toISOString();
  const self: AliveRecord = { pid: process.pid, host: os.hostname(), procStart: null, startedAt: now, heartbeat: now };
  assert.equal(goneReason(self), null);
  assert.match(goneReason({ ...self, pid: deadPid() })!, /ended without finishing the run.*killed by the system/);
  if (existsSync('/proc/self/stat')) assert.match(goneReason({ ...self, procStart: '1' })!, /ended without finishing/, 'same pid, other start time');
  const remote = { ...self, host: 'some-other-node' };
  assert.equal(goneReason(remote), null);
  assert.match(goneReason({ ...remote, heartbeat: new Date(Date.now() - 16 * 60_000).toISOString() })!, /no heartbeat from its process \(pid \d+ on some-other-node\) for more than 15 minutes/);
});

test('a RUNNING run whose process is gone: FAILED with the reason in run.json and, through the journal, in MLflow (compare does it)', async () => {
  const mlruns = path.join(tmp, 'mlruns');
  const d = runDir();
  const t = await createRunTracker({ config: trackedConfig(mlruns, { experiment: 'live' }), runDir: d, specPath: null, resolvedYaml: '', resume: false });
  t.onEvent({ type: 'run-start', time: T, runId: 'r', runDir: d, name: 'x', config: trackedConfig(mlruns), encoder: 'e', backend: 'cpu', totalSteps: 2, stepsPerEpoch: 2, totalEpochs: 1, startStep: 0, resumed: false, specPath: null });
  await t.close!(); // the process "dies": no run-end
  const beat = new Date(T - 1000).toISOString();
  writeFileSync(path.join(d, 'run.json'), JSON.stringify({ ...info(d), status: 'RUNNING' }));
  writeFileSync(path.join(d, ALIVE_FILE), JSON.stringify({ pid: deadPid(), host: os.hostname(), procStart: null, startedAt: beat, heartbeat: beat }));
  mkdirSync(path.join(d, 'checkpoint'));
  writeFileSync(path.join(d, 'checkpoint', 'state.json'), JSON.stringify({ step: 6 }));
  const store = new FileStore(mlruns);
  assert.equal((await store.getRun(t.runId)).info.status, 'RUNNING');

  const res = await collectRuns(store, { experiment: 'live' });
  const row = res.rows.find((r) => r.run.info.runId === t.runId)!;
  assert.equal(row.run.info.status, 'FAILED');
  const run = await store.getRun(t.runId);
  assert.equal(run.info.status, 'FAILED');
  assert.equal(run.info.endTime, Date.parse(beat));
  assert.match(run.data.tags['spark.status_reason']!, /killed by the system.*last checkpoint at step 6/);
  assert.equal(info(d)['status'], 'FAILED');
  assert.match(String(info(d)['statusReason']), /pid \d+ on .*last heartbeat/);
  assert.ok(!existsSync(path.join(d, ALIVE_FILE)));
  assert.equal((await readJournal(path.join(d, JOURNAL_FILE))).pending.length, 0, 'replayed to the store');
  assert.equal(await reconcileRunFolder(d), null, 'once');
});

test('a run still alive elsewhere on this host is not touched, and resume refuses it', async (tc) => {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  tc.after(() => child.kill('SIGKILL'));
  const d = runDir();
  const now = new Date().toISOString();
  writeFileSync(path.join(d, 'run.json'), JSON.stringify({ ...info(d), status: 'RUNNING' }));
  writeFileSync(path.join(d, ALIVE_FILE), JSON.stringify({ pid: child.pid, host: os.hostname(), procStart: null, startedAt: now, heartbeat: now }));
  assert.equal(runIsAlive(d)?.pid, child.pid);
  assert.equal(await reconcileRunFolder(d), null);
  assert.equal(info(d)['status'], 'RUNNING');
  writeFileSync(path.join(d, 'config.yaml'), 'name: x\n');
  const { runExperiment } = await import('../src/train/run.js');
  await assert.rejects(() => runExperiment({ resumeDir: d, subscribers: [] }), new RegExp(`still running \\(pid ${child.pid} on `));
});
