/** Every kernel the torch backend registers. */
import type { KernelConfig } from '@tensorflow/tfjs';
import { convKernels } from './conv.js';
import { elementwiseKernels } from './elementwise.js';
import { fusedKernels } from './fused.js';
import { optimKernels } from './optim.js';
import { matmulKernels } from './matmul.js';
import { reduceKernels } from './reduce.js';
import { shapeKernels } from './shape.js';

export const torchKernels: KernelConfig[] = [...elementwiseKernels, ...reduceKernels, ...shapeKernels, ...convKernels, ...matmulKernels, ...fusedKernels, ...optimKernels];
