/**
 * Shape and data-movement kernels: Identity (an alias), Reshape / Transpose / Slice / BroadcastTo (ATen views, no
 * copy), Concat, Pack, Unpack, SplitV, PadV2, Tile, Reverse, GatherV2, OneHot, Fill, OnesLike/ZerosLike, Range.
 */
import type { DataType, KernelConfig } from '@tensorflow/tfjs';
import { aten, run, runMulti, DT } from '../addon.js';
import { castHandle } from './elementwise.js';
import { axes, kernel, listInputs, sizeOf } from './util.js';

const reshape = aten('reshape', '', 'TI');
const permute = aten('permute', '', 'TI');
const slice = aten('slice', 'Tensor', 'Tiiii');
const expand = aten('expand', '', 'TIb');
const cat = aten('cat', '', 'Li');
const stack = aten('stack', '', 'Li');
const unbind = aten('unbind', 'int', 'Ti');
const splitWithSizes = aten('split_with_sizes', '', 'TIi');
const padNd = aten('constant_pad_nd', '', 'TIs');
const repeat = aten('repeat', '', 'TI');
const flip = aten('flip', '', 'TI');
const indexSelect = aten('index_select', '', 'TiT');
const full = aten('full', '', 'IsDnVn');
const onesLike = aten('ones_like', '', 'Tnnnnn');
const zerosLike = aten('zeros_like', '', 'Tnnnnn');
const arange = aten('arange', 'start_step', 'sssDnVn');
const eqScalarT = aten('eq', 'Tensor', 'TT');
const whereScalar = aten('where', 'Scalar', 'Tss');
const unsqueeze = aten('unsqueeze', '', 'Ti');
const clone = aten('clone', '', 'Ti');
const indexAdd = aten('index_add', '', 'TiTTz');

