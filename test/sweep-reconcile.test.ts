/**
 * Slurm sweeps whose records Slurm contradicts (reconciled by `spark sweep status`), resubmission of the unfinished
 * trials (`spark sweep launch --resume`), held submission (a failed sbatch leaves nothing behind), specs without a
 * sweep, and the sweep definition on the parent run. Slurm is stood in for by scripts on PATH (sbatch, squeue,
 * scontrol, scancel, sacct) that log their calls and answer from files; the real Slurm test is in sweep-slurm.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync, readdirSync, rmSync, chmodSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { resolveConfig } from '../src/spec/index.js';
import { launchSlurm, resumeSlurm, compressTaskRange, buildSbatchScript } from '../src/sweep/slurm.js';
import { judgeLocalTrials, judgeTrials } from '../src/sweep/reconcile.js';
import { sparkCommand, type LoadedSpec } from '../src/sweep/runner.js';
import { readSweep, updateSweep } from '../src/sweep/state.js';
import { sweepStatus, formatStatus } from '../src/sweep/status.js';
import { storeTracker } from '../src/sweep/tracker.js';
import { parentParams } from '../src/sweep/definition.js';
import { pythonRepr } from '../src/track/keys.js';
import { openStore } from '../src/track/index.js';
import { UsageError, SparkError } from '../src/util/errors.js';
import type { SweepFile } from '../src/sweep/types.js';

function tmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'spark-reconcile-'));
}

/** Fake Slurm commands in `<dir>/bin`, logging to `<dir>/log`; behaviour from files in `<dir>`. */
function fakeSlurm(dir: string): { env: NodeJS.ProcessEnv; calls: () => string[]; set: (file: string, text: string | null) => void } {
  const bin = path.join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  const head = `#!/bin/bash\nD=${JSON.stringify(dir)}\necho "$(basename "$0") $*" >> "$D/log"\n`;
  const scripts: Record<string, string> = {
    sbatch:
      'if [ -f "$D/sbatch.fail" ]; then cat "$D/sbatch.fail" >&2; exit 1; fi\n' +
      'n=$(cat "$D/next-id" 2>/dev/null || echo 100); echo $((n+1)) > "$D/next-id"\n' +
      'for a in "$@"; do last="$a"; done; cp "$last" "$D/script-$n"\necho "$n"\n',
    // squeue.fail: the controller is unreachable (squeue and scontrol fail alike)
    squeue: 'if [ -f "$D/squeue.fail" ]; then cat "$D/squeue.fail" >&2; exit 1; fi\nif [ -f "$D/squeue.json" ]; then cat "$D/squeue.json"; else echo \'{"jobs": []}\'; fi\n',
    scontrol:
      'case "$1" in\n  release) if [ -f "$D/release.fail" ]; then echo "release failed" >&2; exit 1; fi; exit 0;;\n' +
      '  *) if [ -f "$D/squeue.fail" ]; then cat "$D/squeue.fail" >&2; exit 1; fi\n' +
      '     echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;;\nesac\n',
    scancel: 'exit 0\n',
    sacct: 'echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1\n',
  };
  for (const [name, body] of Object.entries(scripts)) {
    writeFileSync(path.join(bin, name), head + body);
    chmodSync(path.join(bin, name), 0o755);
  }
  const conf = path.join(dir, 'slurm.conf');
  writeFileSync(conf, 'ClusterName=Fake\nSlurmctldHost=localhost\n');
  return {
    env: { ...process.env, PATH: `${bin}:${process.env['PATH']}`, SLURM_CONF: conf },
    calls: () => (existsSync(path.join(dir, 'log')) ? readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n') : []),
    set: (file, text) => {
      const f = path.join(dir, file);
      if (text === null) rmSync(f, { force: true });
      else writeFileSync(f, text);
    },
  };
}

/** squeue --json output for array job `jobId`: task index → [state, raw exit status]. */
function squeueJson(jobId: number, tasks: Record<number, [string, number]>): string {
  return JSON.stringify({
    jobs: Object.entries(tasks).map(([i, [state, exit]]) => ({ job_id: jobId + 1 + Number(i), array_job_id: jobId, array_task_id: Number(i), array_task_string: '', job_state: state, exit_code: exit })),
  });
}

function loadedFor(dir: string, sweep: object | undefined, name = 'rec'): LoadedSpec {
  const raw: Record<string, unknown> = {
    name,
    model: { encoder: 'resnet_mini', decoder: { type: 'light', width: 32 } },
    data: { source: 'synthetic', input_size: 64, synthetic_size: 8, workers: 0 },
    train: { steps: 2, batch_size: 2, warmup_steps: 1 },
    runtime: { backend: 'cpu', threads: 1 },
    output: { dir: path.join(dir, 'runs'), checkpoint_every: 0, log_every: 1, reconstruct_every: 0 },
    tracking: { uri: path.join(dir, 'mlruns'), experiment: 'rec' },
  };
  if (sweep) raw['sweep'] = sweep;
  const specPath = path.join(dir, 'spec.yaml');
  return { config: resolveConfig(raw, { file: specPath }), specPath, raw };
}

test('Python repr of the sweep definition, as mlflow.log_params writes a list; swept keys leave the parent', () => {
  assert.equal(pythonRepr([0.4, 0.6, 0.75]), '[0.4, 0.6, 0.75]');
  assert.equal(pythonRepr([1, 2.5, 1e-5, 0.00015, 1e16, 1.5e-7, -0.0001]), '[1, 2.5, 1e-05, 0.00015, 1e+16, 1.5e-07, -0.0001]');
  assert.equal(pythonRepr(['resnet_mini', "it's", null, true, false]), `['resnet_mini', "it's", None, True, False]`);
  assert.equal(pythonRepr([{ name: 'resnet_mini', width: 2 }, [0.67, 1]]), "[{'name': 'resnet_mini', 'width': 2}, [0.67, 1]]");
  const p = parentParams({ 'model.mask_ratio': '0.6', 'model.encoder.name': 'x', 'model.encoder.width': '2', 'train.steps': '2', sweep: 'None' }, [
    { 'model.mask_ratio': 0.4, 'model.encoder': { name: 'a' } },
    { 'model.mask_ratio': 0.6, 'model.encoder': { name: 'a' } },
  ]);
  assert.deepEqual(p, { 'train.steps': '2', 'sweep.model.mask_ratio': '[0.4, 0.6]', 'sweep.model.encoder': "[{'name': 'a'}]", 'sweep.trials': '2' });
  assert.equal(compressTaskRange([5, 0, 1, 2, 7, 8]), '0-2,5,7-8');
});

test('judging trials against Slurm: failed, cancelled, gone while running or pending; silence changes nothing', () => {
  const rec = (index: number, status: string) => ({ index, status }) as SweepFile['trials'][number];
  const sweep = {
    launcher: { type: 'slurm', jobId: '7', tasks: [0, 1, 2, 3, 4, 5] },
    trials: [rec(0, 'FINISHED'), rec(1, 'RUNNING'), rec(2, 'RUNNING'), rec(3, 'PENDING'), rec(4, 'RUNNING'), rec(5, 'PENDING')],
  } as unknown as SweepFile;
  const st = (state: string, exitCode: number | null = null) => ({ state, exitCode, source: 'squeue' as const });
  const tasks = new Map([
    [0, st('COMPLETED', 0)],
    [1, st('FAILED', 9)],
    [2, st('CANCELLED by 0')],
    [4, st('RUNNING')],
    [5, st('PENDING')],
  ]);
  const v = judgeTrials(sweep, { tasks, answered: true });
  assert.deepEqual(v.map((x) => [x.index, x.status]), [
    [1, 'FAILED'],
    [2, 'KILLED'],
    [3, 'KILLED'],
  ]);
  assert.match(v[0]!.reason, /Slurm task 7_1 ended FAILED \(exit 9\) without the trial recording its end/);
  assert.match(v[2]!.reason, /Slurm task 7_3 is gone before the trial started/);
  // Slurm did not answer: only what it positively said counts
  assert.deepEqual(judgeTrials(sweep, { tasks: new Map(), answered: false }), []);
  // trials not in the current job (finished under an earlier one) are not judged by it
  const resumed = { ...sweep, launcher: { ...sweep.launcher, tasks: [4, 5] } } as SweepFile;
  assert.deepEqual(judgeTrials(resumed, { tasks: new Map(), answered: true }).map((x) => x.index), [4, 5]);
});

test('judging a local sweep: a trial recorded RUNNING whose run process is gone is FAILED; live, unstarted and ended trials are left alone', () => {
  const dir = tmp();
  const now = new Date().toISOString();
  const runDir = (i: number, alive: object | null): string => {
    const d = path.join(dir, 'trials', String(i), 'run');
    mkdirSync(d, { recursive: true });
    writeFileSync(path.join(d, 'run.json'), JSON.stringify({ status: 'RUNNING' }));
    if (alive) writeFileSync(path.join(d, 'alive.json'), JSON.stringify(alive));
    return path.relative(dir, d);
  };
  // a pid that cannot exist (above pid_max) on this host, this process itself, and a folder without a liveness record
  const gone = { pid: 2 ** 22 + 7, host: os.hostname(), procStart: null, startedAt: now, heartbeat: now };
  const live = { pid: process.pid, host: os.hostname(), procStart: null, startedAt: now, heartbeat: now };
  const rec = (index: number, status: string, rd: string) => ({ index, status, runDir: rd }) as SweepFile['trials'][number];
  const sweep = {
    launcher: { type: 'local', parallel: 1 },
    trials: [rec(0, 'FINISHED', runDir(0, null)), rec(1, 'RUNNING', runDir(1, gone)), rec(2, 'RUNNING', runDir(2, live)), rec(3, 'RUNNING', runDir(3, null)), rec(4, 'RUNNING', 'trials/4/run'), rec(5, 'PENDING', '')],
  } as unknown as SweepFile;
  const v = judgeLocalTrials(sweep, dir);
  assert.deepEqual(v.map((x) => [x.index, x.status]), [
    [1, 'FAILED'],
    [3, 'FAILED'],
  ]);
  assert.match(v[0]!.reason, new RegExp(`pid ${gone.pid} on .* ended without finishing the run`));
  assert.match(v[1]!.reason, /no liveness record/);
  // a Slurm sweep is judged by Slurm, not here
  assert.deepEqual(judgeLocalTrials({ ...sweep, launcher: { type: 'slurm', jobId: '1' } } as unknown as SweepFile, dir), []);
  rmSync(dir, { recursive: true, force: true });
});

test('status reconciles a lost and a forgotten task (sweep.json, run.json, MLflow), closes the sweep; resume resubmits the rest', async () => {
  const dir = tmp();
  const slurm = fakeSlurm(path.join(dir, 'slurm'));
  const store = openStore(path.join(dir, 'mlruns'));
  const tracker = storeTracker(store);
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6, 0.75] } });
  const r = await launchSlurm({ loaded, options: { time: '00:10:00' }, submit: true, tracker, command: ['spark'], env: slurm.env });
  assert.equal(r.jobId, '100');
  assert.match(slurm.calls()[0]!, /^sbatch --parsable --chdir=.* --hold .*sweep\.sbatch$/);
  assert.equal(slurm.calls()[1], 'scontrol release 100', 'released once recorded');
  let s = await readSweep(r.dir);
  assert.ok(s.launcher.type === 'slurm');
  assert.deepEqual(s.launcher.type === 'slurm' && s.launcher.cluster, { name: 'fake', slurmConf: slurm.env['SLURM_CONF'] });
  const parentId = s.tracking.parentRunId!;
  let parent = await store.getRun(parentId);
  assert.equal(parent.data.tags['slurm.job_id'], '100');
  assert.equal(parent.data.tags['slurm.cluster'], 'fake');
  // what the tasks did: trial 1/3 finished; trial 2/3 started (child run RUNNING), then its task was killed hard;
  // trial 3/3's task was cancelled while pending and Slurm has forgotten it
  const exp = parent.info.experimentId;
  const child = async (i: number, status: 'RUNNING' | 'FINISHED') => {
    const c = await store.createRun({ experimentId: exp, runName: `t${i}`, tags: { 'mlflow.parentRunId': parentId, 'sweep.trial': String(i) } });
    if (status === 'FINISHED') await store.setTerminated(c.runId, 'FINISHED');
    return c.runId;
  };
  writeFileSync(path.join(r.dir, 'slurm', 'trial-1.out'), '[step 1/2 ep 1/1] loss 0.9\n/var/spool/slurmd/job00101/slurm_script: line 14: 4242 Killed\n');
  const c0 = await child(0, 'FINISHED');
  const c1 = await child(1, 'RUNNING');
  mkdirSync(path.join(r.dir, 'trials', '001', 'run'), { recursive: true });
  writeFileSync(path.join(r.dir, 'trials', '001', 'run', 'run.json'), JSON.stringify({ runId: 'x', mlflowRunId: c1 }));
  await updateSweep(r.dir, (x) => {
    Object.assign(x.trials[0]!, { status: 'FINISHED', finalLoss: 0.5, metrics: { loss: 0.5 }, mlflowRunId: c0, step: 2 });
    Object.assign(x.trials[1]!, { status: 'RUNNING', attempts: 1 });
    x.status = 'RUNNING';
  });
  // Slurm unreachable: status shows the records as they are and changes nothing
  slurm.set('squeue.fail', 'squeue: error: Unable to contact slurm controller (connect failure)');
  let rep = await sweepStatus(r.dir, { tracker, env: slurm.env });
  assert.deepEqual(rep.rows.map((x) => x.status), ['FINISHED', 'RUNNING', 'PENDING']);
  assert.equal((await readSweep(r.dir)).status, 'RUNNING');
  slurm.set('squeue.fail', null);
  slurm.set('squeue.json', squeueJson(100, { 0: ['COMPLETED', 0], 1: ['FAILED', 9 << 8] }));
  rep = await sweepStatus(r.dir, { tracker, env: slurm.env });
  assert.deepEqual(rep.rows.map((x) => [x.label, x.slurm, x.status, x.mlflow]), [
    ['trial 1/3', 'COMPLETED', 'FINISHED', 'FINISHED'],
    ['trial 2/3', 'FAILED (exit 9)', 'FAILED', 'FAILED'],
    ['trial 3/3', '-', 'KILLED', '-'],
  ]);
  s = await readSweep(r.dir);
  assert.match(s.trials[1]!.error!, /Slurm task 100_1 ended FAILED \(exit 9\)/);
  assert.match(s.trials[2]!.error!, /Slurm task 100_2 is gone before the trial started/);
  assert.equal(s.trials[1]!.mlflowRunId, c1, 'the child run id found in run.json is recorded');
  const runJson = JSON.parse(readFileSync(path.join(r.dir, 'trials', '001', 'run', 'run.json'), 'utf8')) as { status: string; statusReason: string; mlflowRunId: string };
  assert.equal(runJson.status, 'FAILED');
  assert.match(runJson.statusReason, /Slurm task 100_1 ended FAILED/);
  assert.equal(runJson.mlflowRunId, c1, 'the rest of run.json is kept');
  const c1run = await store.getRun(c1);
  assert.equal(c1run.info.status, 'FAILED');
  assert.match(c1run.data.tags['spark.status_reason']!, /100_1 ended FAILED/);
  // nothing left running: the sweep is closed, not "running" forever
  assert.equal(s.status, 'KILLED');
  parent = await store.getRun(parentId);
  assert.equal(parent.info.status, 'KILLED');
  assert.equal(parent.data.tags['best.loss.trial'], '0');
  assert.ok(existsSync(path.join(r.dir, 'summary.md')));
  const text = formatStatus(rep);
  assert.match(text, /trial 2\/3 recorded FAILED: .*; see slurm\/trial-1\.out\n/);
  assert.match(text, /trial 3\/3 recorded KILLED: Slurm task 100_2 is gone before the trial started \(cancelled while pending, or lost\)\n/, 'no output file to point to');
  assert.doesNotMatch(text, /sacct unavailable/, 'sacct without accounting is normal, not worth a note');
  assert.match(text, /resubmit the unfinished trials with: (npx spark|spark|node \S+) sweep launch --resume /);
  assert.match(text, /launcher: slurm, job 100 on cluster fake/);

  // resume refused while the job still has a task queued or running
  slurm.set('squeue.json', squeueJson(100, { 2: ['PENDING', 0] }));
  const before = readFileSync(path.join(r.dir, 'sweep.json'), 'utf8');
  await assert.rejects(resumeSlurm({ dir: r.dir, tracker, command: ['spark'], env: slurm.env }), (e: unknown) => e instanceof SparkError && /still has 1 task\(s\) queued or running \(2\).*scancel 100/.test(e.message));
  assert.equal(readFileSync(path.join(r.dir, 'sweep.json'), 'utf8'), before);
  // a failed sbatch on resume changes nothing
  slurm.set('squeue.json', squeueJson(100, { 0: ['COMPLETED', 0], 1: ['FAILED', 9 << 8] }));
  slurm.set('sbatch.fail', 'sbatch: error: Batch job submission failed: Invalid partition name specified');
  await assert.rejects(resumeSlurm({ dir: r.dir, tracker, command: ['spark'], env: slurm.env, options: { partition: 'nope' } }), /sbatch failed \(exit 1\): sbatch: error: Batch job submission failed: Invalid partition/);
  assert.equal(readFileSync(path.join(r.dir, 'sweep.json'), 'utf8'), before);
  assert.deepEqual(readdirSync(path.join(r.dir, 'slurm')).sort(), ['sweep.sbatch', 'trial-1.out'], 'no resume script left behind');
  assert.equal((await store.getRun(parentId)).info.status, 'KILLED');
  slurm.set('sbatch.fail', null);
  // resume: the two unfinished trials go to a new array job, recorded before it is released; status follows it
  const res = await resumeSlurm({ dir: r.dir, tracker, command: ['spark'], env: slurm.env, options: { time: '00:20:00' } });
  assert.equal(res.jobId, '101');
  assert.deepEqual(res.tasks, [1, 2]);
  const script = readFileSync(res.script!, 'utf8');
  assert.match(script, /^#SBATCH --array=1-2$/m);
  assert.match(script, /^#SBATCH --time=00:20:00$/m);
  assert.match(script, /^#SBATCH --open-mode=append$/m);
  assert.deepEqual(slurm.calls().slice(-2), [`sbatch --parsable --chdir=${r.dir} --hold ${res.script}`, 'scontrol release 101']);
  s = await readSweep(r.dir);
  assert.ok(s.launcher.type === 'slurm');
  if (s.launcher.type === 'slurm') {
    assert.equal(s.launcher.jobId, '101');
    assert.deepEqual(s.launcher.tasks, [1, 2]);
    assert.deepEqual(s.launcher.history?.map((h) => [h.jobId, h.tasks]), [['100', [0, 1, 2]]]);
    assert.equal(s.launcher.options['time'], '00:20:00');
  }
  assert.deepEqual(s.trials.map((t) => t.status), ['FINISHED', 'PENDING', 'PENDING']);
  assert.equal(s.status, 'RUNNING');
  parent = await store.getRun(parentId);
  assert.equal(parent.info.status, 'RUNNING');
  assert.equal(parent.data.tags['slurm.job_id'], '101');
  slurm.set('squeue.json', squeueJson(101, { 1: ['RUNNING', 0], 2: ['PENDING', 0] }));
  rep = await sweepStatus(r.dir, { tracker, env: slurm.env });
  assert.ok(slurm.calls().some((c) => c.startsWith('squeue --json --jobs=101')));
  assert.deepEqual(rep.rows.map((x) => [x.slurm, x.status]), [
    ['-', 'FINISHED'],
    ['RUNNING', 'PENDING'],
    ['PENDING', 'PENDING'],
  ]);
  assert.match(formatStatus(rep), /job 101 on cluster fake .*\(earlier: 100\)/);
});

test('a failed sbatch leaves no sweep folder and no parent run; a failed release cancels the job and ends the parent', async () => {
  const dir = tmp();
  const slurm = fakeSlurm(path.join(dir, 'slurm'));
  const store = openStore(path.join(dir, 'mlruns'));
  const tracker = storeTracker(store);
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6] } });
  slurm.set('sbatch.fail', 'sbatch: error: invalid partition specified: gpu');
  await assert.rejects(launchSlurm({ loaded, options: { partition: 'gpu' }, submit: true, tracker, command: ['spark'], env: slurm.env }), /sbatch failed \(exit 1\): sbatch: error: invalid partition specified: gpu/);
  assert.deepEqual(readdirSync(path.join(dir, 'runs', 'rec')), [], 'no sweep folder');
  const exps = await store.listExperiments();
  const runs = exps.length ? (await store.searchRuns(exps.map((e) => e.experimentId))).runs : [];
  assert.deepEqual(runs, [], 'no parent run');
  slurm.set('sbatch.fail', null);
  slurm.set('release.fail', '1');
  await assert.rejects(launchSlurm({ loaded, options: {}, submit: true, tracker, command: ['spark'], env: slurm.env }), /scontrol release 100 failed/);
  assert.ok(slurm.calls().includes('scancel 100'));
  assert.deepEqual(readdirSync(path.join(dir, 'runs', 'rec')), []);
  const exp = await store.getExperimentByName('rec');
  const after = (await store.searchRuns([exp!.experimentId])).runs;
  assert.deepEqual(after.map((x) => x.info.status), ['FAILED'], 'the parent is not left RUNNING');
});

