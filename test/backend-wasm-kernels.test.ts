/**
 * spark's wasm training kernels (Conv2DBackpropFilter/Input, DepthwiseConv2dNativeBackpropFilter/Input as
 * decompositions into XNNPACK kernels) against the cpu backend's gradients.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/init.js';
import {
  CPU_TRAINING_KERNELS, WASM_TRAINING_KERNELS, isSparkKernel, registerCpuTrainingKernels, restoreOriginalKernels, wasmTrainingKernelsRegistered,
} from '../src/backend/wasm-kernels.js';
import { Rng } from '../src/util/rng.js';

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
interface Case {
  name: string;
  x: [number, number, number, number];
  /** [kh, kw, cin, cout] for conv; [kh, kw, c, multiplier] for depthwise. */
  w: [number, number, number, number];
  stride: number;
  pad: Pad;
  depthwise?: boolean;
}

const CASES: Case[] = [
  { name: 'conv 3x3 s1 same', x: [2, 9, 10, 3], w: [3, 3, 3, 5], stride: 1, pad: 'same' },
  { name: 'conv 3x3 s2 same', x: [2, 9, 10, 3], w: [3, 3, 3, 5], stride: 2, pad: 'same' },
  { name: 'conv 3x3 s1 valid', x: [2, 8, 7, 4], w: [3, 3, 4, 3], stride: 1, pad: 'valid' },
  { name: 'conv 3x3 s2 valid', x: [2, 9, 8, 4], w: [3, 3, 4, 3], stride: 2, pad: 'valid' },
  { name: 'conv 3x3 s2 explicit pad 1', x: [2, 8, 8, 3], w: [3, 3, 3, 4], stride: 2, pad: [[0, 0], [1, 1], [1, 1], [0, 0]] },
  { name: 'conv 3x3 s2 explicit asymmetric pad', x: [1, 9, 8, 3], w: [3, 3, 3, 4], stride: 2, pad: [[0, 0], [0, 2], [2, 1], [0, 0]] },
  { name: 'conv 1x1 s2 (downsample)', x: [2, 8, 9, 6], w: [1, 1, 6, 4], stride: 2, pad: 'valid' },
  { name: 'conv 7x7 s2 pad 3 (stem)', x: [1, 16, 15, 3], w: [7, 7, 3, 4], stride: 2, pad: [[0, 0], [3, 3], [3, 3], [0, 0]] },
  { name: 'conv 4x4 s4 (patchify)', x: [2, 16, 16, 3], w: [4, 4, 3, 5], stride: 4, pad: 'valid' },
  { name: 'depthwise 7x7 s1 same', x: [2, 9, 8, 5], w: [7, 7, 5, 1], stride: 1, pad: 'same', depthwise: true },
  { name: 'depthwise 7x7 s1 pad 3', x: [1, 8, 8, 4], w: [7, 7, 4, 1], stride: 1, pad: [[0, 0], [3, 3], [3, 3], [0, 0]], depthwise: true },
  { name: 'depthwise 3x3 s2 same', x: [2, 9, 10, 4], w: [3, 3, 4, 1], stride: 2, pad: 'same', depthwise: true },
  { name: 'depthwise 3x3 s1 valid, multiplier 2', x: [2, 7, 6, 3], w: [3, 3, 3, 2], stride: 1, pad: 'valid', depthwise: true },
];

function randn(shape: number[], ...key: Array<number | string>): tf.Tensor {
  const rng = Rng.from(7, 'backend-test', ...key);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.normal();
  return tf.tensor(v, shape);
}

/** Loss value and gradients w.r.t. input and filter on the active backend. */
function grads(c: Case, idx: number): { loss: Float32Array; dx: Float32Array; dw: Float32Array } {
  return tf.tidy(() => {
    const x = randn(c.x, idx, 'x') as tf.Tensor4D;
    const w = randn(c.w, idx, 'w') as tf.Tensor4D;
    const f = (a: tf.Tensor4D, b: tf.Tensor4D): tf.Tensor4D =>
      c.depthwise ? tf.depthwiseConv2d(a, b, c.stride, c.pad) : tf.conv2d(a, b, c.stride, c.pad);
    const shape = tf.tidy(() => f(x, w).shape);
    const r = randn(shape, idx, 'r');
    const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor4D, b as tf.Tensor4D), r)));
    const [dx, dw] = g([x, w]);
    const loss = tf.sum(tf.mul(f(x, w), r));
    return { loss: loss.dataSync() as Float32Array, dx: dx!.dataSync() as Float32Array, dw: dw!.dataSync() as Float32Array };
  });
}

