/**
 * The attributes of the fused optimizer kernels (`SparkLambUpdate`, `SparkAdamWUpdate`; the contract is the header of
 * src/train/fused-optim.ts) and the scalars the native implementations take from them: the `hyper` vector of
 * spark's TensorFlow ops (native/tf/spark_tf_ops.cc) and of the torch addon's CPU loops (native/torch/
 * spark_fused_optim.h). Here, below train/ in the dependency order, so that both backends share one definition.
 */

/** Attributes of `SparkAdamWUpdate` (n = parameters in the call; the rest as the contract defines them). */
export interface AdamWUpdateAttrs {
  n: number;
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  biasCorrection1: number;
  biasCorrection2: number;
}

/** Attributes of `SparkLambUpdate`: AdamW's plus the trust-ratio switches. */
export interface LambUpdateAttrs extends AdamWUpdateAttrs {
  /** Apply the trust ratio (weightDecay ≠ 0, or the fine-tuning variant's alwaysAdapt). */
  adapt: boolean;
  trustClip: boolean;
}

/**
 * The 9 scalars of a native update, each computed exactly as the reference chains (src/train/fused-optim.ts)
 * compute it in JavaScript before tfjs rounds it to float32, so that the native loops round the same operands:
 * LAMB lr, weightDecay, β1, 1 − β1, β2, 1 − β2, eps, biasCorrection1, √biasCorrection2;
 * AdamW 1 − lr·weightDecay, weightDecay ≠ 0 (1/0), β1, 1 − β1, β2, 1 − β2, eps, √biasCorrection2, lr / biasCorrection1.
 */
export function nativeOptimizerScalars(kind: 'lamb' | 'adamw', a: AdamWUpdateAttrs): number[] {
  const common = [a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2, a.eps];
  return kind === 'lamb'
    ? [a.lr, a.weightDecay, ...common, a.biasCorrection1, Math.sqrt(a.biasCorrection2)]
    : [1 - a.lr * a.weightDecay, a.weightDecay !== 0 ? 1 : 0, ...common, Math.sqrt(a.biasCorrection2), a.lr / a.biasCorrection1];
}