test('a spec without sweep: is refused by sweep launch (exit 2, one line); with --sweep it launches', async () => {
  const dir = tmp();
  const loaded = loadedFor(dir, undefined);
  await assert.rejects(launchSlurm({ loaded, options: {}, command: ['spark'] }), (e: unknown) => e instanceof UsageError && /no sweep: section and no --sweep axis/.test(e.message) && !e.message.includes('\n'));
  assert.equal(existsSync(path.join(dir, 'runs')), false);
  const ok = await launchSlurm({ loaded, cliSweeps: ['model.mask_ratio=0.5,0.6'], options: {}, command: ['spark'], tracker: null });
  assert.equal((await readSweep(ok.dir)).trials.length, 2);
  // through the CLI
  const spec = path.join(dir, 'plain.yaml');
  writeFileSync(spec, `name: plain\ndata: { source: synthetic }\noutput: { dir: ${JSON.stringify(path.join(dir, 'cli-runs'))} }\n`);
  const [cmd, ...args] = sparkCommand();
  const r = spawnSync(cmd!, [...args, 'sweep', 'launch', spec], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /plain\.yaml: no sweep: section/);
  assert.equal(existsSync(path.join(dir, 'cli-runs')), false);
});

test('a trial stopped by SIGTERM (scancel) records KILLED and exits 143', { timeout: 240_000 }, async () => {
  const dir = tmp();
  const raw = loadedFor(dir, { grid: { 'model.mask_ratio': [0.5] } }).raw as Record<string, unknown>;
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.5] } });
  (raw['train'] as Record<string, unknown>)['steps'] = 100000;
  const long: LoadedSpec = { ...loaded, config: resolveConfig(raw, { file: loaded.specPath }), raw };
  const r = await launchSlurm({ loaded: long, options: {}, command: ['spark'], tracker: null });
  const script = readFileSync(r.script, 'utf8');
  assert.ok(script.includes('sweep trial'));
  const [cmd, ...args] = sparkCommand();
  const child = spawn(cmd!, [...args, 'sweep', 'trial', r.dir, '0', '--plain'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += String(d)));
  child.stderr.on('data', (d) => (out += String(d)));
  // wait until it trains, then stop it the way scancel does
  const deadline = Date.now() + 180_000;
  while (!/step \d+/.test(out) && Date.now() < deadline && child.exitCode === null) await new Promise((res) => setTimeout(res, 200));
  assert.match(out, /step \d+/, out);
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
  assert.equal(code, 143, out.split('\n').slice(-5).join('\n'));
  const s = await readSweep(r.dir);
  assert.equal(s.trials[0]!.status, 'KILLED');
  assert.ok(existsSync(path.join(r.dir, 'trials', '000', 'run', 'checkpoint')), 'it wrote its checkpoint before leaving');
});

