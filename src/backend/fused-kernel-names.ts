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
/** dy · relu'(y) from the ReLU's output y ≥ 0: dy where y > 0, else 0 (inputs dy, y). */
export const RELU_GRAD = 'SparkReluGrad';
/** dy · relu6'(y) from the ReLU6's output y ∈ [0, 6]: dy where 0 < y < 6, else 0 (PyTorch's hardtanh backward; inputs dy, y). */
export const RELU6_GRAD = 'SparkRelu6Grad';
export const FUSED_KERNELS = [BN_TRAIN, BN_TRAIN_GRAD, LAYER_NORM, LAYER_NORM_GRAD, GELU, GELU_GRAD, RELU_GRAD, RELU6_GRAD] as const;
