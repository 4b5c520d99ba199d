/** Public API of the data pipeline (spec §6.1 data aug and sampler). */
export { checkDataReadable } from './check.js';
export { createLoader, type Loader, type LoaderOptions, type Batch, type SkippedFile, type AugmentMode } from './loader.js';
export { IMAGENET_MEAN, IMAGENET_STD, denormalize, denormalizeToUint8, normalizeRgb } from './normalize.js';
export { countImages, scanImageFolder, isImageFile, IMAGE_EXTENSIONS, type ImageFolder } from './imagefolder.js';
export {
  loadEvalImage,
  decodeEval,
  decodeTrain,
  sampleRandomResizedCrop,
  preShrinkFactor,
  type CropBox,
  type EvalOptions,
  type TrainTransform,
  type DecodedImage,
} from './transforms.js';
export { syntheticImage, syntheticLabelled, syntheticLabel, SYNTHETIC_MAX_CLASSES, SHAPE_KINDS, FILL_KINDS } from './synthetic.js';
export { writeSyntheticFolder, type SyntheticFolder, type SyntheticFolderOptions } from './synthetic-folder.js';
export { EpochBatchSampler, epochSteps, type EpochSamplerOptions, type StepSlots, type BatchSampler } from './sampler.js';
export { RepeatAugBatchSampler } from './repeat-sampler.js';
export { postCrop, flipRgb, hasPostCropDraws, AUTO_AUGMENTS, type AutoAugment, type PostCropOptions } from './augment.js';
export { randomErasing, type RandomErasingOptions, type ErasedBox, type ErasingMode } from './random-erasing.js';
export {
  TA_OPS,
  TA_BINS,
  TA_SPACE,
  applyTaOp,
  sampleTrivialAugment,
  trivialAugmentWide,
  inverseAffineMatrix,
  linspaceF32,
  type TaOp,
  type TaDraw,
} from './trivial-augment.js';
export {
  AA_OPS,
  AA_V0_POLICY,
  AA_LEVEL_DENOM,
  AA_SIGNED,
  aaHparams,
  aaLevelToArg,
  applyAaOp,
  applyAaDraw,
  sampleAutoAugment,
  autoAugmentV0,
  type AaOp,
  type AaOpSpec,
  type AaHparams,
  type AaDraw,
  type AaOpDraw,
  type UniformSource,
} from './auto-augment.js';
export {
  affineBicubic,
  rotateBicubic,
  autocontrast,
  equalize,
  posterize,
  solarize,
  solarizeAdd,
  invert,
  brightness,
  color,
  contrast,
  sharpness,
  type Rgb,
} from './pil-ops.js';
