/**
 * The resolved experiment configuration: what a spec file becomes after `extends:` merging, `--set` overrides and
 * schema defaults. `schemas/experiment.schema.json` is the source of truth; `test/spec-schema.test.ts` checks that
 * this type and the schema agree (every property here exists there and vice versa).
 */

/** A parameterised encoder, or the name of a preset (`resnet50`, `convnext_small`, `resnet_mini`, ...; src/models/registry.ts PRESET_NAMES). */
export type EncoderSpec =
  | string
  | { family: 'resnet'; layers: [number, number, number, number]; width?: number; name?: string }
  | { family: 'convnext'; depths: [number, number, number, number]; dims: [number, number, number, number]; name?: string };

export interface ModelConfig {
  encoder: EncoderSpec;
  decoder: { type: 'light'; width: number };
  /** Fraction of the input/32 grid cells that are masked, in (0, 1). */
  mask_ratio: number;
  /** Stochastic depth rate; null = the per-model pre-training default of spec §5.2. */
  drop_path: number | null;
  /** Densify norm; 'auto' = 'bn' for ResNets, 'ln' for ConvNeXts (spec §3.2). */
  densify_norm: 'auto' | 'bn' | 'ln' | 'none';
}

export interface DataConfig {
  source: 'synthetic' | 'imagefolder';
  /** Image folder root (ImageNet layout or flat); required when source = imagefolder. */
  root: string | null;
  /** Optional labelled validation folder (fine-tuning / probe / reconstruction grid). */
  val_root: string | null;
  /** Square input size in pixels, a multiple of 32. */
  input_size: number;
  /** RandomResizedCrop scale range. */
  crop_scale: [number, number];
  /** RandomResizedCrop aspect-ratio range. */
  crop_ratio: [number, number];
  /** Horizontal flip probability. */
  hflip: number;
  /** Decoding worker threads (0 = decode on the main thread). */
  workers: number;
  /** Batches decoded ahead of the training step. */
  prefetch: number;
  /** Number of images the synthetic source generates per epoch. */
  synthetic_size: number;
}

export interface OptimizerConfig {
  name: 'lamb' | 'adamw';
  base_lr: number;
  base_batch_size: number;
  /** [beta1, beta2]; null = per model family default (beta2 0.95 ResNet, 0.999 ConvNeXt). */
  betas: [number, number] | null;
  /** null = the optimizer's reference value (LAMB 1e-6, AdamW 1e-8). */
  eps: number | null;
  weight_decay: number;
  weight_decay_end: number;
  /** Global gradient-norm clip (LAMB clips inside the optimizer, spec §6.5); 0 disables. */
  clip_grad: number;
}

export interface TrainConfig {
  /** Exactly one of epochs / steps is set after resolution (the other is null). */
  epochs: number | null;
  steps: number | null;
  /** Images per optimizer step (what the learning rate is scaled by). */
  batch_size: number;
  /**
   * Micro-batches per step: batch_size is split into `accumulate` micro-batches of batch_size / accumulate images
   * (gradients averaged). 'auto' = the largest micro-batch that divides batch_size and fits the device's memory
   * (src/train/memory.ts); the run records what it chose (run.json `batch`, MLflow param `train.micro_batch`).
   */
  accumulate: number | 'auto';
  optimizer: OptimizerConfig;
  /** Exactly one of warmup_epochs / warmup_steps is used (warmup_steps wins when set). */
  warmup_epochs: number;
  warmup_steps: number | null;
}

export interface RuntimeConfig {
  backend: 'auto' | 'tensorflow' | 'torch' | 'wasm' | 'cpu';
  /** torch backend device: auto | cpu | cuda | cuda:N (schema default auto; absent in configs written before it). */
  device?: string;
  /** TF32 convolutions on CUDA (schema default true). */
  tf32?: boolean;
  seed: number;
  /** Compute threads; null = all cores. */
  threads: number | null;
}

export interface OutputConfig {
  /** Root of run folders: `<dir>/<name>/<run-id>/`. */
  dir: string;
  /** Write a checkpoint every N optimizer steps (0 = only at the end). */
  checkpoint_every: number;
  /** Emit a `step` log line / metric every N steps. */
  log_every: number;
  /** Write a reconstruction grid of a fixed validation batch every N epochs (0 = never). */
  reconstruct_every: number;
  /** Images in that grid. */
  reconstruct_images: number;
}

export interface TrackingConfig {
  enabled: boolean;
  /** MLflow tracking URI; null = $MLFLOW_TRACKING_URI or ./mlruns. */
  uri: string | null;
  experiment: string;
  run_name: string | null;
  tags: Record<string, string>;
  /** Seconds a run's end (and a start the server does not answer) waits for tracking; the rest stays journaled. */
  close_timeout: number;
}

/** Defined by the sweep module (schemas/sweep.schema.json). */
export interface SweepConfig {
  grid?: Record<string, unknown[]>;
  zip?: Record<string, unknown[]>;
  list?: Array<Record<string, unknown>>;
  [key: string]: unknown;
}

export interface ExperimentConfig {
  name: string;
  description: string | null;
  task: 'pretrain' | 'finetune' | 'probe';
  model: ModelConfig;
  data: DataConfig;
  train: TrainConfig;
  runtime: RuntimeConfig;
  output: OutputConfig;
  tracking: TrackingConfig;
  sweep: SweepConfig | null;
  /** Fine-tuning / probe section (issue 7); free-form until that module defines it. */
  finetune: Record<string, unknown> | null;
}
