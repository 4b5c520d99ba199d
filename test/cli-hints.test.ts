/**
 * Commands spark prints for a person to run (util/hint.ts): `npx spark …` inside the project, `spark …` when this CLI
 * is on PATH, `node <main.js> …` elsewhere; and the resume hint of a Ctrl-C'd run, printed once, resumes the run
 * when executed exactly as printed by a shell in the repository root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { commandHint, shellQuote, sparkInvocation } from '../src/util/hint.js';
import { packageRoot } from '../src/util/paths.js';
import { testBackend } from './helpers/backend.js';
import { tinySpecYaml, tmpDir, spawnSpark, waitForCheckpoint } from './helpers/train.js';

const ROOT = packageRoot();
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

test('hint commands: npx spark inside the project, paths relative to it and shell-quoted', () => {
  assert.equal(commandHint(['run', '--resume', { path: path.join(ROOT, 'runs', 'q', 'abc') }], ROOT), 'npx spark run --resume runs/q/abc');
  assert.equal(commandHint(['run', '--resume', { path: path.join(ROOT, 'runs', "it's x", 'abc') }], ROOT), `npx spark run --resume 'runs/it'\\''s x/abc'`);
  // a sub-folder of the project is still the project for npx; a path outside the working directory stays absolute
  assert.equal(commandHint(['sync', '--run', { path: '/elsewhere/r1' }], path.join(ROOT, 'experiments')), 'npx spark sync --run /elsewhere/r1');
  assert.equal(commandHint(['compare', '--experiment', 'spark', '--order-by', 'metrics.probe_top1 DESC'], ROOT), `npx spark compare --experiment spark --order-by 'metrics.probe_top1 DESC'`);
  assert.equal(shellQuote(''), `''`);
});

test('hint commands outside the project: spark when this CLI is on PATH, else node <main.js>', () => {
  const dir = tmpDir('spark-hint-');
  writeFileSync(path.join(dir, 'package.json'), '{"name":"other"}'); // another project: npx would not find our bin
  const empty = path.join(dir, 'empty-bin');
  mkdirSync(empty);
  assert.equal(sparkInvocation(dir, { PATH: empty }), `node ${MAIN}`);
  const bin = path.join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(MAIN, path.join(bin, 'spark')); // what `npm link` makes
  assert.equal(sparkInvocation(dir, { PATH: `${empty}${path.delimiter}${bin}` }), 'spark');
  // another program called spark first on PATH is not ours
  const other = path.join(dir, 'other-bin');
  mkdirSync(other);
  writeFileSync(path.join(other, 'spark'), '#!/bin/sh\n', { mode: 0o755 });
  assert.equal(sparkInvocation(dir, { PATH: `${other}${path.delimiter}${bin}` }), `node ${MAIN}`);
  // a project that has spark among its dependencies: its node_modules/.bin/spark is this CLI
  mkdirSync(path.join(dir, 'node_modules', '.bin'), { recursive: true });
  symlinkSync(MAIN, path.join(dir, 'node_modules', '.bin', 'spark'));
  assert.equal(sparkInvocation(dir, { PATH: empty }), 'npx spark');
});

function sh(command: string, cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', command], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });
}

test('after Ctrl-C the resume hint is printed once and, run as printed from the repository root, finishes the run', async () => {
  const info = await testBackend();
  const out = tmpDir();
  const spec = path.join(out, 'hint.yaml');
  writeFileSync(spec, tinySpecYaml({ outDir: out, name: 'hint', steps: 5, checkpointEvery: 1, backend: info.name }));
  const { child, done } = spawnSpark('run', [spec], { SPARK_TEST_STEP_DELAY_MS: '200' }, ROOT); // from the repository root, as the README
  const runDir = await waitForCheckpoint(out, 'hint', 2);
  child.kill('SIGINT');
  const r = await done;
  assert.equal(r.code, 130, r.stderr.slice(-800));
  const hints = (r.stdout + r.stderr).split('\n').filter((l) => l.includes('resume with:'));
  assert.equal(hints.length, 1, `one resume hint:\n${r.stdout}\n${r.stderr}`);
  const command = hints[0]!.replace(/^.*resume with: /, '').trim();
  assert.equal(command, `npx spark run --resume ${runDir}`);
  const resumed = await sh(command, ROOT);
  assert.equal(resumed.code, 0, resumed.out.slice(-1500));
  assert.match(resumed.out, /FINISHED at step 5/);
  const st = JSON.parse(readFileSync(path.join(runDir, 'checkpoint', 'state.json'), 'utf8')) as { step: number };
  assert.equal(st.step, 5);
});
