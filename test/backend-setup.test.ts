/** scripts/setup-native.mjs: idempotent re-run, and a clear failure (cause + fix, exit 1). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detectNative } from '../src/backend/native.js';
import { packageRoot } from '../src/util/paths.js';

const SCRIPT = path.join(packageRoot(), 'scripts', 'setup-native.mjs');

test('a missing user-supplied wheel fails with the cause and the fix, touching nothing', () => {
  const cache = mkdtempSync(path.join(os.tmpdir(), 'spark-native-'));
  try {
    const r = spawnSync(process.execPath, [SCRIPT, '--wheel', path.join(cache, 'tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl')], {
      cwd: packageRoot(), encoding: 'utf8', env: { ...process.env, SPARK_NATIVE_CACHE: cache }, timeout: 60_000,
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /setup-native: FAILED: wheel not found: .*tensorflow_cpu-2\.21\.0/);
    assert.match(r.stderr, /\n {2}fix: pass an existing tensorflow-cpu 2\.21\.0 wheel/);
    const wrong = spawnSync(process.execPath, [SCRIPT, '--wheel', SCRIPT], { cwd: packageRoot(), encoding: 'utf8', env: { ...process.env, SPARK_NATIVE_CACHE: cache } });
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /is not a tensorflow-cpu 2\.21\.0 wheel/);
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test('a second run finds everything in place and only re-verifies', (t) => {
  const c = detectNative('tfjs-node');
  if (!c.ready) {
    t.skip(`native backend not set up here: ${c.reason} (${c.fix})`);
    return;
  }
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [SCRIPT], { cwd: packageRoot(), encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  for (const step of ['extract', 'stage', 'patch', 'build']) {
    assert.match(r.stdout, new RegExp(`setup-native: ${step} +.*(in place|in /)`), `${step} detected in place`);
  }
  assert.match(r.stdout, /verify +backend 'tensorflow', TF 2\.21\.0/);
  assert.match(r.stdout, /setup-native: done/);
  assert.doesNotMatch(r.stdout, /built from source|applied:|→ /, 'nothing redone');
  t.diagnostic(`warm run took ${Date.now() - t0} ms`);
});
