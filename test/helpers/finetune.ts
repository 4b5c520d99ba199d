/** Shared fixtures of the fine-tuning tests: tiny labelled folders, a tiny ConvNeXt fine-tuning spec, tensor-file comparison. */
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { writeSyntheticFolder } from '../../src/data/index.js';
import { loadExperiment } from '../../src/spec/index.js';
import type { ExperimentConfig } from '../../src/spec/types.js';
import { readSafetensors, toFloat32 } from '../../src/util/safetensors.js';
import { tmpDir } from './train.js';

/** `<dir>/train` (4 classes × 4 images) and `<dir>/val` (4 × 2), 32 px PNGs; returns dir. */
export async function tinyLabelledData(): Promise<string> {
  const dir = tmpDir('spark-ft-');
  await writeSyntheticFolder(path.join(dir, 'train'), { classes: 4, perClass: 4, size: 32, seed: 1 });
  await writeSyntheticFolder(path.join(dir, 'val'), { classes: 4, perClass: 2, size: 32, seed: 2 });
  return dir;
}

/**
 * A fine-tuning spec of a tiny ConvNeXt from random init on `tinyLabelledData()`: the whole reference recipe is on by
 * default (TrivialAugmentWide, RandomErasing, repeated augmentation ×3 → 4 steps per epoch, mixup/CutMix, EMA), plus
 * drop path so its draws are exercised too.
 */
/** `encoder` replaces the tiny ConvNeXt (a YAML flow mapping, e.g. a tiny ResNet). */
export function tinyFinetuneYaml(o: { dataDir: string; outDir: string; name: string; steps?: number; checkpointEvery?: number; tracking?: string | null; extra?: string; encoder?: string }): string {
  const backend = process.env['SPARK_BACKEND'] ?? 'auto';
  const tracking = o.tracking ? `{uri: ${JSON.stringify(o.tracking)}, experiment: finetune}` : '{enabled: false}';
  return `name: ${o.name}
task: finetune
model:
  encoder: ${o.encoder ?? '{family: convnext, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64]}'}
  drop_path: 0.1
data:
  source: imagefolder
  root: ${JSON.stringify(path.join(o.dataDir, 'train'))}
  val_root: ${JSON.stringify(path.join(o.dataDir, 'val'))}
  input_size: 32
  workers: 0
  prefetch: 1
train:
  steps: ${o.steps ?? 6}
  batch_size: 4
  warmup_steps: 1
  optimizer: {base_lr: 2.0e-3, base_batch_size: 4, weight_decay: 0.05}
runtime: {backend: ${backend}, seed: 5, threads: 1}
output: {dir: ${JSON.stringify(o.outDir)}, checkpoint_every: ${o.checkpointEvery ?? 100}, log_every: 1}
tracking: ${tracking}
finetune: {init: null${o.extra ? `, ${o.extra}` : ''}}
`;
}

export async function tinyFinetuneConfig(o: Parameters<typeof tinyFinetuneYaml>[0]): Promise<{ config: ExperimentConfig; specPath: string; resolvedYaml: string }> {
  const file = path.join(o.outDir, `${o.name}.yaml`);
  writeFileSync(file, tinyFinetuneYaml(o));
  const l = await loadExperiment(file);
  return { config: l.config, specPath: l.specPath, resolvedYaml: l.resolvedYaml };
}

/** Two safetensors files hold the same names, shapes and values (F32 to `tol`, other dtypes exactly). */
export async function assertSameTensorFile(a: string, b: string, tol = 1e-6): Promise<number> {
  const ta = (await readSafetensors(a)).tensors;
  const tb = (await readSafetensors(b)).tensors;
  assert.deepEqual([...ta.keys()].sort(), [...tb.keys()].sort(), `${path.basename(a)}: same tensor names`);
  for (const [name, x] of ta) {
    const y = tb.get(name)!;
    assert.deepEqual(y.shape, x.shape, name);
    if (x.dtype !== 'F32') {
      assert.deepEqual(Buffer.from(y.data), Buffer.from(x.data), name);
      continue;
    }
    const va = toFloat32(x);
    const vb = toFloat32(y);
    let worst = 0;
    for (let i = 0; i < va.length; i++) worst = Math.max(worst, Math.abs(va[i]! - vb[i]!));
    assert.ok(worst <= tol, `${path.basename(a)} ${name}: max abs diff ${worst}`);
  }
  return ta.size;
}