function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, 'length');
  let m = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
    s = Math.max(s, Math.abs(b[i]!));
  }
  return m / (s || 1);
}

/** Gradients from the cpu backend's own kernels (spark replaces its filter-gradient kernels). */
async function cpuReference(): Promise<Array<ReturnType<typeof grads>>> {
  await initBackend('cpu');
  restoreOriginalKernels('cpu');
  for (const k of CPU_TRAINING_KERNELS) assert.equal(isSparkKernel(k, 'cpu'), false, k);
  const ref = CASES.map((c, i) => grads(c, i));
  registerCpuTrainingKernels();
  return ref;
}

test('the cpu filter-gradient replacements match the original kernels', async (t) => {
  const ref = await cpuReference();
  for (const k of CPU_TRAINING_KERNELS) assert.equal(isSparkKernel(k, 'cpu'), true, k);
  for (const [i, c] of CASES.entries()) {
    await t.test(c.name, () => {
      const got = grads(c, i);
      const e = relErr(got.dw, ref[i]!.dw);
      assert.ok(e < 1e-5, `dW rel err ${e}`);
      assert.deepEqual(got.dx, ref[i]!.dx, 'dX untouched (same kernel)');
    });
  }
});

test('wasm training kernels are registered and match the cpu backend', async (t) => {
  const ref = await cpuReference();
  const info = await initBackend('wasm');
  assert.equal(info.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.ok(wasmTrainingKernelsRegistered(), 'spark kernels registered');
  for (const k of WASM_TRAINING_KERNELS) assert.ok(tf.getKernel(k, 'wasm'), `${k} registered for wasm`);
  for (const [i, c] of CASES.entries()) {
    await t.test(c.name, () => {
      const before = tf.memory().numTensors;
      const got = grads(c, i);
      assert.equal(tf.memory().numTensors, before, 'no tensors leak from the kernels');
      const e = { loss: relErr(got.loss, ref[i]!.loss), dx: relErr(got.dx, ref[i]!.dx), dw: relErr(got.dw, ref[i]!.dw) };
      assert.ok(e.dx < 1e-5, `dX rel err ${e.dx}`);
      assert.ok(e.dw < 1e-5, `dW rel err ${e.dw}`);
      assert.ok(e.loss < 1e-5, `loss rel err ${e.loss}`);
    });
  }
});

test('a conv + depthwise net trains on wasm like on cpu (tf.variableGrads)', async () => {
  const run = (): number[] =>
    tf.tidy(() => {
      const w1 = tf.variable(randn([3, 3, 2, 4], 'net', 1).mul(0.3));
      const w2 = tf.variable(randn([5, 5, 4, 1], 'net', 2).mul(0.3));
      const w3 = tf.variable(randn([1, 1, 4, 2], 'net', 3).mul(0.3));
      const x = randn([2, 12, 12, 2], 'net', 'x') as tf.Tensor4D;
      const y = randn([2, 6, 6, 2], 'net', 'y');
      const opt = tf.train.sgd(0.05);
      const losses: number[] = [];
      for (let s = 0; s < 5; s++) {
        const l = opt.minimize(() => {
          const h = tf.relu(tf.conv2d(x, w1 as tf.Tensor4D, 2, 'same'));
          const d = tf.depthwiseConv2d(h, w2 as tf.Tensor4D, 1, 'same');
          return tf.mean(tf.square(tf.sub(tf.conv2d(d, w3 as tf.Tensor4D, 1, 'valid'), y))) as tf.Scalar;
        }, true)!;
        losses.push(l.dataSync()[0]!);
      }
      opt.dispose();
      [w1, w2, w3].forEach((v) => v.dispose());
      return losses;
    });
  await initBackend('cpu');
  const cpu = run();
  await initBackend('wasm');
  const wasm = run();
  assert.ok(wasm[4]! < wasm[0]!, `loss decreases on wasm: ${wasm.join(', ')}`);
  for (let i = 0; i < cpu.length; i++) assert.ok(Math.abs(wasm[i]! - cpu[i]!) <= 1e-4 * Math.abs(cpu[i]!), `step ${i}: wasm ${wasm[i]} vs cpu ${cpu[i]}`);
});
