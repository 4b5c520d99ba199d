import { test } from 'node:test';
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

function loadedFor(dir: string, name: string): LoadedSpec {
  const raw = {
    name,
    model: { encoder: 'resnet_mini', decoder: { type: 'light', width: 32 } },
    data: { source: 'synthetic', input_size: 64, synthetic_size: 8, workers: 0 },
    train: { steps: 2, batch_size: 2, warmup_steps: 1 },
    runtime: { backend: 'cpu', threads: 1 },
    output: { dir: path.join(dir, 'runs'), checkpoint_every: 0, log_every: 1, reconstruct_every: 0 },
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

/** Start the single-node Slurm (scripts/slurm-up.sh); a reason string when it cannot be used. */
function slurmUp(): string | null {
  if (process.getuid?.() !== 0) return 'not root (slurmd must run as root)';
  if (process.env['SPARK_SKIP_SLURM'] === '1') return 'SPARK_SKIP_SLURM=1';
  const up = spawnSync('bash', [path.join(packageRoot(), 'scripts', 'slurm-up.sh')], { encoding: 'utf8', timeout: 240_000 });
  if (up.status !== 0) return `scripts/slurm-up.sh failed: ${(up.stderr || up.stdout).trim().split('\n').pop()}`;
  process.env['SLURM_CONF'] = path.join(process.env['SPARK_SLURM_DIR'] ?? '/var/tmp/spark-slurm', 'etc', 'slurm.conf');
  return null;
}

test('real Slurm: a two-trial sweep submitted with sbatch runs to completion with both children in the store', { timeout: 600_000 }, async (t) => {
  const why = slurmUp();
  if (why) {
    t.diagnostic(`skipped: ${why}`);
    t.skip(why);
    return;
  }
  // a folder with a space and a quote: exercises #SBATCH --chdir="..." and the script's quoting for real
  const dir = path.join(tmp(), "it's a dir");
  const r = await launchSlurm({ loaded: loadedFor(dir, 'slurm-e2e'), options: { time: '00:10:00', cpusPerTask: 1 }, submit: true });
  assert.match(r.jobId ?? '', /^\d+$/);
  const launched = await readSweep(r.dir);
  assert.equal(launched.launcher.type === 'slurm' ? launched.launcher.jobId : null, r.jobId);
  const deadline = Date.now() + 540_000;
  let s = launched;
  let gone = 0;
  while (Date.now() < deadline) {
    s = await readSweep(r.dir);
    if (s.status === 'FINISHED' || s.status === 'FAILED') break;
    // stop waiting when Slurm has no pending/running task left (a task that died without recording anything)
    const q = await querySlurmArray(r.jobId!);
    const active = [...q.tasks.values()].some((x) => /PENDING|RUNNING|CONFIGURING|COMPLETING/.test(x.state));
    gone = active ? 0 : gone + 1;
    if (gone > 5) break;
    await new Promise((res) => setTimeout(res, 2000));
  }
  const outs = s.trials.map((x) => {
    const f = path.join(r.dir, 'slurm', `trial-${x.index}.out`);
    return existsSync(f) ? readFileSync(f, 'utf8').split('\n').slice(-8).join('\n') : '(no output file)';
  });
  assert.equal(s.status, 'FINISHED', `sweep ended ${s.status}; task output:\n${outs.join('\n---\n')}`);
  assert.deepEqual(s.trials.map((x) => x.status), ['FINISHED', 'FINISHED']);
  const { openStore } = await import('../src/track/index.js');
  const store = openStore(path.join(dir, 'mlruns'));
  const parent = await store.getRun(s.tracking.parentRunId!);
  const children = await store.searchRuns([parent.info.experimentId], `tags.mlflow.parentRunId = '${parent.info.runId}'`);
  assert.deepEqual(children.runs.map((c) => c.data.tags['sweep.trial']).sort(), ['0', '1']);
  assert.ok(children.runs.every((c) => c.info.status === 'FINISHED'));
  // the last array task closed the sweep: summary + best trial on the parent
  assert.equal(parent.info.status, 'FINISHED');
  assert.ok(parent.data.params['best.loss.trial'] === '0' || parent.data.params['best.loss.trial'] === '1');
  assert.ok(existsSync(path.join(r.dir, 'summary.md')));
  const rep = await sweepStatus(r.dir);
  assert.deepEqual(rep.rows.map((x) => x.mlflow), ['FINISHED', 'FINISHED']);
  assert.ok(rep.rows.every((x) => x.slurm.startsWith('COMPLETED')), formatStatus(rep));
});
