import type { KernelConfig } from '@tensorflow/tfjs';
export const fusedKernels: KernelConfig[] = [];
