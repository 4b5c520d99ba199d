import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, existsSync, readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveConfig } from '../src/spec/index.js';
import { runSweep, type TrialRunRequest, type TrialRunResult, type LoadedSpec } from '../src/sweep/runner.js';
import { readSweep, withSweepLock, updateSweep } from '../src/sweep/state.js';
import type { SweepTracker } from '../src/sweep/tracker.js';
import { SpecError } from '../src/util/errors.js';
import { sweepFromRunArgs } from '../src/sweep/cli.js';

function tmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'spark-sweep-'));
}

function loadedFor(dir: string, sweep: object, extra: Record<string, unknown> = {}): LoadedSpec {
  const raw = {
    name: 'rs',
    data: { source: 'synthetic', input_size: 64 },
    train: { steps: 2, batch_size: 2 },
    output: { dir: path.join(dir, 'runs') },
    tracking: { uri: path.join(dir, 'mlruns'), experiment: 'exp' },
    ...extra,
    sweep,
  };
  const specPath = path.join(dir, 'spec.yaml');
  return { config: resolveConfig(raw, { file: specPath }), specPath, raw };
}

interface FakeTracker extends SweepTracker {
  parents: Array<{ runName: string; params: Record<string, string>; tags: Record<string, string> }>;
  finished: Array<{ runId: string; status: string; params: Record<string, string>; metrics: Record<string, number>; tags: Record<string, string>; step?: number; artifacts: string[] }>;
  reopened: string[];
  updates: Array<{ runId: string; metrics: Record<string, number>; tags: Record<string, string>; step: number }>;
}

function fakeTracker(): FakeTracker {
  const t: FakeTracker = {
    parents: [],
    finished: [],
    reopened: [],
    updates: [],
    async createParent(o) {
      t.parents.push(o);
      return `parent-${t.parents.length}`;
    },
    async reopenParent(id) {
      t.reopened.push(id);
    },
    async finishParent(runId, o) {
      t.finished.push({ runId, status: o.status, params: o.params, metrics: o.metrics, tags: o.tags, step: o.step, artifacts: o.artifacts });
      return [];
    },
    async updateParent(runId, o) {
      t.updates.push({ runId, ...o });
    },
    async getRun() {
      return null;
    },
    async listChildren() {
      return [];
    },
  };
  return t;
}

/** A fake trainer: records its calls; loss = mask_ratio (so the best trial is the lowest ratio). */
function fakeRunner(behaviour: (req: TrialRunRequest) => Partial<TrialRunResult> | 'throw' = () => ({})) {
  const calls: TrialRunRequest[] = [];
  const runner = async (req: TrialRunRequest): Promise<TrialRunResult> => {
    calls.push(req);
    const spec = readFileSync(req.specFile, 'utf8');
    const mr = Number(/mask_ratio: ([\d.]+)/.exec(spec)![1]);
    const b = behaviour(req);
    if (b === 'throw') throw new Error(`boom in trial ${req.trial.index}`);
    return { status: 'FINISHED', step: 2, finalLoss: mr, mlflowRunId: `child-${req.trial.index}`, ...b };
  };
  return { runner, calls };
}

const silent = () => {};

