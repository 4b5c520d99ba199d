/**
 * The `finetune:` section (schemas/finetune.schema.json) and the reference fine-tuning recipe defaults of spec §7.1
 * that apply when a field is null.
 */
import path from 'node:path';
import type { EncoderSpec, ExperimentConfig } from '../spec/types.js';
import type { AutoAugment } from '../data/index.js';
import { resolveEncoder } from '../models/registry.js';

export interface ProbeConfig {
  epochs: number;
  lr: number;
  weight_decay: number;
  batch_size: number;
}

export type FinetuneAutoAugment = 'auto' | 'trivial_augment_wide' | 'auto_augment_v0' | null;

/** Input size from which the reference keeps timm's AutoAugment 'v0' instead of TrivialAugmentWide (spec §7.4). */
export const AUTO_AUGMENT_V0_FROM = 384;

/** `finetune.auto_augment` as the data pipeline takes it: 'auto' → TrivialAugmentWide below 384 px, AutoAugment 'v0' from 384. */
export function resolveAutoAugment(value: FinetuneAutoAugment, inputSize: number): AutoAugment {
  if (value === 'auto') return inputSize >= AUTO_AUGMENT_V0_FROM ? 'auto_augment_v0' : 'trivial_augment_wide';
  return value;
}

export interface FinetuneConfig {
  init: string | null;
  num_classes: number | null;
  optimizer: 'auto' | 'adamw' | 'lamb';
  layer_decay: number | null;
  label_smoothing: number;
  mixup: number | null;
  cutmix: number;
  mix_prob: number;
  switch_prob: number;
  crop_scale: [number, number];
  /**
   * Auto-augmentation after crop and flip (spec §7.4 step 3): 'auto' = the reference's choice by input size
   * (TrivialAugmentWide below 384 px, timm AutoAugment 'v0' from 384), or either one explicitly; null = none.
   */
  auto_augment: FinetuneAutoAugment;
  /** RandomErasing probability (timm mode 'pixel', one box, spec §7.4 step 6); 0 = none. */
  random_erasing: number;
  /** Repeated augmentation (timm RepeatAugSampler); null = the reference's (3 for ConvNeXt, 0 for ResNets); 0/1 = off. */
  repeated_aug: number | null;
  /** EMA decay of the weights (timm ModelEmaV2, spec §7.5); null = the reference's (0.9999; 0.99995 for ConvNeXt-L at 384); 0 = no EMA. */
  ema: number | null;
  eval_crop_pct: number;
  eval_every: number;
  probe: ProbeConfig;
}

export const FINETUNE_DEFAULTS: FinetuneConfig = {
  init: null,
  num_classes: null,
  optimizer: 'auto',
  layer_decay: null,
  label_smoothing: 0.1,
  mixup: null,
  cutmix: 1.0,
  mix_prob: 1.0,
  switch_prob: 0.5,
  crop_scale: [0.08, 1.0],
  auto_augment: 'auto',
  random_erasing: 0.25,
  repeated_aug: null,
  ema: null,
  eval_crop_pct: 0.95,
  eval_every: 1,
  probe: { epochs: 100, lr: 0.01, weight_decay: 0.0001, batch_size: 256 },
};

/** The section with defaults filled (the schema fills them too; this keeps code-built configs working). */
export function finetuneSection(config: ExperimentConfig): FinetuneConfig {
  const raw = (config.finetune ?? {}) as Partial<FinetuneConfig>;
  return { ...FINETUNE_DEFAULTS, ...raw, probe: { ...FINETUNE_DEFAULTS.probe, ...(raw.probe ?? {}) } };
}

/** `init` resolved against the spec file's folder (absolute paths and null pass through). */
export function resolveInitPath(init: string | null, specPath: string | null): string | null {
  if (!init) return null;
  if (path.isAbsolute(init) || !specPath) return path.resolve(init);
  return path.resolve(path.dirname(specPath), init);
}

export interface Recipe {
  optimizer: 'adamw' | 'lamb';
  layerDecay: number;
  mixup: number;
  dropPath: number;
  /** RepeatAugSampler repeats (0 = plain sampler). */
  repeatedAug: number;
  /** EMA decay of the weights. */
  emaDecay: number;
}

/**
 * Spec §7.1 `HP_DEFAULT_VALUES` by model: ConvNeXt → AdamW, layer decay 0.7, mixup 0.8, drop path 0.3/0.4/0.5
 * (S/B/L), repeated augmentation 3; ResNet-50 → LAMB, 0.7, mixup 0.1, drop path 0.05, no repeated augmentation;
 * deeper ResNets → LAMB, 0.8, 0.1, 0.2, none. EMA decay 0.9999 for all, 0.99995 for ConvNeXt-L at 384 px. Models
 * outside the table (small test variants, custom families) take their family's values with drop path 0.
 */
export function recipeFor(spec: EncoderSpec, inputSize = 224): Recipe {
  const r = resolveEncoder(spec);
  if (r.family === 'convnext') {
    const dp: Record<string, number> = { convnext_small: 0.3, convnext_base: 0.4, convnext_large: 0.5, convnext_tiny: 0.1 };
    const emaDecay = r.name === 'convnext_large' && inputSize >= 384 ? 0.99995 : 0.9999;
    return { optimizer: 'adamw', layerDecay: 0.7, mixup: 0.8, dropPath: dp[r.name] ?? 0, repeatedAug: 3, emaDecay };
  }
  const deep = r.layers[2] > 6;
  const named = ['resnet50', 'resnet101', 'resnet152', 'resnet200'].includes(r.name);
  return { optimizer: 'lamb', layerDecay: deep ? 0.8 : 0.7, mixup: 0.1, dropPath: named ? (deep ? 0.2 : 0.05) : 0, repeatedAug: 0, emaDecay: 0.9999 };
}