export const shapeKernels: KernelConfig[] = [
  kernel('Identity', (b, { x }) => b.alias(x!)),
  kernel('Reshape', (b, { x }, a) => {
    const shape = a['shape'] as number[];
    const n = sizeOf(x!.shape);
    const unknown = shape.indexOf(-1);
    const out = [...shape];
    if (unknown >= 0) out[unknown] = n / sizeOf(shape.filter((d) => d !== -1));
    if (sizeOf(out) !== n) throw new Error(`Reshape: cannot reshape [${x!.shape}] into [${shape}]`);
    return b.out(run(reshape, b.h(x!), out));
  }),
  kernel('ExpandDims', (b, { input }, a) => {
    const rank = input!.shape.length;
    let d = a['dim'] as number;
    if (d < 0) d += rank + 1;
    const shape = [...input!.shape];
    shape.splice(d, 0, 1);
    return b.out(run(reshape, b.h(input!), shape));
  }),
  kernel('Transpose', (b, { x }, a) => b.out(run(permute, b.h(x!), a['perm'] as number[]))),
  kernel('BroadcastTo', (b, { x }, a) => {
    const shape = a['shape'] as number[];
    const e = run(expand, b.h(x!), shape, false);
    const c = run(clone, e, 0);
    b.free(e);
    return b.out(c);
  }),
  kernel('Slice', (b, { x }, a) => {
    const rank = x!.shape.length;
    const begin = typeof a['begin'] === 'number' ? [a['begin'] as number] : (a['begin'] as number[]);
    const size = typeof a['size'] === 'number' ? [a['size'] as number] : (a['size'] as number[]);
    let h = b.h(x!);
    let owned = false;
    for (let d = 0; d < rank; d++) {
      const start = begin[d] ?? 0;
      const len = size[d] === undefined || size[d] === -1 ? x!.shape[d]! - start : size[d]!;
      if (start === 0 && len === x!.shape[d]) continue;
      const next = run(slice, h, d, start, start + len, 1);
      if (owned) b.free(h);
      h = next;
      owned = true;
    }
    if (!owned) return b.alias(x!);
    return b.out(h);
  }),
  kernel('Concat', (b, inputs, a) => {
    const ts = listInputs(inputs);
    if (ts.length === 1) return b.alias(ts[0]!);
    const axis = axes(a['axis'] as number, ts[0]!.shape.length)[0]!;
    return b.out(run(cat, ts.map((t) => b.h(t)), axis));
  }),
  kernel('Pack', (b, inputs, a) => {
    const ts = listInputs(inputs);
    const axis = axes(a['axis'] as number, ts[0]!.shape.length + 1)[0]!;
    return b.out(run(stack, ts.map((t) => b.h(t)), axis));
  }),
  kernel('Unpack', (b, { value }, a) => {
    const axis = axes(a['axis'] as number, value!.shape.length)[0]!;
    return runMulti(unbind, b.h(value!), axis).map((h, k) => b.out(h, k));
  }),
  kernel('SplitV', (b, { x }, a) => {
    const axis = axes(a['axis'] as number, x!.shape.length)[0]!;
    const n = x!.shape[axis]!;
    const spec = a['numOrSizeSplits'] as number | number[];
    let sizes: number[];
    if (typeof spec === 'number') sizes = Array(spec).fill(n / spec);
    else {
      sizes = [...spec];
      const neg = sizes.indexOf(-1);
      if (neg >= 0) sizes[neg] = n - sizes.reduce((s, v) => (v === -1 ? s : s + v), 0);
    }
    return runMulti(splitWithSizes, b.h(x!), sizes, axis).map((h, k) => b.out(h, k));
  }),
  kernel('PadV2', (b, { x }, a) => {
    const p = a['paddings'] as Array<[number, number]>;
    const flat: number[] = [];
    for (let d = p.length - 1; d >= 0; d--) flat.push(p[d]![0], p[d]![1]);
    return b.out(run(padNd, b.h(x!), flat, (a['constantValue'] as number) ?? 0));
  }),
  kernel('Tile', (b, { x }, a) => b.out(run(repeat, b.h(x!), a['reps'] as number[]))),
  kernel('Reverse', (b, { x }, a) => {
    const d = axes(a['dims'] as number[], x!.shape.length);
    if (d.length === 0) return b.alias(x!);
    return b.out(run(flip, b.h(x!), d));
  }),
  kernel('GatherV2', (b, { x, indices }, a) => {
    if (((a['batchDims'] as number) ?? 0) !== 0) throw new Error('GatherV2 with batchDims > 0 is not supported by the torch backend');
    const axis = axes(a['axis'] as number, x!.shape.length)[0]!;
    const flatIdx = run(reshape, b.h(indices!), [sizeOf(indices!.shape)]);
    const g = run(indexSelect, b.h(x!), axis, flatIdx);
    b.free(flatIdx);
    const shape = [...x!.shape.slice(0, axis), ...indices!.shape, ...x!.shape.slice(axis + 1)];
    const r = run(reshape, g, shape);
    b.free(g);
    return b.out(r);
  }),
  kernel('OneHot', (b, { indices }, a) => {
    const depth = a['depth'] as number;
    const dtype = ((a['dtype'] as DataType) ?? 'int32') as DataType;
    const classes = run(arange, 0, depth, 1, DT.int32);
    const col = run(unsqueeze, b.h(indices!), -1);
    const hit = run(eqScalarT, col, classes);
    const v = run(whereScalar, hit, a['onValue'] as number, a['offValue'] as number);
    b.free([classes, col, hit]);
    if (dtype === 'float32') return b.out(v);
    const c = castHandle(v, dtype);
    b.free(v);
    return b.out(c);
  }),
  kernel('Fill', (b, _i, a) => {
    const dtype = ((a['dtype'] as DataType) ?? 'float32') as DataType;
    if (dtype === 'string') throw new Error('Fill: string tensors are not supported by the torch backend');
    const v = a['value'];
    const value = typeof v === 'boolean' ? (v ? 1 : 0) : Number(v);
    return b.out(run(full, a['shape'] as number[], value, DT[dtype as keyof typeof DT]));
  }),
  kernel('OnesLike', (b, { x }) => b.out(run(onesLike, b.h(x!)))),
  kernel('ZerosLike', (b, { x }) => b.out(run(zerosLike, b.h(x!)))),
  kernel('Range', (b, _i, a) => {
    const dtype = (a['dtype'] as 'float32' | 'int32') ?? 'float32';
    const start = a['start'] as number;
    const stop = a['stop'] as number;
    const step = a['step'] as number;
    const n = Math.max(Math.ceil((stop - start) / step), 0);
    if (n === 0) return b.out(run(full, [0], 0, DT[dtype]));
    // tfjs computes start + i·step; ATen's arange with the same end can differ by one element in float
    return b.out(run(arange, start, start + (n - 0.5) * step, step, DT[dtype]));
  }),
  kernel('UnsortedSegmentSum', (b, { x, segmentIds }, a) => {
    // out[s, ...] = Σ_{i: ids[i] = s} x[i, ...] over the leading axes that segmentIds covers
    const n = sizeOf(segmentIds!.shape);
    const rest = x!.shape.slice(segmentIds!.shape.length);
    const ids = run(reshape, b.h(segmentIds!), [n]);
    const src = run(reshape, b.h(x!), [n, ...rest]);
    const zeros = run(full, [a['numSegments'] as number, ...rest], 0, DT[x!.dtype as keyof typeof DT]);
    const r = run(indexAdd, zeros, 0, ids, src, 1);
    b.free([ids, src, zeros]);
    return b.out(r);
  }),
];
