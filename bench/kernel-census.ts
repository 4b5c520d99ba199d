/**
 * Kernel census of one SparK training step (issue 12, spec gpu.md §5): `tf.profile` of one `trainStep` (forward,
 * backward, LAMB) of the 64-px mini models, split into the forward+backward part (`tf.variableGrads` of the loss)
 * and the whole step, with the kernels that dominate each.
 *
 *   npm run build && node dist/bench/kernel-census.js [--backend tensorflow|cpu|wasm|auto] [--models resnet_mini,convnext_mini]
 *       [--size 64] [--batch 2] [--width 64] [--top 15] [--time N] [--json out.json]
 * --time N also times N more steps (median wall time).
 *
 * One warm-up step runs first (so one-time kernels such as variable initialisation are not counted).
 */
import * as tf from '@tensorflow/tfjs';
import { writeFileSync } from 'node:fs';
import { initBackend, parseBackendRequest } from '../src/backend/init.js';
import { countStepKernels, type KernelCensus } from './lib/kernel-census.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

const backend = await initBackend(parseBackendRequest(arg('backend', 'auto'), '--backend'));
const models = arg('models', 'resnet_mini,convnext_mini').split(',').filter(Boolean);
const size = Number(arg('size', '64'));
const batch = Number(arg('batch', '2'));
const width = Number(arg('width', '64'));
const top = Number(arg('top', '15'));
const out: Record<string, KernelCensus> = {};
console.log(`backend ${tf.getBackend()} (${backend.name}), ${size} px, batch ${batch}, decoder width ${width}`);
for (const m of models) {
  const c = await countStepKernels(m, { size, batch, width, timeSteps: Number(arg('time', '0')) });
  out[m] = c;
  const fmt = (k: Record<string, number>) =>
    Object.entries(k)
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([n, v]) => `${n} ${v}`)
      .join(', ');
  console.log(`\n${m}: step ${c.step.total} kernels (forward+backward ${c.forwardBackward.total}, the rest ${c.step.total - c.forwardBackward.total})`);
  console.log(`  forward+backward: ${fmt(c.forwardBackward.byKernel)}`);
  console.log(`  whole step:       ${fmt(c.step.byKernel)}`);
  console.log(`  forward only (training): ${c.forward.total}: ${fmt(c.forward.byKernel)}`);
  if (c.stepMs.length) {
    const s = [...c.stepMs].sort((a, b) => a - b);
    console.log(`  step time: median ${s[s.length >> 1]!.toFixed(1)} ms over ${s.length} steps (min ${s[0]!.toFixed(1)})`);
  }
}
const json = arg('json', '');
if (json) writeFileSync(json, JSON.stringify({ backend: tf.getBackend(), size, batch, width, models: out }, null, 2));
