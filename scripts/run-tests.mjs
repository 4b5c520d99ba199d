#!/usr/bin/env node
// Runs the compiled test suite (dist/test/**/*.test.js) with Node's built-in runner, one file at a time
// (tests share 2 cores and TensorFlow's thread pool). Pass file filters as arguments: `npm test -- model`.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const testDir = path.join(root, 'dist', 'test');
function walk(d) {
  return readdirSync(d).flatMap((n) => {
    const p = path.join(d, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}
const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
let files = walk(testDir).sort();
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));
if (!files.length) {
  console.error('run-tests: no test files found under dist/test (did `npm run build` run?)');
  process.exit(1);
}
console.error(`run-tests: ${files.length} files, backend=${process.env.SPARK_BACKEND ?? 'auto'}`);
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  cwd: root,
  env: { ...process.env, SPARK_TEST: '1' },
});
process.exit(r.status ?? 1);
