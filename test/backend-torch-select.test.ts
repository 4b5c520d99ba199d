/**
 * Selection of the torch backend without loading it: device requests, `planTorch` / `previewBackend` from a build
 * record, `initBackend('torch')` failing with a BackendError (exit 3) and the fix, doctor's selection rule, and the
 * CLI (`spark doctor --backend torch`, `spark run --dry-run`). The builds here are fake cache entries (a build.json
 * beside an empty file): nothing is ever loaded from them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initBackend, parseBackendRequest, previewBackend } from '../src/backend/init.js';
import { selectFrom, type BackendStatus } from '../src/backend/doctor.js';
import { deviceRequest, parseDeviceRequest, planTorch } from '../src/backend/torch-load.js';
import { findTorchAddon, hashTorchSources } from '../src/backend/torch/addon-path.js';
import { nvidiaGpuVisible } from '../src/backend/native.js';
import { BackendError } from '../src/util/errors.js';
import { packageRoot } from '../src/util/paths.js';

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const MAIN = new URL(`../src/cli/main${EXT}`, import.meta.url).pathname;

/** Run `fn` with env overrides, restoring the environment afterwards. */
async function withEnv<T>(env: Record<string, string | undefined>, fn: () => T | Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
}

/** A cache with one fake build record for this Node and this checkout's sources. */
function fakeCache(cudaVersion: string | null): string {
  const cache = mkdtempSync(path.join(os.tmpdir(), 'spark-torch-sel-'));
  const dir = path.join(cache, 'abc123');
  mkdirSync(dir);
  const src = path.join(packageRoot(), 'native', 'torch');
  const sourcesHash = existsSync(src) && readdirSync(src).some((n) => n.endsWith('.cc')) ? hashTorchSources(src) : 'none';
  writeFileSync(path.join(dir, 'spark_torch.node'), '');
  writeFileSync(path.join(dir, 'build.json'), JSON.stringify({
    key: 'abc123', torchVersion: cudaVersion ? '2.11.0+cu130' : '2.13.0+cpu', cudaVersion, cxx11Abi: 1, python: '/nonexistent/python',
    torchLib: cache, sourcesHash, nodeVersion: process.version, nodeModules: process.versions.modules, arch: process.arch,
    compiler: 'g++ 12', command: 'g++ …', builtAt: new Date().toISOString(),
  }));
  return cache;
}

