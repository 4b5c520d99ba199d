import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { PYTHON, pythonHas, pythonMissing } from './helpers/python.js';
import { importCheckpoint } from '../src/formats/import.js';
import { exportEncoder, loadEncoderState, loadTfjsWeights } from '../src/formats/export.js';
import { readTorchFile, isTensorRef } from '../src/formats/pth.js';
import { readSafetensors } from '../src/util/safetensors.js';
import { packageRoot } from '../src/util/paths.js';

const ROOT = packageRoot();
const FIX = path.join(ROOT, 'test', 'fixtures', 'interop');
const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'spark-export-'));

function sameTensors(a: Map<string, { shape: number[]; data: Uint8Array }>, b: Map<string, { shape: number[]; data: Uint8Array }>) {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    assert.deepEqual(t.shape, u.shape, k);
    assert.ok(Buffer.from(t.data).equals(Buffer.from(u.data)), `${k} differs`);
  }
}

for (const [fixture, keys] of [
  ['resnet_timm_style.pth', 'official'],
  ['convnext_official_style.pth', 'official'],
  ['convnext_official_style.pth', 'timm'],
] as const) {
  test(`export → re-import round-trips exactly (${fixture}, ${keys} keys)`, async () => {
    await testBackend();
    const dir = tmp();
    const first = await importCheckpoint(path.join(FIX, fixture), { out: path.join(dir, 'a') });
    const file = path.join(dir, 'enc.safetensors');
    const res = await exportEncoder(first.outDir, { format: 'safetensors', out: file, keys });
    const { tensors, metadata } = await readSafetensors(file);
    assert.equal(metadata['format'], 'pt');
    if (keys === 'timm') assert.ok(tensors.has('stem.0.weight') && tensors.has('stages.3.blocks.0.mlp.fc2.bias'));
    // PyTorch layouts and dtypes: the exported file equals the source .pth tensor by tensor
    const src = readTorchFile(path.join(FIX, fixture));
    const sd = src.root as Map<string, unknown>;
    assert.equal(res.tensors, sd.size);
    const { officialToTimm } = await import('../src/formats/encoder-keys.js');
    for (const [k, ref] of sd) {
      if (!isTensorRef(ref)) continue;
      const t = src.tensor(ref);
      const e = tensors.get(keys === 'timm' ? officialToTimm(k) : k)!;
      assert.deepEqual(e.shape, t.shape, k);
      if (t.dtype === 'int64') {
        assert.equal(e.dtype, 'I64');
        assert.deepEqual(Array.from(new BigInt64Array(e.data.slice().buffer), Number), t.data);
      } else {
        assert.ok(Buffer.from(e.data.slice().buffer).equals(Buffer.from((t.data as Float32Array).buffer)), `${k} values`);
      }
    }
    const again = await importCheckpoint(file, { out: path.join(dir, 'b') });
    assert.deepEqual(again.encoder, first.encoder);
    const a = await loadEncoderState(first.outDir);
    const b = await loadEncoderState(again.outDir);
    sameTensors(a.tensors, b.tensors);
  });
}

test('tfjs export holds the same tensors in TF layouts, readable by tf.io.decodeWeights', async () => {
  await testBackend();
  const dir = tmp();
  const imp = await importCheckpoint(path.join(FIX, 'resnet_timm_style.pth'), { out: path.join(dir, 'a') });
  const res = await exportEncoder(imp.outDir, { format: 'tfjs', out: path.join(dir, 'tfjs') });
  const { tensors, metadata } = await loadTfjsWeights(res.out);
  const state = await loadEncoderState(imp.outDir);
  assert.equal(Object.keys(tensors).length, state.tensors.size);
  assert.deepEqual((metadata['stageChannels'] as number[]), [32, 64, 128, 256]);
  for (const [k, t] of state.tensors) {
    const u = tensors[k]!;
    assert.deepEqual(u.shape, t.shape, k);
    const got = u.dataSync();
    const exp = t.dtype === 'I32' ? new Int32Array(t.data.slice().buffer) : new Float32Array(t.data.slice().buffer);
    assert.deepEqual(Array.from(got), Array.from(exp), k);
  }
  tf.dispose(tensors);
});

test('an exported encoder loads strictly into PyTorch and gives the same outputs', async (t) => {
  if (!pythonHas('torch')) {
    t.skip(pythonMissing('torch'));
    return;
  }
  await testBackend();
  const dir = tmp();
  for (const [fixture, family] of [['resnet_timm_style.pth', 'resnet'], ['convnext_official_style.pth', 'convnext']] as const) {
    const imp = await importCheckpoint(path.join(FIX, fixture), { out: path.join(dir, family) });
    const file = path.join(dir, `${family}.safetensors`);
    await exportEncoder(imp.outDir, { format: 'safetensors', out: file });
    const outPth = path.join(dir, `${family}-out.pth`);
    const r = spawnSync(PYTHON, [path.join(ROOT, 'scripts', 'check-export.py'), file, family, path.join(FIX, 'parity.pth'), outPth], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const mine = readTorchFile(outPth);
    const ref = readTorchFile(path.join(FIX, 'parity.pth'));
    for (let i = 0; i < 4; i++) {
      const a = mine.tensor((mine.root as Map<string, never>).get(`out${i}`)!).data as Float32Array;
      const b = ref.tensor((ref.root as Map<string, never>).get(`${family}.out${i}`)!).data as Float32Array;
      assert.equal(a.length, b.length);
      let max = 0;
      for (let j = 0; j < a.length; j++) max = Math.max(max, Math.abs(a[j]! - b[j]!));
      assert.ok(max < 1e-5, `${family} out${i}: PyTorch on the exported weights differs by ${max}`);
    }
  }
  void readFileSync;
});

test('an exported ResNet loads into timm leaving only the head missing', async (t) => {
  if (!pythonHas('torch', 'timm')) {
    t.skip(pythonMissing('torch and timm'));
    return;
  }
  await testBackend();
  const { buildEncoder } = await import('../src/models/spark.js');
  const { tensorToSafe } = await import('../src/train/checkpoint.js');
  const { encodeSafetensors } = await import('../src/util/safetensors.js');
  const { resolveConfig, configToYaml } = await import('../src/spec/index.js');
  const { writeFileSync } = await import('node:fs');
  const dir = tmp();
  const spec = { family: 'resnet' as const, layers: [1, 1, 1, 1] as [number, number, number, number] };
  const enc = buildEncoder(spec, { seed: 0 });
  const m = new Map();
  for (const mm of [enc.params, enc.buffers]) for (const [k, v] of mm) m.set(k, await tensorToSafe(v));
  enc.dispose();
  writeFileSync(path.join(dir, 'encoder.safetensors'), encodeSafetensors(m));
  writeFileSync(path.join(dir, 'config.yaml'), configToYaml(resolveConfig({ name: 'x', model: { encoder: spec } }, { file: 'x' })));
  const file = path.join(dir, 'out.safetensors');
  await exportEncoder(dir, { format: 'safetensors', out: file });
  const r = spawnSync(PYTHON, [path.join(ROOT, 'scripts', 'check-export.py'), file, 'resnet', '-', '-', '--timm', 'resnet:1,1,1,1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as { missing: string[]; unexpected: string[] };
  assert.deepEqual(res, { missing: ['fc.weight', 'fc.bias'], unexpected: [] });
});