test('sbatch script of a resubmission runs only the listed tasks', () => {
  const text = buildSbatchScript({ sweepDir: '/s', sweepId: 'x', specPath: '/s.yaml', trials: 6, name: 'n', trackingUri: null, workdir: '/w', command: ['spark'], options: { arrayParallel: 2 }, tasks: [4, 1, 2] });
  assert.match(text, /^#SBATCH --array=1-2,4%2$/m);
  assert.match(text, /trials 1-2,4 of 6/);
});

test('CLI: spark sweep launch --resume <dir> resubmits, spark sweep status --json shows the reconciled trials', { timeout: 240_000 }, async () => {
  const dir = tmp();
  const slurm = fakeSlurm(path.join(dir, 'slurm'));
  const loaded = loadedFor(dir, { grid: { 'model.mask_ratio': [0.4, 0.6] } });
  const r = await launchSlurm({ loaded, options: {}, submit: true, command: ['spark'], env: slurm.env });
  // both tasks were cancelled before they started, and Slurm has forgotten them
  const [cmd, ...args] = sparkCommand();
  const st = spawnSync(cmd!, [...args, 'sweep', 'status', r.dir, '--json'], { encoding: 'utf8', env: slurm.env, timeout: 120_000 });
  assert.equal(st.status, 0, st.stderr);
  const rep = JSON.parse(st.stdout) as { status: string; trials: Array<{ index: number; label: string; status: string }> };
  assert.equal(rep.status, 'KILLED');
  assert.deepEqual(rep.trials.map((x) => [x.index, x.label, x.status]), [
    [0, 'trial 1/2', 'KILLED'],
    [1, 'trial 2/2', 'KILLED'],
  ]);
  const res = spawnSync(cmd!, [...args, 'sweep', 'launch', '--resume', r.dir], { encoding: 'utf8', env: slurm.env, timeout: 120_000 });
  assert.equal(res.status, 0, res.stderr);
  assert.match(res.stdout, /resubmitted 2 unfinished trial\(s\) \(1, 2 of 2\) as array job 101; follow with: spark sweep status /);
  const s = await readSweep(r.dir);
  assert.equal(s.launcher.type === 'slurm' ? s.launcher.jobId : null, '101');
  // --resume with a spec as well is a usage error
  const both = spawnSync(cmd!, [...args, 'sweep', 'launch', '--resume', r.dir, loaded.specPath], { encoding: 'utf8', env: slurm.env, timeout: 120_000 });
  assert.equal(both.status, 2);
});
