#!/usr/bin/env node
// Runs the compiled test suite (dist/test/**/*.test.js) with Node's built-in runner, one file at a time (tests
// share 2 cores and TensorFlow's thread pool). Pass file-name filters as arguments: `npm test -- model- spec-`.
// Prints the spec reporter's output, then every skipped (or todo) test with its reason, then one closing line
// `N passed, N failed, N skipped` (also written to $SPARK_TEST_SUMMARY when set), both taken from a TAP copy of the run.
import { readdirSync, statSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { tapSkips } from './tap-skips.mjs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
// SPARK_TEST_DIR: another folder of compiled tests (the runner's own test uses it)
const testDir = process.env.SPARK_TEST_DIR ? path.resolve(process.env.SPARK_TEST_DIR) : path.join(root, 'dist', 'test');
function walk(d) {
  return readdirSync(d).flatMap((n) => {
    const p = path.join(d, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}
const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
let files = [];
try {
  files = walk(testDir).sort();
} catch {
  /* no dist/test */
}
if (filters.length) files = files.filter((f) => filters.some((x) => path.basename(f).includes(x)));
if (!files.length) {
  console.error('run-tests: no test files found under dist/test (did `npm run build` run?)');
  process.exit(1);
}
console.error(`run-tests: ${files.length} files, backend=${process.env.SPARK_BACKEND ?? 'auto'}`);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'spark-tests-'));
const tap = path.join(tmp, 'report.tap');
const r = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files],
  { stdio: 'inherit', cwd: root, env: { ...process.env, SPARK_TEST: '1' } },
);
let summary = null;
let skips = [];
try {
  const text = readFileSync(tap, 'utf8');
  skips = tapSkips(text);
  const count = (k) => {
    const m = new RegExp(`^# ${k} (\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  };
  summary = `${count('pass')} passed, ${count('fail') + count('cancelled')} failed, ${count('skipped') + count('todo')} skipped`;
} catch {
  /* the runner died before writing */
}
rmSync(tmp, { recursive: true, force: true });
if (skips.length) {
  console.log(`\nskipped (${skips.length}):`);
  for (const s of skips) console.log(`  - ${s.name}${s.kind === 'todo' ? ' [todo]' : ''}: ${s.reason || '(no reason given)'}`);
}
if (summary) {
  console.log(`\ntests: ${summary}`);
  if (process.env.SPARK_TEST_SUMMARY) writeFileSync(process.env.SPARK_TEST_SUMMARY, summary + '\n');
}
process.exit(r.status ?? 1);
