/**
 * The torch backend's self-check (the last step of `npm run setup:torch`, and bench/gpu's first): convolutions and
 * their gradients (input and filter) on the 'torch' backend against the pure-JS 'cpu' backend, from the same
 * seeded inputs. TF32 is off during the check (it rounds products to 10-bit mantissas; the check wants float32).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../util/rng.js';
import { registerTorch } from './torch-load.js';
import { findTorchAddon, SETUP_TORCH_FIX } from './torch/addon-path.js';

export interface SelfCheckResult {
  ok: boolean;
  /** One line: what matched (with the largest relative error) or what did not. */
  message: string;
  fix?: string;
  maxRelErr?: number;
}

/** Largest relative error the check accepts (|torch − cpu|∞ / |cpu|∞, per tensor). */
export const SELF_CHECK_TOL = 1e-4;

interface ConvCase {
  name: string;
  x: number[];
  w: number[];
  run: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor4D;
}

function cases(): ConvCase[] {
  return [
    { name: 'conv2d 3×3 same', x: [2, 9, 9, 3], w: [3, 3, 3, 5], run: (x, w) => tf.conv2d(x, w, 1, 'same') },
    { name: 'conv2d 3×3 stride 2 valid', x: [2, 9, 9, 4], w: [3, 3, 4, 6], run: (x, w) => tf.conv2d(x, w, 2, 'valid') },
    { name: 'depthwise 7×7 same', x: [2, 8, 8, 4], w: [7, 7, 4, 1], run: (x, w) => tf.depthwiseConv2d(x, w, 1, 'same') },
  ];
}

function values(shape: number[], rng: Rng): Float32Array {
  const a = new Float32Array(shape.reduce((p, q) => p * q, 1));
  for (let i = 0; i < a.length; i++) a[i] = rng.normal();
  return a;
}

/** Forward output and both gradients of sum(conv(x, w) ⊙ r) on the active backend, read back as arrays. */
function evaluate(c: ConvCase, x: Float32Array, w: Float32Array, rng: Rng): Float32Array[] {
  return tf.tidy(() => {
    const xt = tf.tensor4d(x, c.x as [number, number, number, number]);
    const wt = tf.tensor4d(w, c.w as [number, number, number, number]);
    const y = c.run(xt, wt);
    const r = tf.tensor(values(y.shape, rng), y.shape);
    const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(c.run(a as tf.Tensor4D, b as tf.Tensor4D), r)))([xt, wt]);
    return [y, dx!, dw!].map((t) => t.dataSync() as Float32Array);
  });
}

function relErr(a: Float32Array, ref: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - ref[i]!));
    m = Math.max(m, Math.abs(ref[i]!));
  }
  return d / (m || 1);
}

export async function torchSelfCheck(opts: { device: string }): Promise<SelfCheckResult> {
  const loc = findTorchAddon();
  if (!loc.path) return { ok: false, message: loc.reason, fix: SETUP_TORCH_FIX };
  try {
    await registerTorch(opts.device, false);
    const prev = tf.getBackend();
    let worst = 0;
    let worstAt = '';
    for (const c of cases()) {
      const data = Rng.from(7, c.name);
      const x = values(c.x, data);
      const w = values(c.w, data);
      const out: Float32Array[][] = [];
      for (const b of ['cpu', 'torch']) {
        if (!(await tf.setBackend(b))) throw new Error(`tf.setBackend('${b}') failed`);
        // The cpu backend prints a "use tfjs-node" banner on first use; not useful here.
        if (b === 'cpu') (tf.backend() as unknown as { firstUse?: boolean }).firstUse = false;
        out.push(evaluate(c, x, w, Rng.from(8, c.name)));
      }
      const names = ['output', 'input gradient', 'filter gradient'];
      for (let i = 0; i < 3; i++) {
        if (out[1]![i]!.length !== out[0]![i]!.length) {
          return { ok: false, message: `${c.name}: ${names[i]} has ${out[1]![i]!.length} values on torch, ${out[0]![i]!.length} on cpu`, fix: 'report this as a bug' };
        }
        const e = relErr(out[1]![i]!, out[0]![i]!);
        if (Number.isNaN(e)) return { ok: false, message: `torch gives NaN in ${c.name} ${names[i]}`, fix: 'report this as a bug', maxRelErr: NaN };
        if (e > worst || !worstAt) {
          worst = e;
          worstAt = `${c.name} ${names[i]}`;
        }
      }
    }
    if (prev) await tf.setBackend(prev);
    const msg = `${cases().length} convolutions and their gradients match the cpu backend (largest relative error ${worst.toExponential(1)}, ${worstAt})`;
    if (!(worst <= SELF_CHECK_TOL)) {
      return { ok: false, message: `torch differs from the cpu backend: relative error ${worst.toExponential(2)} > ${SELF_CHECK_TOL} in ${worstAt}`, fix: 'report this as a bug', maxRelErr: worst };
    }
    return { ok: true, message: msg, maxRelErr: worst };
  } catch (e) {
    const err = e as Error & { fix?: string };
    return { ok: false, message: String(err?.message ?? e).split('\n')[0]!, fix: err.fix ?? SETUP_TORCH_FIX };
  }
}
