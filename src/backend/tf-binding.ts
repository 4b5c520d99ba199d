/**
 * tfjs-node's binding as the 'tensorflow' backend's own kernels use it: TensorFlow eager ops on tensor handles
 * (`binding.executeOp`), chained inside one tfjs kernel call so that intermediates never become tfjs tensors
 * (`Chain`). Used by tf-fused-kernels.ts (chains of TensorFlow ops) and tf-native-ops.ts (spark's own ops).
 */
import type * as tf from '@tensorflow/tfjs';

export interface Meta {
  id: number;
  shape: number[];
  dtype: number;
}
export interface Attr {
  name: string;
  type: number;
  value: boolean | number | object | string | number[];
}
export interface Binding {
  TF_FLOAT: number;
  TF_INT32: number;
  TF_BOOL: number;
  TF_ATTR_STRING: number;
  TF_ATTR_INT: number;
  TF_ATTR_FLOAT: number;
  TF_ATTR_BOOL: number;
  TF_ATTR_TYPE: number;
  createTensor(shape: number[], dtype: number, values: Float32Array | Int32Array): number;
  deleteTensor(id: number): void;
  executeOp(name: string, attrs: Attr[], inputs: number[], numOutputs: number): Meta[];
  isUsingGpuDevice(): boolean;
}
export interface NodeBackend {
  binding: Binding;
  getInputTensorIds(tensors: tf.TensorInfo[]): number[];
  createOutputTensor(m: Meta): tf.Tensor;
}

/** A chain of TensorFlow eager ops on tensor handles; frees every handle it made except those turned into outputs. */
export class Chain {
  private readonly owned = new Set<number>();
  readonly b: Binding;
  readonly T: Attr;
  constructor(readonly be: NodeBackend) {
    this.b = be.binding;
    this.T = { name: 'T', type: this.b.TF_ATTR_TYPE, value: this.b.TF_FLOAT };
  }
  /** The handle of a tfjs tensor (owned by tfjs). */
  in(t: tf.TensorInfo): Meta {
    return { id: this.be.getInputTensorIds([t])[0]!, shape: t.shape, dtype: this.b.TF_FLOAT };
  }
  scalar(v: number): Meta {
    return this.keep({ id: this.b.createTensor([], this.b.TF_FLOAT, Float32Array.of(v)), shape: [], dtype: this.b.TF_FLOAT });
  }
  ints(v: number[]): Meta {
    return this.keep({ id: this.b.createTensor([v.length], this.b.TF_INT32, Int32Array.from(v)), shape: [v.length], dtype: this.b.TF_INT32 });
  }
  /** A float32 vector made here (freed with the chain). */
  floats(v: ArrayLike<number>): Meta {
    return this.keep({ id: this.b.createTensor([v.length], this.b.TF_FLOAT, Float32Array.from(v)), shape: [v.length], dtype: this.b.TF_FLOAT });
  }
  emptyFloat(): Meta {
    return this.keep({ id: this.b.createTensor([0], this.b.TF_FLOAT, new Float32Array(0)), shape: [0], dtype: this.b.TF_FLOAT });
  }
  private keep(m: Meta): Meta {
    this.owned.add(m.id);
    return m;
  }
  op(name: string, inputs: Meta[], attrs: Attr[] = [this.T], n = 1): Meta[] {
    const out = this.b.executeOp(name, attrs, inputs.map((m) => m.id), n);
    for (const m of out) this.owned.add(m.id);
    return out;
  }
  op1(name: string, ...inputs: Meta[]): Meta {
    return this.op(name, inputs)[0]!;
  }
  /** Sum / Mean over `axes` (keepDims as asked). */
  reduce(name: 'Sum' | 'Mean', x: Meta, axes: number[], keepDims: boolean): Meta {
    const attrs: Attr[] = [this.T, { name: 'Tidx', type: this.b.TF_ATTR_TYPE, value: this.b.TF_INT32 }, { name: 'keep_dims', type: this.b.TF_ATTR_BOOL, value: keepDims }];
    return this.op(name, [x, this.ints(axes)], attrs)[0]!;
  }
  /** Hand `m` to tfjs as a kernel output (no longer freed here). */
  out(m: Meta): tf.Tensor {
    this.owned.delete(m.id);
    return this.be.createOutputTensor(m);
  }
  dispose(): void {
    for (const id of this.owned) this.b.deleteTensor(id);
    this.owned.clear();
  }
}

export function withChain<T>(backend: unknown, f: (c: Chain) => T): T {
  const c = new Chain(backend as NodeBackend);
  try {
    return f(c);
  } finally {
    c.dispose();
  }
}
