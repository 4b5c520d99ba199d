/**
 * scripts/setup-torch.mjs (the torch backend's addon build): its failure modes (one `FAILED:` line with the cause, a
 * `fix:` line, exit 1, nothing cached), and a real build of a small placeholder addon against .venv-ref's torch:
 * the cache entry and build.json, the idempotent second run, ABI-mismatch detection, and findTorchAddon's choice.
 * The placeholder lives in a temp folder (the backend's real sources are native/torch/*.cc).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findTorchAddon, hashTorchSources, type TorchBuildInfo } from '../src/backend/torch/addon-path.js';
import { packageRoot } from '../src/util/paths.js';

const SCRIPT = path.join(packageRoot(), 'scripts', 'setup-torch.mjs');
const VENV_PY = path.join(packageRoot(), '.venv-ref', 'bin', 'python');

function setup(args: string[], env: Record<string, string | undefined>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [SCRIPT, ...args], {
    cwd: packageRoot(), encoding: 'utf8', timeout: 300_000,
    env: { ...process.env, SPARK_TORCH_PYTHON: undefined, SPARK_TORCH_ADDON: undefined, CXX: undefined, ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tmp(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

function hasTorch(): boolean {
  return existsSync(VENV_PY) && spawnSync(VENV_PY, ['-c', 'import torch'], { timeout: 120_000 }).status === 0;
}

/** A one-failure check: exit 1, exactly one FAILED line matching `re`, a fix line, and an empty cache. */
function assertFails(r: ReturnType<typeof setup>, cache: string, re: RegExp, fix: RegExp): void {
  assert.equal(r.status, 1, r.stdout + r.stderr);
  const failed = r.stderr.split('\n').filter((l) => l.startsWith('setup-torch: FAILED: '));
  assert.equal(failed.length, 1, r.stderr);
  assert.match(failed[0]!, re);
  assert.match(r.stderr, fix);
  assert.deepEqual(existsSync(cache) ? readdirSync(cache) : [], [], 'nothing cached');
}

const PLACEHOLDER = `#include <node_api.h>
#include <ATen/ATen.h>
static napi_value Sum(napi_env env, napi_callback_info) {
  napi_value v;
  napi_create_double(env, at::ones({3, 4}).sum().item<double>(), &v);
  return v;
}
NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "sum", NAPI_AUTO_LENGTH, Sum, nullptr, &fn);
  napi_set_named_property(env, exports, "sum", fn);
  return exports;
}
`;

