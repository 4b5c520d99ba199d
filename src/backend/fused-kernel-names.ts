/**
 * Names of spark's fused kernels (the contract is in the header of src/models/fused.ts). Here, below models in the
 * dependency order, so that backends can register kernels under them.
 */
export const BN_TRAIN = 'SparkBatchNormTrain';
export const BN_TRAIN_GRAD = 'SparkBatchNormTrainGrad';
export const LAYER_NORM = 'SparkLayerNorm';
export const LAYER_NORM_GRAD = 'SparkLayerNormGrad';
export const GELU = 'SparkGelu';
export const GELU_GRAD = 'SparkGeluGrad';
export const FUSED_KERNELS = [BN_TRAIN, BN_TRAIN_GRAD, LAYER_NORM, LAYER_NORM_GRAD, GELU, GELU_GRAD] as const;
