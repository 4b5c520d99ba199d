import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { resolveConfig } from '../src/spec/index.js';
import {
  buildSbatchScript,
  checkSlurmOptions,
  expandTaskRange,
  launchSlurm,
  parseSacct,
  parseScontrol,
  parseSqueueJson,
  querySlurmArray,
  resumeSlurm,
  slurmJobName,
} from '../src/sweep/slurm.js';
import { shellQuote, type LoadedSpec } from '../src/sweep/runner.js';
import { readSweep } from '../src/sweep/state.js';
import { sweepStatus, formatStatus } from '../src/sweep/status.js';
import { UsageError } from '../src/util/errors.js';
import { packageRoot } from '../src/util/paths.js';

const HOSTILE = `it's a "sweep" $(touch PWNED) \`id\` ; & | * \\ end`;

function tmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'spark-slurm-'));
}

test('shellQuote survives a round trip through bash', () => {
  for (const s of ['plain', '', 'a b', "it's", HOSTILE, '$HOME', 'new\nline', "''", '-n']) {
    const r = spawnSync('bash', ['-c', `printf '%s' ${shellQuote(s)}`], { encoding: 'utf8' });
    assert.equal(r.stdout, s);
  }
});

test('sbatch script: array range, options, quoting of a hostile spec name and folder (bash -n, then run as a task)', () => {
  const root = tmp();
  const dir = path.join(root, HOSTILE, 'sweep-1');
  const workdir = path.join(root, `work "dir" 'x'`);
  mkdirSync(path.join(dir, 'slurm'), { recursive: true });
  mkdirSync(workdir, { recursive: true });
  // a stand-in for spark that prints what it received
  const printer = path.join(root, HOSTILE, 'print args.sh');
  writeFileSync(printer, 'printf "%s\\0" "$@" "cwd=$PWD" "uri=$MLFLOW_TRACKING_URI"\n');
  const script = buildSbatchScript({
    sweepDir: dir,
    sweepId: '20261126-000000-abcd',
    specPath: path.join(root, HOSTILE, 'spec.yaml'),
    trials: 5,
    name: HOSTILE,
    trackingUri: path.join(root, HOSTILE, 'mlruns'),
    workdir,
    command: ['/bin/bash', printer],
    options: { partition: 'debug', time: '01:30:00', cpusPerTask: 4, mem: '8G', arrayParallel: 2, gres: 'gpu:1' },
  });
  const file = path.join(dir, 'slurm', 'sweep.sbatch');
  writeFileSync(file, script);
  const lines = script.split('\n');
  assert.equal(lines[0], '#!/bin/bash');
  assert.ok(lines.includes('#SBATCH --array=0-4%2'));
  assert.ok(lines.includes('#SBATCH --partition=debug'));
  assert.ok(lines.includes('#SBATCH --time=01:30:00'));
  assert.ok(lines.includes('#SBATCH --cpus-per-task=4'));
  assert.ok(lines.includes('#SBATCH --mem=8G'));
  assert.ok(lines.includes('#SBATCH --gres=gpu:1'));
  assert.ok(lines.includes('#SBATCH --output=slurm/trial-%a.out'));
  const jobName = lines.find((l) => l.startsWith('#SBATCH --job-name='))!;
  assert.match(jobName, /^#SBATCH --job-name=spark-[A-Za-z0-9_.-]+$/);
  // every #SBATCH directive precedes the first command
  const firstCmd = lines.findIndex((l) => l && !l.startsWith('#'));
  assert.ok(lines.slice(firstCmd).every((l) => !l.startsWith('#SBATCH')));
  const syntax = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
  assert.equal(syntax.status, 0, syntax.stderr);
  // run it as array task 3 would
  const r = spawnSync('bash', [file], { encoding: 'utf8', cwd: root, env: { ...process.env, SLURM_ARRAY_TASK_ID: '3' } });
  assert.equal(r.status, 0, r.stderr);
  const got = r.stdout.split('\0').slice(0, -1);
  assert.deepEqual(got, ['sweep', 'trial', dir, '3', '--plain', `cwd=${workdir}`, `uri=${path.join(root, HOSTILE, 'mlruns')}`]);
  assert.equal(existsSync(path.join(root, 'PWNED')), false);
  assert.equal(existsSync(path.join(workdir, 'PWNED')), false);
  // outside an array job it refuses to run
  const bare = spawnSync('bash', [file], { encoding: 'utf8', env: { ...process.env, SLURM_ARRAY_TASK_ID: '' } });
  assert.notEqual(bare.status, 0);
  assert.match(bare.stderr, /Slurm array job/);
});

test('option checks keep #SBATCH lines safe; job names are sanitised', () => {
  assert.doesNotThrow(() => checkSlurmOptions({ time: '1-12:00:00', mem: '500M', partition: 'gpu,cpu', cpusPerTask: 2, arrayParallel: 1 }));
  assert.throws(() => checkSlurmOptions({ time: '01:00:00\n#SBATCH --uid=0' }), UsageError);
  assert.throws(() => checkSlurmOptions({ partition: 'a b' }), UsageError);
  assert.throws(() => checkSlurmOptions({ mem: '4 GB' }), UsageError);
  assert.throws(() => checkSlurmOptions({ cpusPerTask: 0 }), UsageError);
  assert.throws(() => checkSlurmOptions({ arrayParallel: 1.5 }), UsageError);
  assert.equal(slurmJobName(`a b'c"$(x)`), 'spark-a_b_c___x_');
});

test('reading the array state back: squeue --json, scontrol -o, sacct', () => {
  const sq = JSON.stringify({
    jobs: [
      { job_id: 12, array_job_id: 10, array_task_id: 0, array_task_string: '', job_state: 'COMPLETED', exit_code: 0 },
      { job_id: 13, array_job_id: 10, array_task_id: 1, array_task_string: '', job_state: 'FAILED', exit_code: 256 },
      { job_id: 11, array_job_id: 10, array_task_id: null, array_task_string: '2-4%2', job_state: 'PENDING', exit_code: 0 },
      { job_id: 99, array_job_id: 98, array_task_id: 0, array_task_string: '', job_state: 'RUNNING', exit_code: 0 },
    ],
  });
  const a = parseSqueueJson(sq, '10');
  assert.deepEqual([...a.keys()].sort(), [0, 1, 2, 3, 4]);
  assert.equal(a.get(1)!.state, 'FAILED');
  assert.equal(a.get(1)!.exitCode, 1);
  assert.equal(a.get(3)!.state, 'PENDING');
  const sc = parseScontrol(
    'JobId=12 ArrayJobId=10 ArrayTaskId=0 JobName=x JobState=COMPLETED Reason=None ExitCode=0:0\n' +
      'JobId=10 ArrayJobId=10 ArrayTaskId=2-3 JobName=x JobState=PENDING Reason=JobArrayTaskLimit ExitCode=0:0\n',
  );
  assert.deepEqual([...sc.entries()].map(([i, s]) => [i, s.state]), [
    [0, 'COMPLETED'],
    [2, 'PENDING'],
    [3, 'PENDING'],
  ]);
  const sa = parseSacct('10_0|COMPLETED|0:0\n10_1|FAILED|1:0\n10_[2-3%1]|PENDING|0:0\n11_0|RUNNING|0:0\n', '10');
  assert.deepEqual([...sa.entries()].map(([i, s]) => [i, s.state, s.exitCode]), [
    [0, 'COMPLETED', 0],
    [1, 'FAILED', 1],
    [2, 'PENDING', 0],
    [3, 'PENDING', 0],
  ]);
  assert.deepEqual(expandTaskRange('0-6:3,8'), [0, 3, 6, 8]);
});

function loadedFor(dir: string, name: string, o: { steps?: number; checkpointEvery?: number } = {}): LoadedSpec {
  const raw = {
    name,
    model: { encoder: 'resnet_mini', decoder: { type: 'light', width: 32 } },
    data: { source: 'synthetic', input_size: 64, synthetic_size: 8, workers: 0 },
    train: { steps: o.steps ?? 2, batch_size: 2, warmup_steps: 1 },
    runtime: { backend: 'cpu', threads: 1 },
    output: { dir: path.join(dir, 'runs'), checkpoint_every: o.checkpointEvery ?? 0, log_every: 1, reconstruct_every: 0 },
    tracking: { uri: path.join(dir, 'mlruns'), experiment: 'slurm-sweep' },
    sweep: { grid: { 'model.mask_ratio': [0.5, 0.75] } },
  };
  const specPath = path.join(dir, 'spec.yaml');
  return { config: resolveConfig(raw, { file: specPath }), specPath, raw };
}

test('launch without --submit: sweep folder, parent run in the file store, executable script; status reads it back', async () => {
  const dir = tmp();
  const r = await launchSlurm({ loaded: loadedFor(dir, 'launch'), options: { arrayParallel: 1 }, command: ['spark'] });
  assert.equal(r.jobId, null);
  assert.equal(r.script, path.join(r.dir, 'slurm', 'sweep.sbatch'));
  assert.ok(statSync(r.script).mode & 0o100);
  assert.match(readFileSync(r.script, 'utf8'), /#SBATCH --array=0-1%1/);
  const s = await readSweep(r.dir);
  assert.equal(s.launcher.type, 'slurm');
  assert.ok(s.tracking.parentRunId, 'the parent run is created at launch time');
  const { openStore } = await import('../src/track/index.js');
  const parent = await openStore(path.join(dir, 'mlruns')).getRun(s.tracking.parentRunId!);
  assert.equal(parent.data.tags['spark.sweep'], '1');
  assert.equal(parent.info.status, 'RUNNING');
  const rep = await sweepStatus(r.dir, { querySlurm: async () => ({ tasks: new Map(), notes: [], answered: false }) });
  assert.deepEqual(rep.rows.map((x) => [x.index, x.status, x.slurm]), [
    [0, 'PENDING', '-'],
    [1, 'PENDING', '-'],
  ]);
  assert.match(formatStatus(rep), /not submitted/);
});

/** True when this test file started the single-node Slurm (then it stops it when done). */
let startedSlurm = false;

/** Start the single-node Slurm (scripts/slurm-up.sh); a reason string when it cannot be used. */
function slurmUp(): string | null {
  if (process.getuid?.() !== 0) return 'not root (slurmd must run as root)';
  if (process.env['SPARK_SKIP_SLURM'] === '1') return 'SPARK_SKIP_SLURM=1';
  const up = spawnSync('bash', [path.join(packageRoot(), 'scripts', 'slurm-up.sh')], { encoding: 'utf8', timeout: 240_000 });
  // slurm-up.sh says "started" for each daemon it started (and "already running" for one it found)
  if (/\b(munged|slurmctld:|slurmd:) started\b/.test(up.stdout)) startedSlurm = true;
  if (up.status !== 0) return `scripts/slurm-up.sh failed: ${(up.stderr || up.stdout).trim().split('\n').pop()}`;
  process.env['SLURM_CONF'] = path.join(process.env['SPARK_SLURM_DIR'] ?? '/var/tmp/spark-slurm', 'etc', 'slurm.conf');
  return null;
}

after(() => {
  if (!startedSlurm) return;
  const down = spawnSync('bash', [path.join(packageRoot(), 'scripts', 'slurm-down.sh')], { encoding: 'utf8', timeout: 120_000 });
  if (down.status !== 0) process.stderr.write(`scripts/slurm-down.sh failed: ${down.stderr || down.stdout}\n`);
});

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/** Wait until `done()` holds or Slurm has no queued/running task of `jobId` left (a few polls in a row). */
async function waitFor(jobId: string, done: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  let idle = 0;
  while (Date.now() < deadline) {
    if (await done()) return;
    const q = await querySlurmArray(jobId);
    idle = [...q.tasks.values()].some((x) => /PENDING|RUNNING|CONFIGURING|COMPLETING/.test(x.state)) ? 0 : idle + 1;
    if (idle > 5) return;
    await sleep(1000);
  }
}

test('real Slurm: scancel stops a running trial and a pending one; status records both KILLED; launch --resume resubmits and finishes them', { timeout: 600_000 }, async (t) => {
  const why = slurmUp();
  if (why) {
    t.diagnostic(`skipped: ${why}`);
    t.skip(why);
    return;
  }
  // a folder with a space and a quote: exercises #SBATCH --chdir="..." and the script's quoting for real
  const dir = path.join(tmp(), "it's a dir");
  const loaded = loadedFor(dir, 'slurm-e2e', { steps: 6, checkpointEvery: 2 });
  const r = await launchSlurm({ loaded, options: { time: '00:10:00', cpusPerTask: 1, arrayParallel: 1 }, submit: true });
  assert.match(r.jobId ?? '', /^\d+$/);
  const launched = await readSweep(r.dir);
  assert.ok(launched.launcher.type === 'slurm');
  if (launched.launcher.type === 'slurm') {
    assert.equal(launched.launcher.jobId, r.jobId);
    assert.equal(launched.launcher.cluster?.name, 'spark', 'the cluster is recorded with the job id');
    assert.equal(launched.launcher.cluster?.slurmConf, process.env['SLURM_CONF']);
  }
  const out = (i: number) => {
    const f = path.join(r.dir, 'slurm', `trial-${i}.out`);
    return existsSync(f) ? readFileSync(f, 'utf8') : '(no output file)';
  };
  // 1. trial 1/2 runs (the array runs one task at a time) and writes a checkpoint; trial 2/2 is pending: cancel both
  await waitFor(r.jobId!, async () => existsSync(path.join(r.dir, 'trials', '000', 'run', 'checkpoint')), 300_000);
  assert.ok(existsSync(path.join(r.dir, 'trials', '000', 'run', 'checkpoint')), `trial 1 never wrote a checkpoint:\n${out(0)}`);
  assert.equal(spawnSync('scancel', [r.jobId!], { encoding: 'utf8' }).status, 0);
  await waitFor(r.jobId!, async () => false, 60_000);
  let rep = await sweepStatus(r.dir);
  let s = rep.sweep;
  assert.deepEqual(s.trials.map((x) => x.status), ['KILLED', 'KILLED'], formatStatus(rep));
  assert.match(s.trials[1]!.error ?? '', new RegExp(`Slurm task ${r.jobId}_1 ended CANCELLED before the trial started`));
  assert.equal(s.status, 'KILLED', 'a sweep with nothing left to run is not "running"');
  const { openStore } = await import('../src/track/index.js');
  const store = openStore(path.join(dir, 'mlruns'));
  let parent = await store.getRun(s.tracking.parentRunId!);
  assert.equal(parent.info.status, 'KILLED');
  assert.equal(parent.data.tags['slurm.job_id'], r.jobId);
  // 2. resume: the unfinished trials go to a new array job; status follows it to the end
  const res = await resumeSlurm({ dir: r.dir });
  assert.match(res.jobId ?? '', /^\d+$/);
  assert.notEqual(res.jobId, r.jobId);
  assert.deepEqual(res.tasks, [0, 1]);
  await waitFor(res.jobId!, async () => ['FINISHED', 'FAILED'].includes((await readSweep(r.dir)).status), 400_000);
  // the last task records the sweep's end in sweep.json, then closes the parent run and exits: wait for it to exit
  await waitFor(res.jobId!, async () => false, 60_000);
  s = await readSweep(r.dir);
  assert.equal(s.status, 'FINISHED', `sweep ended ${s.status}; task output:\n${out(0).split('\n').slice(-8).join('\n')}\n---\n${out(1).split('\n').slice(-8).join('\n')}`);
  assert.deepEqual(s.trials.map((x) => x.status), ['FINISHED', 'FINISHED']);
  assert.deepEqual(s.trials.map((x) => x.step), [6, 6]);
  assert.ok(s.trials[0]!.attempts >= 2, 'trial 1 was resumed');
  assert.match(out(0), /resumed/i, 'the resumed attempt appends to the first one\'s output and says it resumed');
  const children = await store.searchRuns([parent.info.experimentId], `tags.mlflow.parentRunId = '${parent.info.runId}'`);
  assert.deepEqual(children.runs.map((c) => c.data.tags['sweep.trial']).sort(), ['0', '1']);
  assert.ok(children.runs.every((c) => c.info.status === 'FINISHED'));
  // the last array task closed the sweep: summary + best trial on the parent (a tag: params never change)
  parent = await store.getRun(s.tracking.parentRunId!);
  assert.equal(parent.info.status, 'FINISHED');
  assert.equal(parent.data.tags['slurm.job_id'], res.jobId);
  assert.ok(parent.data.tags['best.loss.trial'] === '0' || parent.data.tags['best.loss.trial'] === '1');
  assert.equal(parent.data.params['model.mask_ratio'], undefined);
  assert.equal(parent.data.params['sweep.model.mask_ratio'], '[0.5, 0.75]');
  assert.ok(existsSync(path.join(r.dir, 'summary.md')));
  rep = await sweepStatus(r.dir);
  assert.deepEqual(rep.rows.map((x) => x.mlflow), ['FINISHED', 'FINISHED']);
  assert.ok(rep.rows.every((x) => x.slurm.startsWith('COMPLETED')), formatStatus(rep));
  assert.match(formatStatus(rep), new RegExp(`job ${res.jobId} on cluster spark .*\\(earlier: ${r.jobId}\\)`));
});
