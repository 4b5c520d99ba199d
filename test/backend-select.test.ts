/**
 * Backend selection: explicit requests, `auto` and its reasons, BackendError with the fix, thread settings, and
 * that tfjs-node registers into the same tfjs instance as `import * as tf from '@tensorflow/tfjs'`.
 * Native loading is irreversible, so those cases run in child processes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { initBackend, currentBackend, parseBackendRequest } from '../src/backend/init.js';
import { detectNative } from '../src/backend/native.js';
import { BackendError } from '../src/util/errors.js';
import { packageRoot } from '../src/util/paths.js';

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const INIT_URL = new URL(`../src/backend/init${EXT}`, import.meta.url).href;

interface ChildResult {
  name?: string;
  provider?: string;
  reason?: string;
  threads?: number;
  native?: boolean;
  tfVersion?: string;
  active?: string;
  sameEngine?: boolean;
  envThreads?: string;
  error?: string;
  message?: string;
  fix?: string;
  exitCode?: number;
}

/** Run initBackend(req, { threads }) in a fresh process with extra env; returns what it reported. */
function inChild(req: string, env: Record<string, string | undefined>, threads?: number): ChildResult {
  const script = `
    import { createRequire } from 'node:module';
    const { initBackend } = await import(${JSON.stringify(INIT_URL)});
    const tf = await import('@tensorflow/tfjs');
    try {
      const info = await initBackend(${JSON.stringify(req)}, { threads: ${threads ?? 'null'} });
      let sameEngine = null;
      if (info.name === 'tensorflow') {
        const require = createRequire(process.cwd() + '/package.json');
        const node = require('@tensorflow/tfjs-node');
        const t = tf.tensor([1, 2, 3]);
        sameEngine = node.engine() === tf.engine() && t.square().sum().dataSync()[0] === 14 && tf.engine().backendName === 'tensorflow';
      }
      console.log(JSON.stringify({ ...info, active: tf.getBackend(), sameEngine, envThreads: process.env.TF_NUM_INTRAOP_THREADS }));
    } catch (e) {
      console.log(JSON.stringify({ error: e.name, message: e.message, fix: e.fix, exitCode: e.exitCode }));
    }`;
  const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], {
    cwd: packageRoot(),
    encoding: 'utf8',
    env: { ...process.env, SPARK_DISABLE_NATIVE: undefined, TF_NUM_INTRAOP_THREADS: undefined, ...env },
    timeout: 120_000,
  });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(last) as ChildResult;
}

test('cpu on request, in-process; switching to wasm and back', async () => {
  const info = await initBackend('cpu');
  assert.equal(info.name, 'cpu');
  assert.equal(info.provider, 'cpu');
  assert.equal(info.native, false);
  assert.equal(info.threads, 1);
  assert.match(info.reason, /requested/);
  assert.equal(tf.getBackend(), 'cpu');
  assert.equal(currentBackend(), info);
  assert.equal(await initBackend('cpu'), info, 'a second identical request returns the same info');
  const w = await initBackend('wasm');
  assert.equal(w.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.equal(w.threads, 1, 'tfjs keeps wasm single-threaded in Node');
  const c = await initBackend('cpu');
  assert.equal(c.name, 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
});

test('parseBackendRequest rejects unknown names', () => {
  assert.equal(parseBackendRequest('wasm', 'x'), 'wasm');
  assert.throws(() => parseBackendRequest('gpu', 'runtime.backend'), (e: unknown) => e instanceof BackendError && /runtime\.backend: unknown backend 'gpu'/.test(e.message));
});

test('auto without the native addon picks wasm and says why', () => {
  const r = inChild('auto', { SPARK_DISABLE_NATIVE: '1' });
  assert.equal(r.error, undefined, r.message);
  assert.equal(r.name, 'wasm');
  assert.equal(r.active, 'wasm');
  assert.equal(r.native, false);
  assert.match(r.reason!, /disabled by SPARK_DISABLE_NATIVE/);
  assert.match(r.reason!, /using wasm .*training kernels/);
});

test("'tensorflow' requested but unusable → BackendError (exit 3) with the fix", () => {
  const r = inChild('tensorflow', { SPARK_DISABLE_NATIVE: '1' });
  assert.equal(r.error, 'BackendError');
  assert.equal(r.exitCode, 3);
  assert.match(r.message!, /^backend 'tensorflow' is unusable: .*SPARK_DISABLE_NATIVE.*\(fix: /);
  assert.ok(r.fix, 'fix text');
});

test("'tensorflow' on the native addon: TF 2.21, threads, same tfjs instance", (t) => {
  const c = detectNative('tfjs-node');
  if (!c.ready) {
    t.skip(`tensorflow backend not available here: ${c.reason} (${c.fix})`);
    return;
  }
  const r = inChild('tensorflow', {}, 1);
  assert.equal(r.error, undefined, r.message);
  assert.equal(r.name, 'tensorflow');
  assert.equal(r.provider, 'tfjs-node');
  assert.equal(r.native, true);
  assert.equal(r.active, 'tensorflow');
  assert.equal(r.tfVersion, '2.21.0');
  assert.equal(r.threads, 1);
  assert.equal(r.envThreads, '1', 'TF_NUM_INTRAOP_THREADS set before the addon loads');
  assert.equal(r.sameEngine, true, 'tfjs-node shares the engine of @tensorflow/tfjs');
  assert.match(r.reason!, /requested/);
  const a = inChild('auto', {});
  assert.equal(a.name, 'tensorflow');
  assert.match(a.reason!, /tfjs-node addon built and loaded.*TensorFlow 2\.21\.0/);
});

test('test helper honours SPARK_BACKEND', () => {
  const helper = new URL(`./helpers/backend${EXT}`, import.meta.url).href;
  const script = `const { testBackend } = await import(${JSON.stringify(helper)}); const i = await testBackend(); console.log(i.name);`;
  const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], {
    cwd: packageRoot(), encoding: 'utf8', env: { ...process.env, SPARK_BACKEND: 'cpu' }, timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').pop(), 'cpu');
});