test('trials run one after another; sweep.json, summary and the parent run record the outcome', async () => {
  const dir = tmp();
  const tracker = fakeTracker();
  const { runner, calls } = fakeRunner();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.75, 0.4, 0.6] } });
  const r = await runSweep({ loaded }, { runTrial: runner, tracker, console: null, log: silent });
  assert.equal(r.exitCode, 0);
  assert.equal(r.status, 'FINISHED');
  assert.deepEqual(calls.map((c) => c.trial.index), [0, 1, 2]);
  assert.ok(calls.every((c) => c.parentRunId === 'parent-1' && c.resume === false));
  assert.equal(calls[1]!.tags['sweep.trial'], '1');
  assert.ok(r.sweepDir.startsWith(path.join(dir, 'runs', 'rs', 'sweep-')));
  const s = await readSweep(r.sweepDir);
  assert.deepEqual(s.trials.map((t) => t.status), ['FINISHED', 'FINISHED', 'FINISHED']);
  assert.deepEqual(s.trials.map((t) => t.mlflowRunId), ['child-0', 'child-1', 'child-2']);
  assert.deepEqual(s.best, { loss: { trial: 1, name: 'mask_ratio=0.4', value: 0.4 } });
  // trial spec files are complete specs carrying the sweep's absolute tracking URI
  const spec1 = readFileSync(path.join(r.sweepDir, s.trials[1]!.specFile), 'utf8');
  assert.match(spec1, /mask_ratio: 0.4/);
  assert.ok(spec1.includes(`uri: ${path.join(dir, 'mlruns')}`));
  // parent: spark.sweep tag, base-config params without the swept key (logged as the sweep definition instead)
  assert.equal(tracker.parents.length, 1);
  const pp = tracker.parents[0]!.params;
  assert.equal(tracker.parents[0]!.tags['spark.sweep'], '1');
  assert.equal(pp['model.mask_ratio'], undefined, 'the swept key is not a single value on the parent');
  assert.equal(pp['sweep.model.mask_ratio'], '[0.75, 0.4, 0.6]');
  assert.equal(pp['model.encoder'], 'resnet50'); // the base config's other values stay
  assert.equal(pp['sweep.trials'], '3');
  // the best trial so far after every trial, as metrics and tags (never params: MLflow params are immutable)
  assert.deepEqual(
    tracker.updates.map((u) => [u.runId, u.step, u.tags['best.loss.trial'], u.metrics['best.loss']]),
    [
      ['parent-1', 1, '0', 0.75],
      ['parent-1', 2, '1', 0.4],
      ['parent-1', 3, '1', 0.4],
    ],
  );
  // at the end: best trial + summary artifacts
  assert.equal(tracker.finished.length, 1);
  const fin = tracker.finished[0]!;
  assert.equal(fin.status, 'FINISHED');
  assert.deepEqual(fin.params, {});
  assert.equal(fin.tags['best.loss.trial'], '1');
  assert.equal(fin.tags['best.loss.run_id'], 'child-1');
  assert.equal(fin.tags['best.loss.name'], 'mask_ratio=0.4');
  assert.equal(fin.metrics['best.loss'], 0.4);
  assert.equal(fin.step, 3);
  assert.deepEqual(fin.artifacts.map((a) => path.basename(a)), ['summary.md', 'summary.csv']);
  const csv = readFileSync(path.join(r.sweepDir, 'summary.csv'), 'utf8').trim().split('\n');
  assert.equal(csv[0], 'trial,name,model.mask_ratio,status,final loss,steps,run dir');
  assert.equal(csv[2], '1,mask_ratio=0.4,0.4,FINISHED,0.4,2,trials/001/run');
  const md = readFileSync(path.join(r.sweepDir, 'summary.md'), 'utf8');
  // summary.md is for people: trials counted from 1
  assert.match(md, /Best loss \(min\): trial 2\/3 \(mask_ratio=0.4\) = 0.4/);
  assert.match(md, /\| # \| name \|/);
  assert.match(md, /\| 3 \| mask_ratio=0.6 \| 0.6 \| FINISHED \| 0.6 \| 2 \| trials\/002\/run \|/);
});

test('an invalid trial fails the sweep before anything runs or is written', async () => {
  const dir = tmp();
  const tracker = fakeTracker();
  const { runner, calls } = fakeRunner();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6, 0.75, 1.2] } });
  await assert.rejects(
    runSweep({ loaded }, { runTrial: runner, tracker, console: null, log: silent }),
    (e: unknown) => e instanceof SpecError && e.format() === 'trial 4/4 (mask_ratio=1.2): --set model.mask_ratio=1.2: must be < 1',
  );
  assert.equal(calls.length, 0);
  assert.equal(tracker.parents.length, 0);
  assert.equal(existsSync(path.join(dir, 'runs')), false);
});

