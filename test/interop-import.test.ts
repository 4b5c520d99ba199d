import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, existsSync, readFileSync, rmSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { importCheckpoint } from '../src/formats/import.js';
import { readTorchFile, isTensorRef } from '../src/formats/pth.js';
import { loadCheckpoint, assignVariables } from '../src/train/checkpoint.js';
import { buildEncoder, buildSparK } from '../src/models/spark.js';
import { packageRoot } from '../src/util/paths.js';

const FIX = path.join(packageRoot(), 'test', 'fixtures', 'interop');
const RESNET = { family: 'resnet' as const, layers: [1, 1, 1, 1] as [number, number, number, number], width: 8 };
const CONVNEXT = { family: 'convnext' as const, depths: [1, 1, 1, 1] as [number, number, number, number], dims: [8, 16, 32, 64] as [number, number, number, number] };

function parity(): Map<string, { shape: number[]; data: Float32Array }> {
  const f = readTorchFile(path.join(FIX, 'parity.pth'));
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, v] of f.root as Map<string, unknown>) {
    if (isTensorRef(v)) {
      const t = f.tensor(v);
      out.set(k, { shape: t.shape, data: t.data as Float32Array });
    }
  }
  return out;
}

function tmp(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'spark-import-'));
}

async function encoderOutputsMatch(dir: string, spec: typeof RESNET | typeof CONVNEXT, family: 'resnet' | 'convnext') {
  const ck = await loadCheckpoint(dir);
  const enc = buildEncoder(spec, { seed: 1 });
  try {
    assignVariables(enc.params, ck.params, dir);
    assignVariables(enc.buffers, ck.buffers, dir);
    const p = parity();
    const inp = p.get('input')!;
    const before = tf.memory().numTensors;
    const diffs = tf.tidy(() => {
      const x = tf.tensor4d(inp.data, inp.shape as [number, number, number, number]).transpose([0, 2, 3, 1]) as tf.Tensor4D;
      const outs = enc.encode(x, null, { training: false });
      return outs.map((o, i) => {
        const ref = p.get(`${family}.out${i}`)!;
        const r = tf.tensor4d(ref.data, ref.shape as [number, number, number, number]).transpose([0, 2, 3, 1]);
        assert.deepEqual(o.shape, r.shape, `stage ${i} shape`);
        const scale = Math.max(1, r.abs().max().dataSync()[0]!);
        return o.sub(r).abs().max().dataSync()[0]! / scale;
      });
    });
    assert.equal(tf.memory().numTensors, before);
    for (const [i, d] of diffs.entries()) assert.ok(d <= 1e-5, `${family} stage ${i}: max relative diff ${d} > 1e-5`);
    return diffs;
  } finally {
    enc.dispose();
  }
}

test('encoder-only timm-style ResNet .pth imports and matches PyTorch outputs to 1e-5', async () => {
  await testBackend();
  const out = path.join(tmp(), 'r');
  const rep = await importCheckpoint(path.join(FIX, 'resnet_timm_style.pth'), { out });
  assert.equal(rep.layout, 'encoder');
  assert.deepEqual(rep.encoder, RESNET);
  assert.deepEqual([rep.missing, rep.unexpected, rep.shapeMismatches], [[], [], []]);
  assert.ok(existsSync(path.join(out, 'encoder.safetensors')) && existsSync(path.join(out, 'config.yaml')));
  await encoderOutputsMatch(out, RESNET, 'resnet');
});

test('official-style ConvNeXt .pth imports and matches PyTorch outputs to 1e-5', async () => {
  await testBackend();
  const out = path.join(tmp(), 'c');
  const rep = await importCheckpoint(path.join(FIX, 'convnext_official_style.pth'), { out });
  assert.equal(rep.layout, 'encoder');
  assert.deepEqual(rep.encoder, CONVNEXT);
  await encoderOutputsMatch(out, CONVNEXT, 'convnext');
});

test('the old {arch, module, is_pretrain} wrapper imports the same weights', async () => {
  await testBackend();
  const a = await loadCheckpoint((await importCheckpoint(path.join(FIX, 'resnet_wrapped.pth'), { out: path.join(tmp(), 'w') })).outDir);
  const b = await loadCheckpoint((await importCheckpoint(path.join(FIX, 'resnet_timm_style.pth'), { out: path.join(tmp(), 't') })).outDir);
  assert.deepEqual([...a.params.keys()], [...b.params.keys()]);
  for (const [k, t] of a.params) assert.deepEqual(Buffer.from(t.data), Buffer.from(b.params.get(k)!.data), k);
});

test('the with-decoder SparK file imports into the whole model, config included', async () => {
  await testBackend();
  const out = path.join(tmp(), 'sp');
  const rep = await importCheckpoint(path.join(FIX, 'resnet_withdecoder_spark_style.pth'), { out });
  assert.equal(rep.layout, 'spark-with-decoder');
  assert.equal(rep.inputSize, 64);
  assert.equal(rep.model!.decoder.width, 32);
  assert.equal(rep.model!.densify_norm, 'bn');
  assert.deepEqual(rep.ignored.sort(), ['config', 'imn_m', 'imn_s', 'norm_black']);
  assert.equal(rep.extras['epoch'], 3);
  const ck = await loadCheckpoint(out);
  assert.equal(ck.config!.model.decoder.width, 32);
  const m = buildSparK(ck.config!.model, ck.config!.data.input_size, 0);
  try {
    assignVariables(m.params, ck.params, out);
    assignVariables(m.buffers, ck.buffers, out);
    // a conv-transpose weight (I×O×kH×kW in torch) landed transposed to [kH, kW, O, I]
    const f = readTorchFile(path.join(FIX, 'resnet_withdecoder_spark_style.pth'));
    const mod = (f.root as Map<string, unknown>).get('module') as Map<string, unknown>;
    const up = f.tensor(mod.get('dense_decoder.dec.1.up_sample.weight') as never);
    const [I, O] = up.shape;
    const got = m.params.get('dense_decoder.dec.1.up_sample.weight')!.arraySync() as number[][][][];
    for (const [i, o, y, x] of [[0, 0, 0, 0], [I! - 1, O! - 1, 3, 1], [2, 5, 1, 2]] as const) {
      assert.equal(got[y]![x]![o]![i], (up.data as Float32Array)[((i * O! + o) * 4 + y) * 4 + x]);
    }
    const nbt = m.buffers.get('dense_decoder.dec.0.conv.1.num_batches_tracked')!;
    assert.equal(nbt.dataSync()[0], 11);
  } finally {
    m.dispose();
  }
});

test('mismatching keys fail the import unless --allow-partial, and nothing is written', async () => {
  await testBackend();
  const dir = tmp();
  const out = path.join(dir, 'x');
  await assert.rejects(
    importCheckpoint(path.join(FIX, 'resnet_timm_style.pth'), { out, encoder: 'resnet_mini' }),
    /keys do not match encoder resnet_mini: .*wrong shape/,
  );
  assert.ok(!existsSync(out), 'no output folder after a failed import');
  const rep = await importCheckpoint(path.join(FIX, 'resnet_timm_style.pth'), { out, encoder: 'resnet_mini', allowPartial: true });
  assert.ok(rep.shapeMismatches.length > 0);
  const meta = JSON.parse(readFileSync(path.join(out, 'import.json'), 'utf8')) as { layout: string };
  assert.equal(meta.layout, 'encoder');
  rmSync(dir, { recursive: true, force: true });
});