test('no python, or a python without torch: exit 1 with the cause and the fix', () => {
  const cache = tmp('spark-torch-cache-');
  const dir = tmp('spark-torch-py-');
  try {
    const none = setup([], { SPARK_TORCH_CACHE: cache, SPARK_TORCH_PYTHON: path.join(dir, 'no-such-python') });
    assertFails(none, cache, /no PyTorch: Python '.*no-such-python' \(SPARK_TORCH_PYTHON\) not found/, /\n {2}fix: install PyTorch/);
    const py3 = spawnSync('python3', ['--version']);
    if (py3.error) return; // no python3 at all: the case above covers it
    // A python whose `import torch` fails (a shadowing package raises ImportError), whatever the machine has installed.
    mkdirSync(path.join(dir, 'shadow', 'torch'), { recursive: true });
    writeFileSync(path.join(dir, 'shadow', 'torch', '__init__.py'), 'raise ImportError("torch is not installed (test)")\n');
    const wrapper = path.join(dir, 'python');
    writeFileSync(wrapper, `#!/bin/sh\nPYTHONPATH=${JSON.stringify(path.join(dir, 'shadow'))} exec python3 "$@"\n`);
    chmodSync(wrapper, 0o755);
    const noTorch = setup([], { SPARK_TORCH_CACHE: cache, SPARK_TORCH_PYTHON: wrapper });
    assertFails(noTorch, cache, /no PyTorch in '.*python' \(SPARK_TORCH_PYTHON\): ImportError: torch is not installed \(test\)/, /fix: pip install torch/);
  } finally {
    rmSync(cache, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no compiler, no sources, no Node headers, bad options: exit 1 (2 for options) with the cause', (t) => {
  if (!hasTorch()) {
    t.skip('no torch in .venv-ref (run `npm run setup:reference`)');
    return;
  }
  const cache = tmp('spark-torch-cache-');
  const src = tmp('spark-torch-src-');
  try {
    writeFileSync(path.join(src, 'addon.cc'), PLACEHOLDER);
    assertFails(setup(['--sources', src], { SPARK_TORCH_CACHE: cache, CXX: 'no-such-g++' }), cache, /no C\+\+ compiler: 'no-such-g\+\+' not found/, /fix: install g\+\+/);
    const empty = tmp('spark-torch-empty-');
    assertFails(setup(['--sources', empty], { SPARK_TORCH_CACHE: cache }), cache, /no C\+\+ sources \(\*\.cc\) in /, /fix: /);
    rmSync(empty, { recursive: true, force: true });
    assertFails(setup(['--sources', src], { SPARK_TORCH_CACHE: cache, SPARK_NODE_HEADERS: src }), cache, /N-API headers are missing: node_api\.h/, /SPARK_NODE_HEADERS/);
    const bad = setup(['--devcie', 'cpu'], { SPARK_TORCH_CACHE: cache });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /Unknown option '--devcie'/);
  } finally {
    rmSync(cache, { recursive: true, force: true });
    rmSync(src, { recursive: true, force: true });
  }
});

test('builds a placeholder addon into the cache, is idempotent, and findTorchAddon picks it', (t) => {
  if (!hasTorch()) {
    t.skip('no torch in .venv-ref (run `npm run setup:reference`)');
    return;
  }
  const cache = tmp('spark-torch-cache-');
  const src = tmp('spark-torch-src-');
  try {
    writeFileSync(path.join(src, 'addon.cc'), PLACEHOLDER);
    assert.equal(findTorchAddon({ cacheDir: cache, sourcesDir: src }).path, null);
    assert.match(findTorchAddon({ cacheDir: cache, sourcesDir: src }).reason, /not built .*npm run setup:torch/);
    const first = setup(['--sources', src, '--skip-check'], { SPARK_TORCH_CACHE: cache });
    assert.equal(first.status, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /setup-torch: build +built spark_torch\.node/);
    assert.match(first.stdout, /setup-torch: load +the addon loads/);
    const keys = readdirSync(cache);
    assert.equal(keys.length, 1, `one cache entry, no temp folder left: ${keys.join(', ')}`);
    const dir = path.join(cache, keys[0]!);
    const info = JSON.parse(readFileSync(path.join(dir, 'build.json'), 'utf8')) as TorchBuildInfo;
    assert.equal(info.sourcesHash, hashTorchSources(src), 'build.json records the same sources hash addon-path computes');
    assert.match(info.torchVersion, /^\d+\.\d+/);
    assert.equal(info.nodeModules, process.versions.modules);
    assert.equal(info.cudaVersion, null, '.venv-ref has the CPU build');
    assert.equal(info.cxx11Abi, 1);
    assert.match(info.command, /-D_GLIBCXX_USE_CXX11_ABI=1 .*-Wl,-rpath,.*torch.*-ltorch_cpu -lc10/);
    // The built addon computes with libtorch.
    const m = { exports: {} as { sum?: () => number } };
    process.dlopen(m, path.join(dir, 'spark_torch.node'));
    assert.equal(m.exports.sum!(), 12);

    const second = setup(['--sources', src, '--skip-check'], { SPARK_TORCH_CACHE: cache });
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stdout, /setup-torch: build +up to date: /);
    assert.doesNotMatch(second.stdout, /compiling/);

    const found = findTorchAddon({ cacheDir: cache, sourcesDir: src });
    assert.equal(found.path, path.join(dir, 'spark_torch.node'));
    assert.match(found.reason, /against torch .* \(CPU\)/);
    // Sources changed since the build: not used, and the reason says to rebuild.
    writeFileSync(path.join(src, 'addon.cc'), PLACEHOLDER + '// changed\n');
    const stale = findTorchAddon({ cacheDir: cache, sourcesDir: src });
    assert.equal(stale.path, null);
    assert.match(stale.reason, /built from other sources .*npm run setup:torch/);
    // SPARK_TORCH_ADDON overrides the cache; a wrong one says so.
    process.env['SPARK_TORCH_ADDON'] = path.join(src, 'missing.node');
    try {
      assert.match(findTorchAddon({ cacheDir: cache, sourcesDir: src }).reason, /SPARK_TORCH_ADDON=.*missing\.node: no such file/);
    } finally {
      delete process.env['SPARK_TORCH_ADDON'];
    }
  } finally {
    rmSync(cache, { recursive: true, force: true });
    rmSync(src, { recursive: true, force: true });
  }
});

test('an addon compiled for the other C++ ABI is detected when it loads, and never cached', (t) => {
  if (!hasTorch()) {
    t.skip('no torch in .venv-ref (run `npm run setup:reference`)');
    return;
  }
  const cache = tmp('spark-torch-cache-');
  const src = tmp('spark-torch-src-');
  try {
    // Forcing the old ABI makes at::TensorBase::toString() (returns std::string) an unresolvable symbol.
    writeFileSync(path.join(src, 'addon.cc'), `#undef _GLIBCXX_USE_CXX11_ABI
#define _GLIBCXX_USE_CXX11_ABI 0
#include <string>
${PLACEHOLDER.replace('napi_value v;', 'napi_value v;\n  std::string s = at::ones({1}).toString();')}`);
    const r = setup(['--sources', src, '--skip-check'], { SPARK_TORCH_CACHE: cache });
    assertFails(r, cache, /the built addon does not load \(ABI mismatch with torch .*\): .*undefined symbol/, /fix: .*C\+\+ ABI/);
  } finally {
    rmSync(cache, { recursive: true, force: true });
    rmSync(src, { recursive: true, force: true });
  }
});