test('a failing trial is recorded FAILED and the sweep goes on; --fail-fast stops', async () => {
  const dir = tmp();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.5, 0.6, 0.7] } });
  const failOn1 = (req: TrialRunRequest) => (req.trial.index === 1 ? ('throw' as const) : req.trial.index === 2 ? { status: 'FAILED' as const, finalLoss: null, error: 'nan loss' } : {});
  const a = fakeRunner(failOn1);
  const tracker = fakeTracker();
  const r = await runSweep({ loaded }, { runTrial: a.runner, tracker, console: null, log: silent });
  assert.deepEqual(a.calls.map((c) => c.trial.index), [0, 1, 2, 3]);
  assert.equal(r.exitCode, 1);
  assert.equal(r.status, 'FAILED');
  const s = await readSweep(r.sweepDir);
  assert.deepEqual(s.trials.map((t) => t.status), ['FINISHED', 'FAILED', 'FAILED', 'FINISHED']);
  assert.equal(s.trials[1]!.error, 'boom in trial 1');
  assert.equal(s.trials[2]!.error, 'nan loss');
  assert.equal(tracker.finished[0]!.status, 'FAILED');
  assert.equal(tracker.finished[0]!.tags['best.loss.trial'], '0');
  assert.equal(tracker.finished[0]!.metrics['sweep.failed'], 2);

  const b = fakeRunner(failOn1);
  const r2 = await runSweep({ loaded, failFast: true }, { runTrial: b.runner, tracker: fakeTracker(), console: null, log: silent });
  assert.deepEqual(b.calls.map((c) => c.trial.index), [0, 1]);
  const s2 = await readSweep(r2.sweepDir);
  assert.deepEqual(s2.trials.map((t) => t.status), ['FINISHED', 'FAILED', 'PENDING', 'PENDING']);
  assert.equal(r2.exitCode, 1);
});

test('resume skips FINISHED trials, resumes the interrupted one from its checkpoint and keeps the parent run', async () => {
  const dir = tmp();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.5, 0.6] } });
  const tracker = fakeTracker();
  // trial 1 is interrupted after writing a checkpoint
  const first = fakeRunner((req) => {
    if (req.trial.index !== 1) return {};
    mkdirSync(path.join(req.runDir, 'checkpoint'), { recursive: true });
    writeFileSync(path.join(req.runDir, 'checkpoint', 'model.safetensors'), 'x');
    return { status: 'KILLED', step: 1, finalLoss: null, mlflowRunId: 'child-1' };
  });
  const r1 = await runSweep({ loaded }, { runTrial: first.runner, tracker, console: null, log: silent });
  assert.equal(r1.exitCode, 130);
  assert.equal(r1.status, 'KILLED');
  assert.deepEqual(first.calls.map((c) => c.trial.index), [0, 1]);
  assert.equal(tracker.finished[0]!.status, 'KILLED');

  const second = fakeRunner();
  const r2 = await runSweep({ resumeDir: r1.sweepDir }, { runTrial: second.runner, tracker, console: null, log: silent });
  assert.equal(r2.sweepDir, r1.sweepDir);
  assert.deepEqual(second.calls.map((c) => [c.trial.index, c.resume]), [
    [1, true],
    [2, false],
  ]);
  assert.ok(second.calls.every((c) => c.parentRunId === 'parent-1'));
  assert.equal(tracker.parents.length, 1, 'no second parent run');
  assert.deepEqual(tracker.reopened, ['parent-1']);
  const s = await readSweep(r2.sweepDir);
  assert.deepEqual(s.trials.map((t) => t.status), ['FINISHED', 'FINISHED', 'FINISHED']);
  assert.deepEqual(s.trials.map((t) => t.attempts), [1, 2, 1]);
  assert.equal(r2.exitCode, 0);
  assert.equal(tracker.finished[1]!.status, 'FINISHED');

  // `spark run --resume <sweep-dir>` delegates here; everything finished → nothing is run again
  const third = fakeRunner();
  const code = await sweepFromRunArgs({ resume: r1.sweepDir }, { runTrial: third.runner, tracker, console: null, log: silent });
  assert.equal(code, 0);
  assert.equal(third.calls.length, 0);
});

test('parallel: several trials at once through the same bookkeeping', async () => {
  const dir = tmp();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.5, 0.6, 0.7] } });
  let running = 0;
  let peak = 0;
  const calls: number[] = [];
  const runner = async (req: TrialRunRequest): Promise<TrialRunResult> => {
    calls.push(req.trial.index);
    running++;
    peak = Math.max(peak, running);
    // wait (up to 5 s) for a second trial to start: deterministic on a loaded machine, still 1 if trials ran serially
    for (let waited = 0; peak < 2 && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    running--;
    return { status: 'FINISHED', step: 2, finalLoss: req.trial.index, mlflowRunId: null };
  };
  const r = await runSweep({ loaded, parallel: 2 }, { runTrial: runner, tracker: null, console: null, log: silent });
  assert.equal(peak, 2);
  assert.deepEqual(calls.sort(), [0, 1, 2, 3]);
  const s = await readSweep(r.sweepDir);
  assert.ok(s.trials.every((t) => t.status === 'FINISHED'));
  assert.equal(s.best['loss']!.trial, 0);
});

