/**
 * Per-kernel overhead of the torch backend (issue 11) on small tensors, where the arithmetic is negligible: the raw
 * addon call, then whole tfjs kernels (engine + kernel function + addon + ATen) on torch beside the tensorflow
 * (when built) and cpu backends. Medians of --reps rounds of --n calls each.
 *
 *   npm run build && SPARK_TORCH_ADDON=... node dist/bench/torch-overhead.js [--threads 1] [--n 5000] [--reps 5]
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/init.js';
import { registerTorchBackend } from '../src/backend/torch/index.js';
import { aten, loadTorchAddon, run } from '../src/backend/torch/addon.js';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}
const threads = arg('threads', 1);
const n = arg('n', 5000);
const reps = arg('reps', 5);

/** Median µs per call of f. */
function time(f: () => void): number {
  for (let i = 0; i < Math.min(n, 500); i++) f();
  const r: number[] = [];
  for (let k = 0; k < reps; k++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) f();
    r.push(((performance.now() - t0) / n) * 1000);
  }
  return r.sort((a, b) => a - b)[Math.floor(reps / 2)]!;
}

process.env['TF_NUM_INTRAOP_THREADS'] = String(threads);
const backends = ['torch', 'cpu'];
try {
  const info = await initBackend('tensorflow', { threads });
  if (info.name === 'tensorflow') backends.splice(1, 0, 'tensorflow');
} catch {
  /* no tfjs-node */
}
await registerTorchBackend({ device: 'cpu', threads });

const A = loadTorchAddon();
const add = aten('add', 'Tensor', 'TTz');
const a8 = A.fromData(new Float32Array(64).fill(1), [8, 8], 0);
const raw = time(() => A.free(run(add, a8, a8, 1)));
A.free(a8);
console.log(`raw addon call (aten::add 8×8 + free): ${raw.toFixed(2)} µs`);

const cases: Array<[string, (t: Record<string, tf.Tensor>) => tf.Tensor]> = [
  ['Add 8×8', (t) => tf.add(t['a']!, t['b']!)],
  ['Multiply by a JS number (upload + kernel)', (t) => tf.mul(t['a']!, 2)],
  ['Reshape', (t) => tf.reshape(t['a']!, [64])],
  ['Identity (clone)', (t) => tf.clone(t['a']!)],
  ['Sum axis 0', (t) => tf.sum(t['a']!, 0)],
  ['Transpose', (t) => tf.transpose(t['a']!)],
  ['Conv2D 1×8×8×16, 3×3×16×16', (t) => tf.conv2d(t['x']! as tf.Tensor4D, t['w']! as tf.Tensor4D, 1, 'same')],
];
const rows: string[] = [];
for (const be of backends) {
  await tf.setBackend(be);
  const t = { a: tf.ones([8, 8]), b: tf.ones([8, 8]), x: tf.ones([1, 8, 8, 16]), w: tf.ones([3, 3, 16, 16]) };
  rows.push(`${be.padEnd(10)} ${cases.map(([name, f]) => `${name}: ${time(() => f(t).dispose()).toFixed(1)} µs`).join(' | ')}`);
  tf.dispose(Object.values(t));
}
console.log(`threads ${threads}, median of ${reps}×${n} calls\n${rows.join('\n')}`);
