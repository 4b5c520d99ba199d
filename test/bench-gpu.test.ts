/**
 * bench/gpu (the GPU check): its verdicts (CPU/GPU loss comparison, the spark-vs-PyTorch table and its 0.8 bar), the
 * cases it hands bench/torch_spark.py, and run.sh's refusal without the prepared payload. The GPU run itself needs a
 * GPU machine (bench/gpu/README.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compareLosses, formatTable, LOSS_RTOL, type LossRecord, type SparkBench, type TorchOut } from '../bench/gpu/report.js';
import { packageRoot } from '../src/util/paths.js';

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const ENTRY = new URL(`../bench/gpu/entry${EXT}`, import.meta.url).pathname;

const rec = (device: string, l: number[], g: number[]): LossRecord => ({
  device, steps: l.length, cases: [{ label: 'resnet_mini', size: 64, batch: 4, losses: l, gradNorms: g }],
});

test('compareLosses: equal within 1e-4 relative in every loss and gradient norm, else MISMATCH', () => {
  const cpu = rec('cpu', [1.0015, 1.0002, 0.9990], [0.2211, 0.2119, 0.2502]);
  const same = compareLosses(cpu, rec('cuda:0', [1.0015 * (1 + 5e-5), 1.0002, 0.9990], [0.2211, 0.2119 * (1 - 9e-5), 0.2502]));
  assert.equal(same.ok, true, same.report.join('\n'));
  assert.match(same.report[0]!, /^resnet_mini: 3 steps on cuda:0 vs cpu: largest relative difference 5\.00e-5 \(losses\), 9\.00e-5 \(gradient norms\) ≤ 0\.0001 ok$/);
  const off = compareLosses(cpu, rec('cuda:0', [1.0015, 1.0002 * (1 + 3 * LOSS_RTOL), 0.9990], [0.2211, 0.2119, 0.2502]));
  assert.equal(off.ok, false);
  assert.match(off.report[0]!, /3\.00e-4 \(losses\).*> 0\.0001 MISMATCH/);
  const grad = compareLosses(cpu, rec('cuda:0', [1.0015, 1.0002, 0.9990], [0.2211, 0.2119, 0.2502 * 1.01]));
  assert.equal(grad.ok, false, 'a gradient norm off by 1% fails');
  assert.equal(compareLosses(cpu, rec('cuda:0', [1.0015, NaN, 0.9990], [0.2211, 0.2119, 0.2502])).ok, false, 'NaN fails');
  assert.equal(compareLosses(cpu, rec('cuda:0', [1.0015], [0.2211])).ok, false, 'fewer steps fail');
  const missing = compareLosses(cpu, { device: 'cuda:0', steps: 3, cases: [] });
  assert.deepEqual(missing, { ok: false, report: ['resnet_mini: not run'] });
});

function sparkRow(label: string, batch: number, medianMs: number | null, error?: string): SparkBench['results'][number] {
  return {
    label, batch, size: 224, device: 'cuda:0', tf32: true, gflopPerStep: 1,
    ...(medianMs != null ? { result: { medianMs } as SparkBench['results'][number]['result'] } : {}), ...(error ? { error } : {}),
  };
}

const TORCH: TorchOut = {
  torch_version: '2.11.0+cu130', gpu: 'NVIDIA H200', tf32: { cudnn: true, matmul: false },
  results: [
    { label: 'resnet50', batch: 32, size: 224, memory_format: 'nchw', median_ms: 120 },
    { label: 'resnet50', batch: 32, size: 224, memory_format: 'channels_last', median_ms: 100 },
    { label: 'convnext_small', batch: 32, size: 224, memory_format: 'nchw', median_ms: 200 },
    { label: 'convnext_small', batch: 32, size: 224, memory_format: 'channels_last', median_ms: 0, error: 'OOM' },
  ],
};

test('formatTable: spark ÷ PyTorch (best format) throughput per row; ok only when every row reaches 0.8 and losses agree', () => {
  const good = formatTable({ device: 'cuda:0', tf32: true, results: [sparkRow('resnet50', 32, 125), sparkRow('convnext_small', 32, 210)] }, TORCH,
    { device: 'cuda:0', steps: 4, cases: [], ok: true, report: ['resnet_mini: … ok'] });
  assert.equal(good.ok, true, good.text);
  assert.match(good.text, /on NVIDIA H200; PyTorch 2\.11\.0\+cu130 \(TF32: cuDNN true, matmul false\); spark torch backend TF32 on/);
  assert.match(good.text, /\| resnet50 \| 32 \| 125\.0 \| 256\.0 \| 120\.0 \/ 100\.0 \| 320\.0 \| 0\.80× \|/);
  assert.match(good.text, /\| convnext_small \| 32 \| 210\.0 \| 152\.4 \| 200\.0 \/ — \| 160\.0 \| 0\.95× \|/);
  assert.match(good.text, /losses vs CPU \(relative 0\.0001, TF32 off\): ok/);
  const slow = formatTable({ device: 'cuda:0', tf32: true, results: [sparkRow('resnet50', 32, 200)] }, TORCH);
  assert.equal(slow.ok, false);
  assert.match(slow.text, /\| 0\.50× \(< 0\.8\) \|/);
  const failed = formatTable({ device: 'cuda:0', tf32: true, results: [sparkRow('resnet50', 32, null, 'out of memory')] }, TORCH);
  assert.equal(failed.ok, false);
  assert.match(failed.text, /\| resnet50 \| 32 \| FAILED: out of memory \|/);
  const lossesBad = formatTable({ device: 'cuda:0', tf32: true, results: [sparkRow('resnet50', 32, 100)] }, TORCH, { device: 'cuda:0', steps: 4, cases: [], ok: false, report: ['x MISMATCH'] });
  assert.equal(lossesBad.ok, false, 'a loss mismatch fails the table');
  assert.equal(formatTable({ device: 'cuda:0', tf32: true, results: [] }, TORCH).ok, false, 'no rows is no success');
});

test('entry: `cases` hands torch_spark.py the resolved presets; `table` exits 1 below the bar and writes --out', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-gpu-'));
  try {
    const c = spawnSync(process.execPath, [...process.execArgv, ENTRY, 'cases', '--models', 'resnet50,convnext_small', '--batches', '32,64', '--size', '224'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(c.status, 0, c.stderr);
    const cases = JSON.parse(c.stdout) as { label: string; family: string; batch: number; size: number; layers?: number[]; depths?: number[]; decoder_width: number; mask_ratio: number }[];
    assert.deepEqual(cases.map((x) => `${x.label}/${x.batch}/${x.size}`), ['resnet50/32/224', 'resnet50/64/224', 'convnext_small/32/224', 'convnext_small/64/224']);
    assert.deepEqual(cases[0]!.layers, [3, 4, 6, 3]);
    assert.deepEqual(cases[2]!.depths, [3, 3, 27, 3]);
    assert.ok(cases.every((x) => x.decoder_width === 768 && x.mask_ratio === 0.6));
    writeFileSync(path.join(dir, 's.json'), JSON.stringify({ device: 'cuda:0', tf32: true, results: [sparkRow('resnet50', 32, 200)] }));
    writeFileSync(path.join(dir, 't.json'), JSON.stringify(TORCH));
    const t = spawnSync(process.execPath, [...process.execArgv, ENTRY, 'table', '--spark', path.join(dir, 's.json'), '--torch', path.join(dir, 't.json'), '--out', path.join(dir, 'table.md')], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(t.status, 1, t.stderr);
    assert.match(t.stdout, /0\.50× \(< 0\.8\)/);
    assert.equal(readFileSync(path.join(dir, 'table.md'), 'utf8'), t.stdout);
    const bad = spawnSync(process.execPath, [...process.execArgv, ENTRY, 'cases', '--models'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /bench\/gpu: --models needs a value/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('run.sh: without the prepared payload it stops at once, saying how to make it; unknown options exit 2', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'spark-gpu-run-'));
  try {
    mkdirSync(path.join(root, 'bench', 'gpu'), { recursive: true });
    copyFileSync(path.join(packageRoot(), 'bench', 'gpu', 'run.sh'), path.join(root, 'bench', 'gpu', 'run.sh'));
    const r = spawnSync('bash', [path.join(root, 'bench', 'gpu', 'run.sh'), '--out', path.join(root, 'out')], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /FAILED: bench\/gpu\/\.out is missing: run bash bench\/gpu\/prepare\.sh/);
    assert.match(readFileSync(path.join(root, 'out', 'run.log'), 'utf8'), /FAILED: bench\/gpu\/\.out is missing/);
    const u = spawnSync('bash', [path.join(root, 'bench', 'gpu', 'run.sh'), '--bogus', 'x'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(u.status, 2);
    assert.match(u.stderr, /run\.sh: unknown option --bogus/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('bundle.sh: one file that runs without node_modules and holds the torch backend', (t) => {
  const backend = path.join(packageRoot(), 'src', 'backend', 'torch', 'index.ts');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-gpu-bundle-'));
  try {
    const out = path.join(dir, 'bench.mjs');
    const r = spawnSync('bash', [path.join(packageRoot(), 'bench', 'gpu', 'bundle.sh'), out], { encoding: 'utf8', timeout: 120_000 });
    if (!existsSync(backend)) {
      assert.equal(r.status, 1, 'without the backend the bundle is refused');
      assert.match(r.stderr, /src\/backend\/torch\/index\.ts is not in this checkout/);
      t.skip('no src/backend/torch in this checkout');
      return;
    }
    assert.equal(r.status, 0, r.stderr);
    const text = readFileSync(out, 'utf8');
    assert.match(text, /registerTorchBackend/);
    for (const pkg of ['@tensorflow/tfjs-node', 'sharp']) {
      assert.doesNotMatch(text, new RegExp(`^import .* from ["']${pkg}["']`, 'm'), `${pkg} is never imported statically`);
    }
    // Outside the checkout (no node_modules anywhere above /tmp): the bundle alone answers.
    const c = spawnSync(process.execPath, [out, 'cases', '--models', 'resnet_mini', '--batches', '2', '--size', '64'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    assert.equal(c.status, 0, c.stderr);
    assert.deepEqual((JSON.parse(c.stdout) as { label: string }[]).map((x) => x.label), ['resnet_mini']);
    const check = spawnSync(process.execPath, [out, 'check', '--device', 'cpu'], {
      cwd: dir, encoding: 'utf8', timeout: 120_000, env: { ...process.env, SPARK_TORCH_CACHE: dir, SPARK_TORCH_ADDON: undefined },
    });
    assert.equal(check.status, 1, 'no addon in an empty cache');
    assert.match(check.stderr, /self-check on cpu: FAILED: the torch addon is not built/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
