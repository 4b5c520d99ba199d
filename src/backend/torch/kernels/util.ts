/** Kernel registration helpers of the torch backend. */
import type { KernelConfig, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import type { TorchBackend } from '../backend.js';

export type TorchKernel = (b: TorchBackend, inputs: NamedTensorInfoMap, attrs: NamedAttrMap) => TensorInfo | TensorInfo[];

export function kernel(kernelName: string, fn: TorchKernel): KernelConfig {
  return {
    kernelName,
    backendName: 'torch',
    kernelFunc: ({ inputs, backend, attrs }) => fn(backend as TorchBackend, inputs, attrs ?? {}),
  };
}

/** The tensors of a kernel whose inputs are a list (Concat, AddN, Pack). */
export function listInputs(inputs: NamedTensorInfoMap): TensorInfo[] {
  return Array.isArray(inputs) ? (inputs as unknown as TensorInfo[]) : (Object.values(inputs) as TensorInfo[]);
}

/** Normalised, sorted reduction axes (tfjs allows a number, an array, negative values). */
export function axes(axis: number | number[] | null | undefined, rank: number): number[] {
  if (axis === null || axis === undefined) return [...Array(rank).keys()];
  const a = (Array.isArray(axis) ? axis : [axis]).map((x) => (x < 0 ? x + rank : x));
  for (const x of a) if (x < 0 || x >= rank) throw new Error(`axis ${x} out of range for rank ${rank}`);
  return [...new Set(a)].sort((p, q) => p - q);
}

export const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