test("a trial's unsent tracking calls are reported once, with the trial's label and the sync command", async () => {
  const dir = tmp();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.5] } });
  const reminder = 'MLflow: 3 tracking call(s) could not be sent and wait in x; send them with: npx spark sync --run x';
  const lines: string[] = [];
  const { runner } = fakeRunner((req) => (req.trial.index === 1 ? { trackingReminder: reminder } : {}));
  await runSweep({ loaded }, { runTrial: runner, tracker: null, console: null, log: (l) => lines.push(l) });
  assert.deepEqual(lines.filter((l) => l.includes('could not be sent')), [`sweep: trial 2/2: ${reminder}`]);
});

test('sweep.json lock serialises concurrent read-modify-write', async () => {
  const dir = tmp();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.5] } });
  const r = await runSweep({ loaded }, { runTrial: fakeRunner().runner, tracker: null, console: null, log: silent });
  await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      updateSweep(r.sweepDir, async (s) => {
        await new Promise((res) => setTimeout(res, 1));
        s.trials[0]!.attempts += 1;
        s.cliSweeps.push(String(i));
      }),
    ),
  );
  const s = await readSweep(r.sweepDir);
  assert.equal(s.trials[0]!.attempts, 21);
  assert.equal(s.cliSweeps.length, 20);
  assert.equal(await withSweepLock(r.sweepDir, async () => 7), 7);
});

test('--parallel child processes: events are read back from stdout; a child that dies unrecorded is FAILED', async () => {
  const { childProcessRunner, EVENT_PREFIX } = await import('../src/sweep/runner.js');
  const dir = tmp();
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6] } });
  // a stand-in for `spark sweep trial <dir> <i>`: trial 0 emits events and exits 0 without touching sweep.json,
  // trial 1 writes to stderr and exits 3
  const fake = path.join(dir, 'fake-spark.sh');
  writeFileSync(
    fake,
    [
      'if [ "$4" = 0 ]; then',
      `  printf '%s\\n' '${EVENT_PREFIX}{"type":"log","time":1,"level":"info","message":"hello"}' 'plain line'`,
      `  printf '%s\\n' '${EVENT_PREFIX}{"type":"run-end","time":2,"status":"FINISHED","step":2,"epoch":1,"finalLoss":0.125}'`,
      '  exit 0',
      'fi',
      'echo "trial $4 exploded" >&2',
      'exit 3',
      '',
    ].join('\n'),
  );
  const events: Array<[number, string]> = [];
  const board = {
    trialSubscriber: (i: number) => ({ onEvent: (e: { type: string }) => void events.push([i, e.type]) }),
    setStatus: () => {},
    close: async () => {},
  };
  const prev = process.env['SPARK_CLI'];
  process.env['SPARK_CLI'] = JSON.stringify(['/bin/bash', fake]);
  try {
    const r = await runSweep({ loaded, parallel: 2 }, { runTrial: childProcessRunner(), tracker: null, console: board, log: silent });
    const s = await readSweep(r.sweepDir);
    assert.deepEqual(s.trials.map((t) => t.status), ['FINISHED', 'FAILED']);
    assert.equal(s.trials[0]!.finalLoss, 0.125);
    assert.equal(s.trials[1]!.error, 'trial process exited with code 3: trial 1 exploded');
    assert.deepEqual(events.filter(([i]) => i === 0).map(([, t]) => t), ['log', 'run-end']);
    assert.match(readFileSync(path.join(r.sweepDir, 'trials', '000', 'output.log'), 'utf8'), /^plain line$/m);
    assert.equal(r.exitCode, 1);
  } finally {
    if (prev === undefined) delete process.env['SPARK_CLI'];
    else process.env['SPARK_CLI'] = prev;
  }
});

test('a tracking store that refuses the parent run fails the sweep before any trial, leaving no sweep folder', async () => {
  const dir = tmp();
  const { runner, calls } = fakeRunner();
  const tracker = { ...fakeTracker(), createParent: async () => Promise.reject(new Error('store is read-only')) };
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6] } });
  await assert.rejects(runSweep({ loaded }, { runTrial: runner, tracker, console: null, log: silent }), /store is read-only/);
  assert.equal(calls.length, 0);
  const { readdirSync } = await import('node:fs');
  assert.deepEqual(readdirSync(path.join(dir, 'runs', 'rs')), []);
});