test('findTorchAddon skips a build whose torch libraries are gone (a deleted clone\'s .venv-ref) and says so when none is left', () => {
  const cache = fakeCache(null);
  try {
    const good = path.join(cache, 'abc123');
    // a newer build of the same sources against a torch that no longer exists
    const stale = path.join(cache, 'def456');
    mkdirSync(stale);
    writeFileSync(path.join(stale, 'spark_torch.node'), '');
    const info = JSON.parse(readFileSync(path.join(good, 'build.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(path.join(stale, 'build.json'), JSON.stringify({ ...info, key: 'def456', torchLib: path.join(cache, 'gone', 'torch', 'lib'), builtAt: new Date(Date.now() + 60_000).toISOString() }));
    const src = path.join(packageRoot(), 'native', 'torch');
    assert.equal(findTorchAddon({ cacheDir: cache, sourcesDir: src }).path, path.join(good, 'spark_torch.node'), 'the older build whose torch is there');
    rmSync(good, { recursive: true, force: true });
    const none = findTorchAddon({ cacheDir: cache, sourcesDir: src });
    assert.equal(none.path, null);
    assert.match(none.reason, /link a torch that is no longer there .*gone.*npm run setup:torch/);
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test('device requests: auto | cpu | cuda | cuda:N; $SPARK_TORCH_DEVICE applies when the spec says auto', async () => {
  assert.equal(parseBackendRequest('torch', 'runtime.backend'), 'torch');
  for (const d of ['auto', 'cpu', 'cuda', 'cuda:3']) assert.equal(parseDeviceRequest(d, 'x'), d);
  assert.throws(() => parseDeviceRequest('gpu', 'runtime.device'), (e: unknown) => e instanceof BackendError && /runtime\.device: unknown device 'gpu'/.test(e.message));
  await withEnv({ SPARK_TORCH_DEVICE: 'cuda:1' }, () => {
    assert.equal(deviceRequest('auto'), 'cuda:1');
    assert.equal(deviceRequest(null), 'cuda:1');
    assert.equal(deviceRequest('cpu'), 'cpu', 'the spec wins over the environment');
  });
  await withEnv({ SPARK_TORCH_DEVICE: 'tpu' }, () => {
    assert.throws(() => deviceRequest(null), /SPARK_TORCH_DEVICE: unknown device 'tpu'/);
  });
});

test("initBackend('torch') without a built addon: BackendError, exit 3, fix npm run setup:torch", async () => {
  const empty = mkdtempSync(path.join(os.tmpdir(), 'spark-torch-none-'));
  try {
    await withEnv({ SPARK_TORCH_CACHE: empty, SPARK_TORCH_ADDON: undefined, SPARK_TORCH_DEVICE: undefined }, async () => {
      await assert.rejects(initBackend('torch'), (e: unknown) => {
        assert.ok(e instanceof BackendError);
        assert.equal(e.exitCode, 3);
        assert.match(e.message, /^backend 'torch' is unusable: the torch addon is not built \(no build in .*npm run setup:torch/);
        assert.equal(e.fix, 'npm run setup:torch');
        return true;
      });
      assert.match(previewBackend('torch'), /^UNUSABLE: backend 'torch': the torch addon is not built/);
      assert.doesNotMatch(previewBackend('auto'), /^torch/, 'auto never takes an unbuilt torch');
    });
    await withEnv({ SPARK_TORCH_ADDON: path.join(empty, 'x.node') }, async () => {
      await assert.rejects(initBackend('torch'), /SPARK_TORCH_ADDON=.*x\.node: no such file/);
    });
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('planTorch / previewBackend: which device a CPU or a CUDA build gets, and why', async () => {
  const cpuCache = fakeCache(null);
  const cudaCache = fakeCache('13.0');
  try {
    await withEnv({ SPARK_TORCH_CACHE: cpuCache, SPARK_TORCH_ADDON: undefined, SPARK_TORCH_DEVICE: undefined, SPARK_DISABLE_NATIVE: undefined }, () => {
      const auto = planTorch('auto');
      assert.equal(auto.device, 'cpu');
      assert.match(auto.reason, /torch 2\.13\.0\+cpu is a CPU build/);
      const cuda = planTorch('cuda');
      assert.equal(cuda.device, null);
      assert.match(cuda.reason, /device cuda requested, but the addon was built against torch 2\.13\.0\+cpu, a CPU build/);
      assert.match(previewBackend('torch'), /^torch on cpu: torch 2\.13\.0\+cpu is a CPU build \(PyTorch 2\.13\.0\+cpu\)/);
      assert.match(previewBackend('torch', { device: 'cuda:1' }), /^UNUSABLE: backend 'torch': device cuda:1 requested/);
      assert.doesNotMatch(previewBackend('auto'), /^torch/, 'auto takes torch only on CUDA');
    });
    await withEnv({ SPARK_TORCH_CACHE: cudaCache, SPARK_TORCH_ADDON: undefined, SPARK_TORCH_DEVICE: undefined, SPARK_DISABLE_NATIVE: undefined }, () => {
      const gpu = nvidiaGpuVisible();
      const auto = planTorch('auto');
      assert.equal(auto.device, gpu ? 'cuda:0' : 'cpu');
      assert.match(auto.reason, gpu ? /has CUDA 13\.0 and a GPU is visible/ : /no NVIDIA GPU visible/);
      assert.equal(planTorch('cuda:2').device, gpu ? 'cuda:2' : null);
      if (gpu) {
        assert.match(previewBackend('auto'), /^torch on cuda:0, TF32 on: /);
        assert.match(previewBackend('auto', { tf32: false }), /TF32 off/);
        assert.doesNotMatch(previewBackend('auto', { device: 'cpu' }), /^torch/, 'auto with device cpu keeps the old order');
      } else {
        assert.match(planTorch('cuda').reason, /no NVIDIA GPU is visible/);
        assert.doesNotMatch(previewBackend('auto'), /^torch/);
      }
    });
  } finally {
    rmSync(cpuCache, { recursive: true, force: true });
    rmSync(cudaCache, { recursive: true, force: true });
  }
});

function st(id: BackendStatus['id'], available: boolean, extra: Partial<BackendStatus> = {}): BackendStatus {
  return { id, provider: id, installed: true, available, trainable: available, ...(available ? {} : { reason: `${id} missing`, fix: `fix ${id}` }), ...extra };
}

test('selectFrom: auto takes torch on CUDA first, never torch on the CPU; torch on request', async () => {
  const rest = [st('tensorflow-gpu', false), st('tensorflow', true, { tfVersion: '2.21.0' }), st('wasm', true), st('cpu', true)];
  const cudaTorch = st('torch', true, { device: 'cuda:0', torchVersion: '2.11.0+cu130' });
  const cpuTorch = st('torch', true, { device: 'cpu', torchVersion: '2.13.0+cpu' });
  await withEnv({ SPARK_DISABLE_NATIVE: undefined }, () => {
    const a = selectFrom('auto', [...rest, cudaTorch]);
    assert.equal(a.id, 'torch');
    assert.match(a.reason, /torch on cuda:0: PyTorch 2\.11\.0\+cu130 with CUDA/);
    assert.equal(selectFrom('auto', [...rest, cpuTorch]).id, 'tensorflow');
    assert.equal(selectFrom('auto', rest).id, 'tensorflow', 'a report without torch');
    assert.deepEqual(selectFrom('torch', [...rest, cpuTorch]), { ok: true, id: 'torch', reason: 'requested; torch on cpu (PyTorch 2.13.0+cpu)' });
    const no = selectFrom('torch', [...rest, st('torch', false)]);
    assert.deepEqual(no, { ok: false, reason: "backend 'torch' is unusable: torch missing", fix: 'fix torch' });
  });
});

function spark(args: string[], env: Record<string, string | undefined>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...process.execArgv, MAIN, ...args], {
    cwd: packageRoot(), encoding: 'utf8', env: { ...process.env, SPARK_BACKEND: undefined, SPARK_TORCH_ADDON: undefined, SPARK_TORCH_DEVICE: undefined, ...env }, timeout: 180_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('spark doctor --backend torch and spark run --dry-run name the torch backend, its device, or why not', () => {
  const empty = mkdtempSync(path.join(os.tmpdir(), 'spark-torch-none-'));
  try {
    const d = spark(['doctor', '--backend', 'torch'], { SPARK_TORCH_CACHE: empty, SPARK_DISABLE_NATIVE: '1' });
    assert.equal(d.status, 3, d.stdout + d.stderr);
    assert.match(d.stdout, /-- +torch +/);
    assert.match(d.stdout, /UNUSABLE: backend 'torch' is unusable: /);
    assert.match(d.stdout, /fix: (npm run setup:torch|npm run build|pip install torch)/);
    const bad = spark(['doctor', '--device', 'gpu'], {});
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--device: unknown device 'gpu'/);
    const spec = path.join(packageRoot(), 'experiments', 'quickstart.yaml');
    const r = spark(['run', spec, '--dry-run', '--set', 'runtime.backend=torch', '--set', 'runtime.device=cuda:1'], { SPARK_TORCH_CACHE: empty });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /backend +torch, device cuda:1, seed/);
    assert.match(r.stdout, /would use +UNUSABLE: backend 'torch': the torch addon is not built/);
    const auto = spark(['run', spec, '--dry-run'], { SPARK_TORCH_CACHE: empty, SPARK_DISABLE_NATIVE: '1' });
    assert.match(auto.stdout, /would use +wasm, else cpu \(/);
    const badDevice = spark(['run', spec, '--dry-run', '--set', 'runtime.device=gpu'], {});
    assert.equal(badDevice.status, 2);
    assert.match(badDevice.stderr, /runtime\.device=gpu: must match the pattern/);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('with the addon built (npm run setup:torch): torch on cpu in a child process, cuda refused on a CPU build, doctor ok', (t) => {
  const loc = findTorchAddon();
  const moduleFile = new URL(`../src/backend/torch/index${EXT}`, import.meta.url).pathname;
  if (!loc.path || !existsSync(moduleFile)) {
    t.skip(`torch backend not set up here: ${!existsSync(moduleFile) ? 'no src/backend/torch module' : loc.reason}`);
    return;
  }
  const initUrl = new URL(`../src/backend/init${EXT}`, import.meta.url).href;
  const child = (device: string) => {
    const script = `
      const { initBackend } = await import(${JSON.stringify(initUrl)});
      const tf = await import('@tensorflow/tfjs');
      try {
        const info = await initBackend('torch', { device: ${JSON.stringify(device)} });
        const sum = tf.add(tf.tensor([1, 2]), tf.tensor([3, 4])).dataSync();
        console.log(JSON.stringify({ ...info, active: tf.getBackend(), sum: Array.from(sum) }));
      } catch (e) {
        console.log(JSON.stringify({ error: e.name, message: e.message, exitCode: e.exitCode }));
      }`;
    const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], {
      cwd: packageRoot(), encoding: 'utf8', timeout: 120_000, env: { ...process.env, SPARK_TORCH_DEVICE: undefined },
    });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  };
  const cpu = child('cpu');
  assert.equal(cpu['error'], undefined, String(cpu['message']));
  assert.deepEqual([cpu['name'], cpu['provider'], cpu['device'], cpu['active'], cpu['native']], ['torch', 'libtorch', 'cpu', 'torch', true]);
  assert.deepEqual(cpu['sum'], [4, 6]);
  assert.match(String(cpu['reason']), /^requested; torch on cpu: device cpu requested \(PyTorch \d/);
  if (loc.build?.cudaVersion == null) {
    const cuda = child('cuda');
    assert.equal(cuda['error'], 'BackendError');
    assert.equal(cuda['exitCode'], 3);
    assert.match(String(cuda['message']), /device cuda requested, but the addon was built against torch .*, a CPU build/);
  }
  const d = spark(['doctor', '--backend', 'torch', '--device', 'cpu', '--json'], {});
  assert.equal(d.status, 0, d.stdout + d.stderr);
  const j = JSON.parse(d.stdout) as { selected: { ok: boolean; id: string }; backends: BackendStatus[] };
  assert.deepEqual([j.selected.ok, j.selected.id], [true, 'torch']);
  const torch = j.backends.find((b) => b.id === 'torch')!;
  assert.equal(torch.available, true, torch.reason);
  assert.equal(torch.device, 'cpu');
  assert.match(torch.torchVersion ?? '', /^\d+\.\d+/);
});
