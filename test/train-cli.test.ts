/** `spark run` argument handling and exit codes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import runCommand from '../src/cli/commands/run.js';
import { SparkError } from '../src/util/errors.js';
import { findTorchAddon } from '../src/backend/torch/addon-path.js';
import { tinySpecYaml, tmpDir, sparkCli } from './helpers/train.js';

/** The command rejects with a SparkError of exit code 2 whose message matches. */
async function rejects2(argv: string[], re: RegExp): Promise<void> {
  await assert.rejects(runCommand(argv), (e: unknown) => {
    assert.ok(e instanceof SparkError, `a typed error, got ${String(e)}`);
    assert.equal(e.exitCode, 2);
    const text = 'format' in e && typeof e.format === 'function' ? (e.format as () => string)() : e.message;
    assert.match(text, re);
    return true;
  });
}

test('spark run usage errors exit 2 with one clear line', async () => {
  await rejects2([], /give exactly one spec file/);
  await rejects2(['a.yaml', 'b.yaml'], /give exactly one spec file \(got 2\)/);
  await rejects2(['x.yaml', '--bogus'], /Unknown option '--bogus'/);
  await rejects2(['x.yaml', '--parallel', 'zero'], /--parallel must be a positive integer/);
  await rejects2(['--resume', path.join(tmpDir(), 'missing')], /no such run folder/);
  await rejects2(['--resume', tmpDir()], /not a run folder \(no config.yaml\) nor a sweep folder/);
  await rejects2(['--resume', tmpDir(), 'x.yaml'], /do not also give a spec/);
  await rejects2(['--resume', tmpDir(), '--set', 'a.b=1'], /cannot be combined/);
});

test('spark run reports bad spec values and missing data with exit 2, leaving no run folder', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'runs');
  const spec = path.join(dir, 'tiny.yaml');
  writeFileSync(spec, tinySpecYaml({ outDir: out, name: 'bad' }));
  await rejects2([spec, '--set', 'model.mask_ratio=1.5'], /mask_ratio/);
  assert.equal(existsSync(out), false);
  await rejects2([spec, '--set', 'data.source=imagefolder', '--set', `data.root=${path.join(dir, 'nope')}`], /nope/);
  assert.ok(!existsSync(path.join(out, 'bad')) || readdirSync(path.join(out, 'bad')).length === 0, 'no run folder left');
});

test('spark run with a backend that cannot run (bad env values) exits before anything is written', () => {
  const [cmd, ...pre] = sparkCli();
  const dir = tmpDir();
  const out = path.join(dir, 'runs');
  const spec = path.join(dir, 'tiny.yaml');
  writeFileSync(spec, tinySpecYaml({ outDir: out, name: 'nobackend' }));
  const run = (env: NodeJS.ProcessEnv): ReturnType<typeof spawnSync> =>
    spawnSync(cmd!, [...pre, 'run', spec, '--plain', '--set', 'runtime.backend=torch'], { encoding: 'utf8', env: { ...process.env, ...env } });
  // the device request is read before the addon is loaded: this holds with or without a torch build
  const bad = run({ SPARK_TORCH_DEVICE: 'bogus' });
  assert.equal(bad.status, 3, String(bad.stderr));
  assert.match(String(bad.stderr), /SPARK_TORCH_DEVICE: unknown device 'bogus'/);
  assert.equal(existsSync(out), false, 'no run folder for a backend that cannot start');
  if (findTorchAddon().path) {
    const cache = run({ SPARK_TORCH_DEVICE: 'cpu', SPARK_TORCH_CPU_CACHE_MB: 'lots' });
    assert.equal(cache.status, 2, String(cache.stderr));
    assert.match(String(cache.stderr), /SPARK_TORCH_CPU_CACHE_MB must be a number of MiB >= 0, not 'lots'/);
    assert.equal(existsSync(out), false);
  }
});

test('spark run --help, and --dry-run prints the plan and writes nothing (child process)', () => {
  const [cmd, ...pre] = sparkCli();
  const h = spawnSync(cmd!, [...pre, 'run', '--help'], { encoding: 'utf8' });
  assert.equal(h.status, 0, h.stderr);
  assert.match(h.stdout, /usage: spark run <spec.yaml>/);
  const dir = tmpDir();
  const out = path.join(dir, 'runs');
  const spec = path.join(dir, 'tiny.yaml');
  writeFileSync(spec, tinySpecYaml({ outDir: out, name: 'dry' }));
  const r = spawnSync(cmd!, [...pre, 'run', spec, '--dry-run', '--set', 'train.steps=9'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.length > 50, 'a plan is printed');
  assert.match(r.stdout, /\b9\b/);
  assert.equal(existsSync(out), false, 'nothing written');
  // a sweep dry run lists the validated trials
  const sw = spawnSync(cmd!, [...pre, 'run', spec, '--dry-run', '--sweep', 'model.mask_ratio=0.5,0.75'], { encoding: 'utf8' });
  assert.equal(sw.status, 0, sw.stderr);
  assert.match(sw.stdout, /sweep: 2 trials/);
  assert.match(sw.stdout, /\[trial 2\/2\] mask_ratio=0.75/); // counted from 1 for people
  assert.equal(existsSync(out), false, 'nothing written');
});
