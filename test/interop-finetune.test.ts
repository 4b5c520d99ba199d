/**
 * The reference fine-tuning recipe pieces of `spark finetune` (spec §7.4, §7.5): the `finetune:` options and their
 * defaults, the EMA of the weights, evaluation of both models.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../src/spec/index.js';
import { packageRoot, schemasDir } from '../src/util/paths.js';
import { readSafetensors, toFloat32 } from '../src/util/safetensors.js';
import { FINETUNE_DEFAULTS, finetuneSection, resolveAutoAugment } from '../src/downstream/finetune-config.js';
import { runFinetune } from '../src/downstream/finetune.js';
import { importCheckpoint } from '../src/formats/import.js';
import { WeightEma } from '../src/train/ema.js';
import { readStore } from '../src/track/index.js';
import { testBackend } from './helpers/backend.js';
import { tmpDir } from './helpers/train.js';
import { tinyLabelledData, tinyFinetuneConfig } from './helpers/finetune.js';
import { writeSyntheticFolder } from '../src/data/index.js';
import type { RunEvent } from '../src/train/events.js';

test('finetune schema: every option is described and its defaults are FINETUNE_DEFAULTS (the reference recipe)', () => {
  const schema = JSON.parse(readFileSync(path.join(schemasDir(), 'finetune.schema.json'), 'utf8')) as { properties: Record<string, { description?: string; default?: unknown; properties?: Record<string, { description?: string }> }> };
  for (const [k, p] of Object.entries(schema.properties)) {
    assert.ok((p.description ?? '').length > 20, `finetune.${k} has a description`);
    for (const [k2, p2] of Object.entries(p.properties ?? {})) assert.ok((p2.description ?? '').length > 10, `finetune.${k}.${k2} has a description`);
  }
  assert.deepEqual(Object.keys(schema.properties).sort(), Object.keys(FINETUNE_DEFAULTS).sort());
  const c = resolveConfig({ name: 'x', task: 'finetune', finetune: {} }, { file: 'x.yaml' });
  assert.deepEqual(c.finetune, FINETUNE_DEFAULTS, 'schema defaults = code defaults');
  assert.deepEqual(finetuneSection(c), FINETUNE_DEFAULTS);
  assert.equal(FINETUNE_DEFAULTS.auto_augment, 'auto', "the reference's choice by input size");
  assert.equal(FINETUNE_DEFAULTS.random_erasing, 0.25);
  assert.equal(FINETUNE_DEFAULTS.ema, null, 'null = the reference decay (recipeFor)');
  assert.equal(FINETUNE_DEFAULTS.repeated_aug, null, 'null = the reference value (recipeFor)');
  assert.throws(() => resolveConfig({ name: 'x', task: 'finetune', finetune: { ema: 1 } }, { file: 'x.yaml' }));
  const off = resolveConfig({ name: 'x', task: 'finetune', finetune: { auto_augment: null } }, { file: 'x.yaml' });
  assert.equal(finetuneSection(off).auto_augment, null);
  assert.throws(() => resolveConfig({ name: 'x', task: 'finetune', finetune: { auto_augment: 'v0' } }, { file: 'x.yaml' }));
  // 'auto' = TrivialAugmentWide below 384 px, AutoAugment 'v0' from 384 px (spec §7.4); explicit values are kept
  for (const v of ['trivial_augment_wide', 'auto_augment_v0', 'auto'] as const) {
    assert.equal(finetuneSection(resolveConfig({ name: 'x', task: 'finetune', finetune: { auto_augment: v } }, { file: 'x.yaml' })).auto_augment, v);
  }
  assert.equal(resolveAutoAugment('auto', 224), 'trivial_augment_wide');
  assert.equal(resolveAutoAugment('auto', 383), 'trivial_augment_wide');
  assert.equal(resolveAutoAugment('auto', 384), 'auto_augment_v0');
  assert.equal(resolveAutoAugment('auto', 512), 'auto_augment_v0');
  assert.equal(resolveAutoAugment('trivial_augment_wide', 384), 'trivial_augment_wide');
  assert.equal(resolveAutoAugment('auto_augment_v0', 224), 'auto_augment_v0');
  assert.equal(resolveAutoAugment(null, 384), null);
});

test('EMA (timm ModelEmaV2): ema = d·ema + (1−d)·w for params and BN stats in float32, int buffers copied, no tensor leaks', async () => {
  await testBackend();
  const before = tf.memory().numTensors;
  const v = (t: () => tf.Tensor, trainable = true) => tf.tidy(() => tf.variable(t(), trainable)); // tidy frees the initial value
  const mk = (w: number[], rm: number[], n: number) => ({
    params: new Map<string, tf.Variable>([['a.weight', v(() => tf.tensor2d(w, [2, 2]))]]),
    buffers: new Map<string, tf.Variable>([
      ['bn.running_mean', v(() => tf.tensor1d(rm), false)],
      ['bn.num_batches_tracked', v(() => tf.scalar(n, 'int32'), false)],
    ]),
  });
  const src = mk([1, 2, 3, 4], [0.5, -0.5], 7);
  const tgt = mk([0, 0, 0, 0], [0, 0], 0);
  const d = 0.9;
  const ema = new WeightEma(d, src, tgt);
  assert.deepEqual([...tgt.params.get('a.weight')!.dataSync()], [1, 2, 3, 4], 'starts as a copy of the source');
  assert.equal(tgt.buffers.get('bn.num_batches_tracked')!.dataSync()[0], 7);
  const afterInit = tf.memory().numTensors;
  // the source moves; the EMA follows with the closed form, step by step in float32
  const f = Math.fround;
  let e = [1, 2, 3, 4].map(f);
  let m = [0.5, -0.5].map(f);
  for (let k = 1; k <= 5; k++) {
    const w = [1 + k, 2 - k, 3 * k, -4].map(f);
    const rm = [0.5 + 0.1 * k, -0.5].map(f);
    tf.tidy(() => {
      src.params.get('a.weight')!.assign(tf.tensor2d(w, [2, 2]));
      src.buffers.get('bn.running_mean')!.assign(tf.tensor1d(rm));
      src.buffers.get('bn.num_batches_tracked')!.assign(tf.scalar(7 + k, 'int32'));
    });
    ema.update();
    e = e.map((v, i) => f(f(v * f(d)) + f(w[i]! * f(1 - d))));
    m = m.map((v, i) => f(f(v * f(d)) + f(rm[i]! * f(1 - d))));
    const got = [...tgt.params.get('a.weight')!.dataSync()];
    got.forEach((v, i) => assert.ok(Math.abs(v - e[i]!) <= 1e-6, `step ${k} weight ${i}: ${v} vs ${e[i]}`));
    [...tgt.buffers.get('bn.running_mean')!.dataSync()].forEach((v, i) => assert.ok(Math.abs(v - m[i]!) <= 1e-6, `running_mean ${i}`));
    assert.equal(tgt.buffers.get('bn.num_batches_tracked')!.dataSync()[0], 7 + k, 'integer buffers are copied');
  }
  assert.equal(tf.memory().numTensors, afterInit, 'updates leave no tensors behind');
  // state() / load() round trip
  const saved = await ema.state();
  assert.deepEqual([...saved.keys()].sort(), ['a.weight', 'bn.num_batches_tracked', 'bn.running_mean']);
  ema.copyFromSource();
  assert.notDeepEqual([...tgt.params.get('a.weight')!.dataSync()], e);
  ema.load(saved, 'test');
  assert.deepEqual([...tgt.params.get('a.weight')!.dataSync()], [...Float32Array.from(e)]);
  assert.equal(tf.memory().numTensors, afterInit);
  assert.throws(() => new WeightEma(1, src, tgt), RangeError);
  const bad = mk([0, 0, 0, 0], [0, 0, 0], 0);
  assert.throws(() => new WeightEma(0.5, src, bad), /shape/);
  for (const s of [src, tgt, bad]) for (const v of [...s.params.values(), ...s.buffers.values()]) v.dispose();
  assert.equal(tf.memory().numTensors, before);
});

test('spark finetune with EMA: both models evaluated and logged, best = max over both, EMA starts from the loaded weights, no leaks', async () => {
  await testBackend();
  const data = await tinyLabelledData();
  const out = tmpDir();
  const imp = await importCheckpoint(path.join(packageRoot(), 'test', 'fixtures', 'interop', 'convnext_official_style.pth'), { out: path.join(out, 'imported') });
  const mlruns = path.join(out, 'mlruns');
  const c = await tinyFinetuneConfig({ dataDir: data, outDir: out, name: 'ema', steps: 5, tracking: mlruns });
  const before = tf.memory().numTensors;
  const r = await runFinetune({ ...c, init: imp.outDir, subscribers: [] });
  assert.equal(tf.memory().numTensors, before, 'no tensors left behind (model, EMA copy, optimizer)');
  assert.equal(r.status, 'FINISHED');
  assert.equal(r.steps, 5);
  assert.ok(r.emaTop1 !== null && r.emaTop5 !== null && r.emaTop5 >= r.emaTop1);
  // evaluations after epoch 1 (step 4: 16 images, batch 4, repeated aug ×3 → floor(16/4) = 4 steps) and at the end
  const snap = await readStore(mlruns);
  const run = snap.experiments.flatMap((e) => e.runs).find((x) => x.info.runId === r.mlflowRunId)!;
  const h = (k: string) => (run.history[k] ?? []).map((p) => p.value);
  assert.deepEqual((run.history['val_top1'] ?? []).map((p) => p.step), [4, 5]);
  assert.equal(h('val_ema_top1').length, 2);
  assert.equal(h('val_ema_top5').length, 2);
  const best = Math.max(...h('val_top1'), ...h('val_ema_top1'));
  assert.equal(h('val_best_top1').at(-1), best, 'the reported accuracy is the max over evaluations of both models');
  assert.equal(r.bestTop1, best);
  assert.equal(r.emaTop1, h('val_ema_top1').at(-1));
  assert.equal(r.top1, h('val_top1').at(-1));
  const metrics = JSON.parse(readFileSync(path.join(r.runDir, 'metrics.json'), 'utf8')) as { best: { top1: number; model: string }; evaluations: number };
  assert.equal(metrics.best.top1, best);
  assert.equal(metrics.evaluations, 2);
  // decay 0.9999 over 5 steps: the EMA is (1 − 0.9999^5 ≈ 5e-4 of the way) from the imported weights to the trained
  // ones, so its encoder equals the import to ~1e-3 of the change, while the plain model moved
  const imported = (await readSafetensors(path.join(imp.outDir, 'encoder.safetensors'))).tensors;
  const emaT = (await readSafetensors(path.join(r.runDir, 'model-ema.safetensors'))).tensors;
  const plainT = (await readSafetensors(path.join(r.runDir, 'model.safetensors'))).tensors;
  assert.equal(readFileSync(path.join(r.runDir, 'model-ema.safetensors')).length > 0, true);
  let moved = 0;
  let emaOff = 0;
  for (const [name, t] of imported) {
    if (!emaT.has(name) || t.dtype !== 'F32') continue;
    const a = toFloat32(t);
    const p = toFloat32(plainT.get(name)!);
    const e = toFloat32(emaT.get(name)!);
    for (let i = 0; i < a.length; i++) {
      moved = Math.max(moved, Math.abs(p[i]! - a[i]!));
      emaOff = Math.max(emaOff, Math.abs(e[i]! - a[i]!) - 1e-3 * Math.abs(p[i]! - a[i]!));
    }
  }
  assert.ok(moved > 1e-3, `fine-tuning moved the weights (${moved})`);
  assert.ok(emaOff < 1e-5, `the EMA starts from the imported weights (excess ${emaOff})`);
  // EMA off: no EMA metrics, no EMA file
  const c0 = await tinyFinetuneConfig({ dataDir: data, outDir: out, name: 'noema', steps: 2, extra: 'ema: 0' });
  const r0 = await runFinetune({ ...c0, subscribers: [] });
  assert.equal(r0.emaTop1, null);
  assert.equal(existsSync(path.join(r0.runDir, 'model-ema.safetensors')), false);
  assert.equal(existsSync(path.join(r0.runDir, 'checkpoint', 'ema.safetensors')), false);
  assert.equal(tf.memory().numTensors, before);
});

test('spark finetune of a ResNet (no repeated augmentation): drop-last epochs of floor(N/B) steps, kept by --resume; AutoAugment v0 in the workers; older runs resume with their wrap-around sampler', async () => {
  await testBackend();
  // 9 training images (3 classes × 3), batch 4: drop-last epochs of floor(9/4) = 2 steps (the wrap-around sampler has 3)
  const data = tmpDir('spark-ft9-');
  await writeSyntheticFolder(path.join(data, 'train'), { classes: 3, perClass: 3, size: 32, seed: 1 });
  await writeSyntheticFolder(path.join(data, 'val'), { classes: 3, perClass: 1, size: 32, seed: 2 });
  const out = tmpDir();
  const spec = { dataDir: data, outDir: out, steps: 4, encoder: '{family: resnet, layers: [1, 1, 1, 1], width: 4}', extra: 'auto_augment: auto_augment_v0, ema: 0' };
  const collect = (into: RunEvent[]) => [{ onEvent: (e: RunEvent) => void into.push(e) }];
  const stepLosses = (ev: RunEvent[]) => ev.flatMap((e) => (e.type === 'step' ? [e.loss] : []));
  const evalSteps = (ev: RunEvent[]) => ev.flatMap((e) => (e.type === 'metrics' ? [e.step] : []));
  const runStart = (ev: RunEvent[]) => ev.find((e) => e.type === 'run-start') as Extract<RunEvent, { type: 'run-start' }>;
  const logText = (ev: RunEvent[]) => ev.flatMap((e) => (e.type === 'log' ? [e.message] : [])).join('\n');

  // uninterrupted
  const full: RunEvent[] = [];
  const r = await runFinetune({ ...(await tinyFinetuneConfig({ ...spec, name: 'full' })), subscribers: collect(full) });
  assert.equal(r.status, 'FINISHED');
  assert.deepEqual([runStart(full).stepsPerEpoch, runStart(full).totalSteps, runStart(full).totalEpochs], [2, 4, 2]);
  assert.deepEqual(evalSteps(full), [2, 4], 'an evaluation after each 2-step epoch');
  assert.deepEqual(full.flatMap((e) => (e.type === 'step' ? [[e.epoch, e.epochStep]] : [])), [[1, 1], [1, 2], [2, 1], [2, 2]]);
  assert.match(logText(full), /lamb.*auto_augment_v0.*drop-last sampler, 2 steps per epoch/s);
  const info = JSON.parse(readFileSync(path.join(r.runDir, 'run.json'), 'utf8')) as { finetune: { dropLast?: boolean } };
  assert.equal(info.finetune.dropLast, true, 'run.json records the sampler for --resume');
  assert.equal((JSON.parse(readFileSync(path.join(r.runDir, 'checkpoint', 'state.json'), 'utf8')) as { stepsPerEpoch: number }).stepsPerEpoch, 2);

  // stopped after step 3 (mid-epoch 2), resumed: the same 2-step epochs and the same losses
  const stop = new AbortController();
  const cut: RunEvent[] = [];
  const c = await tinyFinetuneConfig({ ...spec, name: 'cut' });
  const first = await runFinetune({ ...c, subscribers: collect(cut), signal: stop.signal, onStep: (s) => void (s === 3 && stop.abort()) });
  assert.equal(first.status, 'KILLED');
  const resumed: RunEvent[] = [];
  const r2 = await runFinetune({ resumeDir: first.runDir, specPath: null, subscribers: collect(resumed) });
  assert.equal(r2.status, 'FINISHED');
  assert.deepEqual([runStart(resumed).stepsPerEpoch, runStart(resumed).totalSteps, runStart(resumed).startStep], [2, 4, 3]);
  assert.ok(!resumed.some((e) => e.type === 'warning'), 'no warnings');
  assert.deepEqual([...evalSteps(cut), ...evalSteps(resumed)], [2, 4]);
  const losses = [...stepLosses(cut), ...stepLosses(resumed)];
  assert.equal(losses.length, 4);
  losses.forEach((l, i) => assert.ok(Math.abs(l - stepLosses(full)[i]!) <= 1e-6, `step ${i + 1}: ${l} vs ${stepLosses(full)[i]}`));
  assert.equal(r2.top1, r.top1);

  // a run started before the drop-last sampler (run.json without dropLast, 3 steps per epoch in its checkpoint)
  // resumes with the wrap-around sampler it was started with
  const stop2 = new AbortController();
  const old = await runFinetune({ ...(await tinyFinetuneConfig({ ...spec, name: 'old' })), subscribers: [], signal: stop2.signal, onStep: (s) => void (s === 1 && stop2.abort()) });
  assert.equal(old.status, 'KILLED');
  const runJson = path.join(old.runDir, 'run.json');
  const ri = JSON.parse(readFileSync(runJson, 'utf8')) as { finetune: Record<string, unknown> };
  delete ri.finetune['dropLast'];
  writeFileSync(runJson, JSON.stringify(ri, null, 2));
  const stateJson = path.join(old.runDir, 'checkpoint', 'state.json');
  writeFileSync(stateJson, JSON.stringify({ ...(JSON.parse(readFileSync(stateJson, 'utf8')) as object), stepsPerEpoch: 3 }));
  const legacy: RunEvent[] = [];
  const r3 = await runFinetune({ resumeDir: old.runDir, specPath: null, subscribers: collect(legacy) });
  assert.equal(r3.status, 'FINISHED');
  assert.deepEqual([runStart(legacy).stepsPerEpoch, runStart(legacy).startStep], [3, 1]);
  assert.ok(!legacy.some((e) => e.type === 'warning'));
  assert.match(logText(legacy), /wrap-around sampler, 3 steps per epoch/);
  assert.deepEqual(evalSteps(legacy), [3, 4]);
});
