/**
 * Calibration of the per-image memory estimate of `src/train/memory.ts`: peak RSS of one SparK training step at two
 * micro-batch sizes (each in a fresh child process), the slope (bytes per image) divided by the activation elements
 * per image of `models/registry.ts` = bytes per activation element. Run after a build:
 *   node dist/bench/memory-calibration.js [backend] [encoder:input ...]
 * e.g. `node dist/bench/memory-calibration.js tensorflow resnet_mini:96 convnext_mini:96`.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/init.js';
import { buildSparK } from '../src/models/spark.js';
import { activationElementsPerImage } from '../src/models/registry.js';
import { buildParamGroups, createOptimizer } from '../src/train/optimizers.js';
import { trainStep } from '../src/train/step.js';
import type { ModelConfig } from '../src/spec/types.js';

function modelOf(encoder: string): ModelConfig {
  return { encoder, decoder: { type: 'light', width: encoder.endsWith('mini') ? 128 : 768 }, mask_ratio: 0.6, drop_path: 0, densify_norm: 'auto' };
}

async function child(backend: string, encoder: string, size: number, micro: number): Promise<void> {
  await initBackend(backend as 'tensorflow', { threads: 1 });
  const model = buildSparK(modelOf(encoder), size, 1);
  const opt = createOptimizer({ name: 'lamb', eps: null, clip_grad: 5 }, buildParamGroups(model.params), [0.9, 0.95]);
  const x = tf.randomNormal([micro, size, size, 3]) as tf.Tensor4D;
  const before = process.memoryUsage().rss;
  for (let it = 0; it < 2; it++) trainStep(model, opt, [x], { seed: 1, it, hyper: { lr: 1e-4, wd: 0.04 } });
  const peak = process.resourceUsage().maxRSS * 1024;
  process.stdout.write(JSON.stringify({ before, peak }) + '\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') return child(args[1]!, args[2]!, Number(args[3]), Number(args[4]));
  const backend = args[0] ?? 'tensorflow';
  const configs = args.length > 1 ? args.slice(1) : ['resnet_mini:96', 'convnext_mini:96'];
  const self = fileURLToPath(import.meta.url);
  for (const c of configs) {
    const [encoder, s] = c.split(':');
    const size = Number(s);
    const at = (m: number) => {
      const r = spawnSync(process.execPath, [self, '--child', backend, encoder!, String(size), String(m)], { encoding: 'utf8' });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      return JSON.parse(line) as { before: number; peak: number };
    };
    const [m1, m2] = [2, 10];
    const a = at(m1);
    const b = at(m2);
    const perImage = (b.peak - a.peak) / (m2 - m1);
    const el = activationElementsPerImage(modelOf(encoder!), size).total;
    const fixed = a.peak - m1 * perImage;
    process.stdout.write(
      `${backend} ${encoder} @${size}: peak ${(a.peak / 2 ** 20).toFixed(0)} MiB (micro ${m1}), ${(b.peak / 2 ** 20).toFixed(0)} MiB (micro ${m2}); ` +
        `${(perImage / 2 ** 20).toFixed(2)} MiB/image, fixed ${(fixed / 2 ** 20).toFixed(0)} MiB, ${el} activation elements/image → ${(perImage / el).toFixed(1)} bytes/element\n`,
    );
  }
}

await main();
