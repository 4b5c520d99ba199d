import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/init.js';
import { buildSparK } from '../src/models/spark.js';
import { Rng } from '../src/util/rng.js';
await initBackend('tensorflow');
const m = buildSparK({ encoder: process.argv[2] ?? 'convnext_mini', decoder: { type: 'light', width: 64 }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' }, 64, 0);
const x = tf.randomNormal([2, 64, 64, 3]) as tf.Tensor4D;
const mask = m.makeMask(2, Rng.from(0, 'mask', 1, 0));
const vars = [...m.params.values()];
const info = await tf.profile(() => { tf.tidy(() => { tf.variableGrads(() => m.forward(x, mask, { training: true }).loss, vars); }); });
const ks = info.kernels;
const want = process.argv[3] ?? 'Reshape';
const by = new Map<string, number>();
for (let i = 0; i < ks.length; i++) if (ks[i]!.name === want) { const key = `${JSON.stringify(ks[i]!.inputShapes)} next ${ks[i + 1]?.name}`; by.set(key, (by.get(key) ?? 0) + 1); }
console.log([...by].sort((a, b) => b[1] - a[1]).slice(0, 30));
