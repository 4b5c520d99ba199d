/**
 * Reductions with tfjs semantics: axes may be negative, a number or a list; an empty list reduces nothing (ATen
 * would reduce everything); Sum of int32/bool gives int32; Mean of an integer tensor is computed in float32.
 * Also Softmax, ArgMax/ArgMin, TopK.
 */
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { aten, run, runMulti, type AtenOp } from '../addon.js';
import type { TorchBackend } from '../backend.js';
import { castHandle } from './elementwise.js';
import { axes, kernel } from './util.js';

const sum = aten('sum', 'dim_IntList', 'TIbn');
const mean = aten('mean', 'dim', 'TIbn');
const amax = aten('amax', '', 'TIb');
const amin = aten('amin', '', 'TIb');
const prod = aten('prod', 'dim_int', 'Tibn');
const all = aten('all', 'dims', 'TIb');
const any = aten('any', 'dims', 'TIb');
const argmax = aten('argmax', '', 'Tib');
const argmin = aten('argmin', '', 'Tib');
const softmax = aten('_softmax', '', 'Tib');
const topk = aten('topk', '', 'Tiibb');
const cumsum = aten('cumsum', '', 'Tin');
const flip = aten('flip', '', 'TI');
const sub = aten('sub', 'Tensor', 'TTz');

function reduce(b: TorchBackend, x: TensorInfo, axis: number | number[], keepDims: boolean, op: AtenOp, extra: 'dtype' | 'none'): TensorInfo {
  const ax = axes(axis, x.shape.length);
  if (ax.length === 0) return b.alias(x);
  let hx = b.h(x);
  let tmp = -1;
  if (op === mean && x.dtype !== 'float32') tmp = hx = castHandle(hx, 'float32');
  const r = extra === 'dtype' ? run(op, hx, ax, keepDims) : run(op, hx, ax, keepDims);
  if (tmp >= 0) {
    b.free(tmp);
    return b.out(r);
  }
  return b.out(r);
}

export const reduceKernels: KernelConfig[] = [
  kernel('Sum', (b, { x }, a) => reduce(b, x!, a['axis'] as number[], a['keepDims'] as boolean, sum, 'dtype')),
  kernel('Mean', (b, { x }, a) => reduce(b, x!, a['axis'] as number[], a['keepDims'] as boolean, mean, 'dtype')),
  kernel('Max', (b, { x }, a) => reduce(b, x!, a['reductionIndices'] as number[], a['keepDims'] as boolean, amax, 'none')),
  kernel('Min', (b, { x }, a) => reduce(b, x!, a['axis'] as number[], a['keepDims'] as boolean, amin, 'none')),
  kernel('All', (b, { x }, a) => reduce(b, x!, a['axis'] as number[], a['keepDims'] as boolean, all, 'none')),
  kernel('Any', (b, { x }, a) => reduce(b, x!, a['axis'] as number[], a['keepDims'] as boolean, any, 'none')),
  kernel('Prod', (b, { x }, a) => {
    const ax = axes(a['axis'] as number[], x!.shape.length);
    if (ax.length === 0) return b.alias(x!);
    const keep = a['keepDims'] as boolean;
    let h = b.h(x!);
    let owned = false;
    // one axis at a time, from the last so that the remaining indices stay valid without keepDims
    for (const d of [...ax].reverse()) {
      const next = run(prod, h, d, keep);
      if (owned) b.free(h);
      h = next;
      owned = true;
    }
    return b.out(h);
  }),
  kernel('ArgMax', (b, { x }, a) => b.out(run(argmax, b.h(x!), axes(a['axis'] as number, x!.shape.length)[0]!, false))),
  kernel('ArgMin', (b, { x }, a) => b.out(run(argmin, b.h(x!), axes(a['axis'] as number, x!.shape.length)[0]!, false))),
  kernel('Softmax', (b, { logits }, a) => b.out(run(softmax, b.h(logits!), axes(a['dim'] as number, logits!.shape.length)[0]!, false))),
  kernel('TopK', (b, { x }, a) => {
    const [v, i] = runMulti(topk, b.h(x!), a['k'] as number, -1, true, (a['sorted'] as boolean | undefined) ?? true);
    return [b.out(v!, 0), b.out(i!, 1)];
  }),
  kernel('Cumsum', (b, { x }, a) => {
    const axis = axes(a['axis'] as number, x!.shape.length)[0]!;
    const reverse = a['reverse'] as boolean;
    const exclusive = a['exclusive'] as boolean;
    const tmps: number[] = [];
    let h = b.h(x!);
    if (reverse) tmps.push((h = run(flip, h, [axis])));
    let c = run(cumsum, h, axis);
    if (exclusive) {
      tmps.push(c);
      c = run(sub, c, h, 1);
    }
    if (reverse) {
      tmps.push(c);
      c = run(flip, c, [axis]);
    }
    b.free(tmps);
    return b.out(c);
  }),
];
