/**
 * Micro-benchmark of one masked / unmasked training BatchNorm (forward + backward) at ResNet-50 224-px shapes on
 * the current backend: the backend's fused kernel (SPARK_MASKED_BN=gather|composite on tensorflow) and the
 * portable composite, min and median of N runs.  node dist/bench/bn-micro.js [--backend tensorflow] [--n 15]
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, parseBackendRequest } from '../src/backend/init.js';
import { batchNormTrain, setFusedDispatch, type RunningStats } from '../src/models/fused.js';

const argv = process.argv;
const arg = (k: string, d: string) => (argv.includes(`--${k}`) ? argv[argv.indexOf(`--${k}`) + 1]! : d);
await initBackend(parseBackendRequest(arg('backend', 'tensorflow'), '--backend'));
const n = Number(arg('n', '15'));
const shapes: Array<[number, number, number, number]> = [[4, 112, 112, 64], [4, 56, 56, 256], [4, 28, 28, 512], [4, 7, 7, 2048]];
for (const shape of shapes) {
  const [b, h, w, c] = shape;
  const x = tf.randomNormal(shape);
  const g = tf.ones([c]);
  const be = tf.zeros([c]);
  const dyw = tf.randomNormal(shape);
  const maskData = new Float32Array(b * h * w).map(() => (Math.random() < 0.4 ? 1 : 0));
  const mask = tf.tensor4d(maskData, [b, h, w, 1]);
  const running: RunningStats = { mean: tf.variable(tf.zeros([c]), false), variance: tf.variable(tf.ones([c]), false), count: tf.variable(tf.scalar(0, 'int32'), false), momentum: 0.1 };
  const row: string[] = [];
  for (const [label, mk, disp] of [['dense fused', null, 'auto'], ['dense portable', null, 'portable'], ['masked fused', mask, 'auto'], ['masked portable', mask, 'portable']] as const) {
    setFusedDispatch(disp);
    const times: number[] = [];
    for (let i = 0; i < n + 2; i++) {
      const t0 = performance.now();
      const gr = tf.grads((xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor) => {
        return tf.sum(tf.mul(batchNormTrain(xi, gi, bi, mk, 1e-5, running), dyw));
      })([x, g, be]);
      gr[0]!.dataSync();
      tf.dispose(gr);
      if (i >= 2) times.push(performance.now() - t0);
    }
    times.sort((p, q) => p - q);
    row.push(`${label} ${times[0]!.toFixed(1)}/${times[times.length >> 1]!.toFixed(1)}`);
  }
  console.log(`${JSON.stringify(shape)} (${process.env['SPARK_MASKED_BN'] ?? 'composite'}) min/median ms: ${row.join(', ')}`);
  tf.dispose([x, g, be, dyw, mask, running.mean, running.variance, running.count]);
}
