/** `doctor()` report shape, the selection rule it reports, and `spark doctor` exit codes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { doctor, formatDoctor, selectFrom, type BackendStatus } from '../src/backend/doctor.js';
import { initBackend } from '../src/backend/init.js';
import { detectNative } from '../src/backend/native.js';
import { packageRoot } from '../src/util/paths.js';

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const MAIN = new URL(`../src/cli/main${EXT}`, import.meta.url).pathname;

function spark(args: string[], env: Record<string, string | undefined> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...process.execArgv, MAIN, ...args], {
    cwd: packageRoot(), encoding: 'utf8', env: { ...process.env, SPARK_BACKEND: undefined, SPARK_DISABLE_NATIVE: undefined, ...env }, timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('doctor() reports every backend with versions, and restores the active backend', async () => {
  await initBackend('cpu');
  const r = await doctor({ request: 'cpu' });
  assert.equal(tf.getBackend(), 'cpu', 'active backend restored');
  assert.deepEqual(r.backends.map((b) => b.id), ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu', 'torch']);
  assert.equal(r.request, 'cpu');
  assert.deepEqual(r.selected, { ok: true, id: 'cpu', reason: 'requested' });
  assert.equal(r.versions.tfjs, '4.22.0');
  assert.equal(r.versions.node, process.versions.node);
  assert.ok(r.versions.napi && r.versions.napi !== '?');
  const wasm = r.backends[2]!;
  assert.equal(wasm.available, true);
  assert.equal(wasm.trainable, true, 'wasm training kernels registered');
  assert.equal(wasm.threads, 1);
  assert.equal(r.backends[3]!.available, true);
  for (const b of r.backends) {
    if (!b.available) {
      assert.ok(b.reason && b.reason.length > 5, `${b.id} has a reason`);
      assert.ok(b.fix && b.fix.length > 3, `${b.id} has a fix`);
    }
  }
  const native = detectNative('tfjs-node');
  const tfs = r.backends[1]!;
  assert.equal(tfs.installed, native.installed);
  if (native.ready) {
    assert.equal(tfs.available, true, tfs.reason);
    assert.equal(tfs.tfVersion, '2.21.0');
    assert.equal(r.versions.tf, '2.21.0');
  } else {
    assert.equal(tfs.available, false);
    assert.match(tfs.fix ?? '', /setup:native|npm ci|SPARK_DISABLE_NATIVE/);
  }
  assert.equal(r.sharp.ok, true, r.sharp.error);
  assert.match(r.sharp.libvips ?? '', /^\d+\.\d+/);
  const text = formatDoctor(r);
  assert.match(text, /backends:/);
  assert.match(text, /libvips/);
  assert.match(text, /backend 'cpu' → cpu/);
});

function st(id: BackendStatus['id'], available: boolean, extra: Partial<BackendStatus> = {}): BackendStatus {
  return { id, provider: id, installed: true, available, trainable: available, ...(available ? {} : { reason: `${id} missing`, fix: `fix ${id}` }), ...extra };
}

test('selectFrom: auto prefers GPU, then tfjs-node, then wasm that can train, then cpu', () => {
  const all = [st('tensorflow-gpu', true, { tfVersion: '2.9.1' }), st('tensorflow', true, { tfVersion: '2.21.0' }), st('wasm', true), st('cpu', true)];
  assert.equal(selectFrom('auto', all).id, 'tensorflow-gpu');
  assert.equal(selectFrom('tensorflow', all).id, 'tensorflow-gpu');
  const noGpu = [st('tensorflow-gpu', false), ...all.slice(1)];
  assert.equal(selectFrom('auto', noGpu).id, 'tensorflow');
  const noNative = [st('tensorflow-gpu', false), st('tensorflow', false), st('wasm', true), st('cpu', true)];
  const a = selectFrom('auto', noNative);
  assert.equal(a.id, 'wasm');
  assert.match(a.reason, /tensorflow missing \(fix: fix tensorflow\)/);
  const wasmNoTrain = [st('tensorflow-gpu', false), st('tensorflow', false), st('wasm', true, { trainable: false }), st('cpu', true)];
  assert.equal(selectFrom('auto', wasmNoTrain).id, 'cpu');
  const t = selectFrom('tensorflow', noNative);
  assert.equal(t.ok, false);
  assert.equal(t.fix, 'fix tensorflow');
  assert.equal(selectFrom('cpu', noNative).id, 'cpu');
});

test('spark doctor: exit 3 when the requested backend is unusable, with the fix', () => {
  const r = spark(['doctor', '--backend', 'tensorflow'], { SPARK_DISABLE_NATIVE: '1' });
  assert.equal(r.status, 3, r.stderr);
  assert.match(r.stdout, /UNUSABLE: backend 'tensorflow' is unusable/);
  assert.match(r.stdout, /fix: unset SPARK_DISABLE_NATIVE/);
  const env = spark(['doctor'], { SPARK_DISABLE_NATIVE: '1', SPARK_BACKEND: 'tensorflow' });
  assert.equal(env.status, 3, 'SPARK_BACKEND is the default request');
});

test('spark doctor --json and usage errors', () => {
  const r = spark(['doctor', '--json', '--backend', 'wasm'], { SPARK_DISABLE_NATIVE: '1' });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { request: string; selected: { ok: boolean; id: string }; backends: BackendStatus[] };
  assert.equal(j.request, 'wasm');
  assert.deepEqual([j.selected.ok, j.selected.id], [true, 'wasm']);
  assert.equal(j.backends.length, 5);
  const bad = spark(['doctor', '--backend', 'gpu']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown backend 'gpu'/);
});
