import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { detectNative } from '../src/backend/native.js';

// tfjs-node locates its addon through node-pre-gyp, which reads gyp options from process.argv: a command line
// with `--dir x` (as `node dist/bench/probe-benchmark.js --dir /tmp/x` once had) must not break the native backend.
test('the native backend loads whatever the command line holds', (t) => {
  if (!detectNative('tfjs-node').ready) {
    t.skip('tfjs-node addon not built (run `npm run setup:native`)');
    return;
  }
  const here = path.dirname(fileURLToPath(import.meta.url));
  const init = path.join(here, '..', 'src', 'backend', 'init.js');
  const script = `const { initBackend } = await import(${JSON.stringify(init)}); const i = await initBackend('tensorflow'); console.log('BACKEND=' + i.name);`;
  const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script, '--', 'script-name', '--dir', '/nonexistent', '--debug', '--target=1.0.0'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /BACKEND=tensorflow/);
});
