/** BatchMatMul (tfjs passes rank-3 operands whose batch dims broadcast) through aten::matmul on transposed views. */
import type { KernelConfig } from '@tensorflow/tfjs';
import { aten, run } from '../addon.js';
import { kernel } from './util.js';

const matmul = aten('matmul', '', 'TT');
const transpose = aten('transpose', 'int', 'Tii');

export const matmulKernels: KernelConfig[] = [
  kernel('BatchMatMul', (b, { a, b: bb }, attrs) => {
    const tmp: number[] = [];
    let ha = b.h(a!);
    let hb = b.h(bb!);
    if (attrs['transposeA']) tmp.push((ha = run(transpose, ha, -1, -2)));
    if (attrs['transposeB']) tmp.push((hb = run(transpose, hb, -1, -2)));
    const r = run(matmul, ha, hb);
    b.free(tmp);
    return b.out(r);
  }),
];
