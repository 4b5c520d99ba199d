/**
 * Where one SparK training step spends its time and memory (issue 12): `tf.profile` of one `trainStepAsync` (after
 * warm-up steps) of a preset at a given size and batch on one backend, with per-kernel wall time (the backend's
 * `time()`), the kernels that take most of it, the live tensor bytes at their peak within the step (tfjs's own
 * accounting: what the tape and the step hold, without allocator overhead), and the process's peak RSS.
 *
 *   npm run build && node dist/bench/step-profile.js [--backend tensorflow] [--model resnet50] [--size 224] [--batch 4]
 *       [--width 768] [--mode sparse|dense] [--warmup 1] [--top 20] [--steps N]
 * --steps N times N more steps without the profiler (median wall time, peak RSS, process user/system CPU time).
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, parseBackendRequest } from '../src/backend/init.js';
import { describeEncoder } from '../src/models/registry.js';
import type { ModelConfig } from '../src/spec/types.js';
import { buildSparK, randomMask } from '../src/models/spark.js';
import { trainStepAsync } from '../src/train/step.js';
import { buildParamGroups, Lamb } from '../src/train/optimizers.js';
import { Rng } from '../src/util/rng.js';
import { peakRssMiB, syntheticBatch } from './lib/spark-step.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

await initBackend(parseBackendRequest(arg('backend', 'tensorflow'), '--backend'));
const encoder = arg('model', 'resnet50');
const size = Number(arg('size', '224'));
const batch = Number(arg('batch', '4'));
const mode = arg('mode', 'sparse');
const top = Number(arg('top', '20'));
const warmup = Number(arg('warmup', '1'));
const model: ModelConfig = { encoder, decoder: { type: 'light', width: Number(arg('width', '768')) }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' };
const m = buildSparK(model, size, 0, { dense: mode === 'dense' });
const opt = new Lamb(buildParamGroups(m.params), { betas: [0.9, describeEncoder(encoder).defaultBeta2], eps: 1e-6, maxGradNorm: 5 });
const x = syntheticBatch(batch, size);
const hyper = { lr: 1e-4, wd: 0.04 };
const masksFor = (it: number): tf.Tensor4D[] | undefined => (mode === 'dense' ? [randomMask(batch, m.fmap, m.lenKeep, Rng.from(0, 'mask', it, 0))] : undefined);
for (let i = 0; i < warmup; i++) {
  const masks = masksFor(i);
  const t0 = performance.now();
  await trainStepAsync(m, opt, [x], { seed: 0, it: i, hyper, ...(masks ? { masks } : {}) });
  console.log(`warm-up step ${i + 1}: ${(performance.now() - t0).toFixed(0)} ms`);
  if (masks) tf.dispose(masks);
}
const base = tf.memory().numBytes;
const masks = masksFor(warmup);
const t0 = performance.now();
const prof = await tf.profile(async () => {
  await trainStepAsync(m, opt, [x], { seed: 0, it: warmup, hyper, ...(masks ? { masks } : {}) });
});
const wall = performance.now() - t0;
if (masks) tf.dispose(masks);
const byName = new Map<string, { n: number; ms: number }>();
let kernelMs = 0;
let peakBytes = 0;
let peakAt = '';
for (const [i, k] of prof.kernels.entries()) {
  const ms = Number(await k.kernelTimeMs) || 0;
  kernelMs += ms;
  const e = byName.get(k.name) ?? { n: 0, ms: 0 };
  e.n++;
  e.ms += ms;
  byName.set(k.name, e);
  if (k.totalBytesSnapshot > peakBytes) {
    peakBytes = k.totalBytesSnapshot;
    peakAt = `#${i} ${k.name}`;
  }
}
const mib = (b: number) => (b / 2 ** 20).toFixed(0);
console.log(`${encoder} ${mode} ${size}px batch ${batch} on ${tf.getBackend()}: profiled step ${wall.toFixed(0)} ms wall, ${kernelMs.toFixed(0)} ms in ${prof.kernels.length} kernels`);
console.log(`tensor bytes: ${mib(base)} MiB held between steps, peak ${mib(peakBytes)} MiB within the step (at ${peakAt}); peak RSS ${peakRssMiB().toFixed(0)} MiB`);
console.log('kernel                         calls   ms total   ms/call');
for (const [n, e] of [...byName].sort((a, b) => b[1].ms - a[1].ms).slice(0, top)) {
  console.log(`${n.padEnd(30)} ${String(e.n).padStart(5)} ${e.ms.toFixed(1).padStart(10)} ${(e.ms / e.n).toFixed(3).padStart(9)}`);
}
const steps = Number(arg('steps', '0'));
if (steps > 0) {
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const mk = masksFor(warmup + 1 + i);
    const t1 = performance.now();
    await trainStepAsync(m, opt, [x], { seed: 0, it: warmup + 1 + i, hyper, ...(mk ? { masks: mk } : {}) });
    times.push(performance.now() - t1);
    if (mk) tf.dispose(mk);
  }
  const s = [...times].sort((a, b) => a - b);
  const cpu = process.cpuUsage();
  console.log(`${steps} unprofiled steps: median ${s[s.length >> 1]!.toFixed(0)} ms [${s.map((t) => t.toFixed(0)).join(' ')}]; peak RSS ${peakRssMiB().toFixed(0)} MiB; process CPU user ${(cpu.user / 1e6).toFixed(1)} s, system ${(cpu.system / 1e6).toFixed(1)} s`);
}
opt.dispose();
m.dispose();
x.dispose();
