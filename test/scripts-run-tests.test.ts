/** scripts/run-tests.mjs: the closing summary names every skipped test with its reason, taken from the TAP report. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../src/util/paths.js';

const FIXTURE_TESTS = `
import { test } from 'node:test';
test('plain', () => {});
test('needs torch', { skip: 'python3 with torch not found (npm run setup:reference)' }, () => {});
test('group', async (t) => {
  await t.test('inner # with a hash', (t) => { t.skip('decided at run time'); });
  await t.test('inner ok', () => {});
});
test('later', { todo: 'not written yet' }, () => {});
test('bare skip', { skip: true }, () => {});
`;

/** The environment of a child `node --test` that reports on its own (not as a subtest of this run). */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

function withFixture<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-run-tests-'));
  try {
    writeFileSync(path.join(dir, 'fixture.test.js'), FIXTURE_TESTS);
    writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('tapSkips reads the skips, todos and reasons of a real node --test TAP report, with their parents', async () => {
  const { tapSkips } = (await import(pathToFileURL(path.join(packageRoot(), 'scripts', 'tap-skips.mjs')).href)) as {
    tapSkips: (text: string) => Array<{ name: string; kind: string; reason: string }>;
  };
  const tap = withFixture((dir) => spawnSync(process.execPath, ['--test', '--test-reporter=tap', path.join(dir, 'fixture.test.js')], { encoding: 'utf8', env: childEnv() }).stdout);
  assert.match(tap, /^TAP version/);
  assert.deepEqual(tapSkips(tap), [
    { name: 'needs torch', kind: 'skip', reason: 'python3 with torch not found (npm run setup:reference)' },
    { name: 'group > inner # with a hash', kind: 'skip', reason: 'decided at run time' },
    { name: 'later', kind: 'todo', reason: 'not written yet' },
    { name: 'bare skip', kind: 'skip', reason: '' },
  ]);
});

test('run-tests prints every skipped test with its reason before the closing line', () => {
  const r = withFixture((dir) =>
    spawnSync(process.execPath, [path.join(packageRoot(), 'scripts', 'run-tests.mjs')], { encoding: 'utf8', env: childEnv({ SPARK_TEST_DIR: dir, SPARK_TEST_SUMMARY: '' }) }),
  );
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.at(-1), 'tests: 3 passed, 0 failed, 4 skipped');
  const at = lines.indexOf('skipped (4):');
  assert.ok(at > 0, r.stdout);
  assert.deepEqual(lines.slice(at + 1, at + 5), [
    '  - needs torch: python3 with torch not found (npm run setup:reference)',
    '  - group > inner # with a hash: decided at run time',
    '  - later [todo]: not written yet',
    '  - bare skip: (no reason given)',
  ]);
});
