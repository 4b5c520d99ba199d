/**
 * Encoder presets and pure arithmetic over the model definitions (no tensors): parameter counts, FLOPs, stage
 * widths and per-model pre-training defaults. Used by the dry-run (`spark validate`/`planRun`), `spark list models`
 * and the model builders (which must — and are tested to — agree with these numbers to the unit).
 *
 * Families (spec §2.4, §2.5):
 * - `{ family: 'resnet', layers: [l1,l2,l3,l4], width? }` — timm ResNet v1.5 with Bottleneck blocks. `width` is the
 *   base number of planes (64 by default): stage s has planes width·2^s and outputs 4·width·2^s channels; the stem
 *   conv outputs `width` channels.
 * - `{ family: 'convnext', depths: [d1..d4], dims: [c1..c4] }` — the official ConvNeXt as used by SparK.
 *
 * Presets:
 * | name            | definition                                              | drop path | β2    |
 * |-----------------|---------------------------------------------------------|-----------|-------|
 * | resnet50        | resnet layers [3,4,6,3]                                 | 0.05      | 0.95  |
 * | resnet101       | resnet layers [3,4,23,3]                                | 0.08      | 0.95  |
 * | resnet152       | resnet layers [3,8,36,3]                                | 0.10      | 0.95  |
 * | resnet200       | resnet layers [3,24,36,3]                               | 0.15      | 0.95  |
 * | convnext_tiny   | convnext depths [3,3,9,3] dims [96,192,384,768]         | 0.10 (*)  | 0.999 |
 * | convnext_small  | convnext depths [3,3,27,3] dims [96,192,384,768]        | 0.2       | 0.999 |
 * | convnext_base   | convnext depths [3,3,27,3] dims [128,256,512,1024]      | 0.3       | 0.999 |
 * | convnext_large  | convnext depths [3,3,27,3] dims [192,384,768,1536]      | 0.4       | 0.999 |
 * | resnet_mini     | resnet layers [1,1,1,1], width 16 (channels 64..512)    | 0         | 0.95  |
 * | convnext_mini   | convnext depths [1,1,2,1] dims [32,64,128,256]          | 0         | 0.999 |
 *
 * (*) The reference has no pre-training default for ConvNeXt-T (spec §5.1, §12); 0.1 is the official ConvNeXt-T
 * ImageNet value. The two `*_mini` presets are not from the paper: they are small variants for tests, CPU smoke runs
 * and the quickstart.
 */
import type { EncoderSpec, ModelConfig } from '../spec/types.js';
import { UsageError } from '../util/errors.js';

export type Family = 'resnet' | 'convnext';
type Quad = [number, number, number, number];

export interface ResolvedResNet {
  family: 'resnet';
  name: string;
  layers: Quad;
  width: number;
  defaultDropPath: number;
}
export interface ResolvedConvNeXt {
  family: 'convnext';
  name: string;
  depths: Quad;
  dims: Quad;
  defaultDropPath: number;
}
export type ResolvedEncoder = ResolvedResNet | ResolvedConvNeXt;

export interface EncoderInfo {
  name: string;
  family: Family;
  /** Output channels of the 4 returned maps, strides 4, 8, 16, 32. */
  stageChannels: Quad;
  /** Parameters of the encoder without any head (what SparK pre-trains). */
  encoderParams: number;
  /** Parameters of a classification head (ResNet: fc; ConvNeXt: final LN + head). */
  headParams(numClasses: number): number;
  /**
   * Multiply-accumulates of all conv and linear layers at a square input, plus a head of `numClasses` (default 0 =
   * backbone only; the spec §5.2 "mine" values — R50 4.087G, CNX-S 8.683G — are backbone-only MACs: with the
   * 1000-class head they would be 2.05M / 0.77M higher).
   */
  flops(inputSize: number, numClasses?: number): number;
  defaultDropPath: number;
  defaultBeta2: number;
  layers?: Quad;
  width?: number;
  depths?: Quad;
  dims?: Quad;
}

/** The downsample ratio of every supported encoder (spec §1.1). */
export const DOWNSAMPLE_RATIO = 32;

interface PresetDef {
  spec: Exclude<EncoderSpec, string>;
  dropPath: number;
  description: string;
}

const PRESETS: Record<string, PresetDef> = {
  resnet50: { spec: { family: 'resnet', layers: [3, 4, 6, 3] }, dropPath: 0.05, description: 'ResNet-50 (timm v1.5 Bottleneck)' },
  resnet101: { spec: { family: 'resnet', layers: [3, 4, 23, 3] }, dropPath: 0.08, description: 'ResNet-101' },
  resnet152: { spec: { family: 'resnet', layers: [3, 8, 36, 3] }, dropPath: 0.1, description: 'ResNet-152' },
  resnet200: { spec: { family: 'resnet', layers: [3, 24, 36, 3] }, dropPath: 0.15, description: 'ResNet-200' },
  convnext_tiny: {
    spec: { family: 'convnext', depths: [3, 3, 9, 3], dims: [96, 192, 384, 768] },
    dropPath: 0.1,
    description: 'ConvNeXt-T (no reference pre-training default; drop path 0.1 from the official ConvNeXt)',
  },
  convnext_small: { spec: { family: 'convnext', depths: [3, 3, 27, 3], dims: [96, 192, 384, 768] }, dropPath: 0.2, description: 'ConvNeXt-S' },
  convnext_base: { spec: { family: 'convnext', depths: [3, 3, 27, 3], dims: [128, 256, 512, 1024] }, dropPath: 0.3, description: 'ConvNeXt-B' },
  convnext_large: { spec: { family: 'convnext', depths: [3, 3, 27, 3], dims: [192, 384, 768, 1536] }, dropPath: 0.4, description: 'ConvNeXt-L' },
  resnet_mini: { spec: { family: 'resnet', layers: [1, 1, 1, 1], width: 16 }, dropPath: 0, description: 'small test ResNet (1 Bottleneck per stage, width 16)' },
  convnext_mini: { spec: { family: 'convnext', depths: [1, 1, 2, 1], dims: [32, 64, 128, 256] }, dropPath: 0, description: 'small test ConvNeXt' },
};

/** Names of the encoder presets, in display order. */
export const PRESET_NAMES: readonly string[] = Object.freeze(Object.keys(PRESETS));

/** One-line description of a preset (for `spark list models`). */
export function presetDescription(name: string): string | undefined {
  return PRESETS[name]?.description;
}

function isQuad(a: unknown): a is Quad {
  return Array.isArray(a) && a.length === 4 && a.every((v) => Number.isInteger(v) && v > 0);
}

/** Resolve a preset name or a parameterised family into a concrete definition; throws UsageError when invalid. */
export function resolveEncoder(spec: EncoderSpec): ResolvedEncoder {
  if (typeof spec === 'string') {
    const p = PRESETS[spec];
    if (!p) throw new UsageError(`unknown encoder '${spec}' (known: ${PRESET_NAMES.join(', ')})`);
    const r = resolveEncoder(p.spec);
    return { ...r, name: spec, defaultDropPath: p.dropPath };
  }
  if (spec.family === 'resnet') {
    if (!isQuad(spec.layers)) throw new UsageError(`encoder.layers must be 4 positive integers, got ${JSON.stringify(spec.layers)}`);
    const width = spec.width ?? 64;
    if (!Number.isInteger(width) || width <= 0) throw new UsageError(`encoder.width must be a positive integer, got ${width}`);
    const layers = [...spec.layers] as Quad;
    const name = spec.name ?? `resnet(layers=[${layers.join(',')}]${width !== 64 ? `,width=${width}` : ''})`;
    return { family: 'resnet', name, layers, width, defaultDropPath: 0 };
  }
  if (spec.family === 'convnext') {
    if (!isQuad(spec.depths)) throw new UsageError(`encoder.depths must be 4 positive integers, got ${JSON.stringify(spec.depths)}`);
    if (!isQuad(spec.dims)) throw new UsageError(`encoder.dims must be 4 positive integers, got ${JSON.stringify(spec.dims)}`);
    const depths = [...spec.depths] as Quad;
    const dims = [...spec.dims] as Quad;
    const name = spec.name ?? `convnext(depths=[${depths.join(',')}],dims=[${dims.join(',')}])`;
    return { family: 'convnext', name, depths, dims, defaultDropPath: 0 };
  }
  throw new UsageError(`unknown encoder family '${(spec as { family?: unknown }).family}' (known: resnet, convnext)`);
}

/** Output size of a conv/pool: floor((n + 2p − k)/s) + 1 (PyTorch). */
export function convOut(n: number, k: number, s: number, p: number): number {
  return Math.floor((n + 2 * p - k) / s) + 1;
}

function resnetStageChannels(r: ResolvedResNet): Quad {
  return [0, 1, 2, 3].map((s) => 4 * r.width * 2 ** s) as Quad;
}

function resnetParams(r: ResolvedResNet): number {
  const bn = (c: number) => 2 * c;
  let n = 3 * r.width * 49 + bn(r.width); // conv1 7x7 (no bias) + bn1
  let inplanes = r.width;
  for (let s = 0; s < 4; s++) {
    const p = r.width * 2 ** s;
    for (let b = 0; b < r.layers[s]!; b++) {
      n += inplanes * p + bn(p); // conv1 1x1 + bn1
      n += 9 * p * p + bn(p); // conv2 3x3 + bn2
      n += p * 4 * p + bn(4 * p); // conv3 1x1 + bn3
      if (b === 0) n += inplanes * 4 * p + bn(4 * p); // downsample conv + bn
      inplanes = 4 * p;
    }
  }
  return n;
}

function resnetFlops(r: ResolvedResNet, size: number, numClasses: number): number {
  let macs = 0;
  let h = convOut(size, 7, 2, 3);
  macs += h * h * 49 * 3 * r.width;
  h = convOut(h, 3, 2, 1); // maxpool
  let inplanes = r.width;
  for (let s = 0; s < 4; s++) {
    const p = r.width * 2 ** s;
    for (let b = 0; b < r.layers[s]!; b++) {
      const stride = b === 0 && s > 0 ? 2 : 1;
      const ho = convOut(h, 3, stride, 1);
      macs += h * h * inplanes * p; // conv1 at input res
      macs += ho * ho * 9 * p * p; // conv2 (stride here)
      macs += ho * ho * p * 4 * p; // conv3
      if (b === 0) macs += ho * ho * inplanes * 4 * p; // downsample 1x1 stride s
      inplanes = 4 * p;
      h = ho;
    }
  }
  return macs + inplanes * numClasses;
}

function convnextParams(c: ResolvedConvNeXt): number {
  const d = c.dims;
  let n = 3 * d[0] * 16 + d[0] + 2 * d[0]; // stem conv 4x4 + bias, LN
  for (let i = 1; i < 4; i++) n += 2 * d[i - 1]! + d[i - 1]! * d[i]! * 4 + d[i]!; // LN + conv 2x2
  for (let i = 0; i < 4; i++) {
    const C = d[i]!;
    const block = 49 * C + C + 2 * C + (C * 4 * C + 4 * C) + (4 * C * C + C) + C;
    n += c.depths[i]! * block;
  }
  return n;
}

function convnextFlops(c: ResolvedConvNeXt, size: number, numClasses: number): number {
  const d = c.dims;
  let h = convOut(size, 4, 4, 0);
  let macs = h * h * 16 * 3 * d[0];
  for (let i = 0; i < 4; i++) {
    const C = d[i]!;
    if (i > 0) {
      h = convOut(h, 2, 2, 0);
      macs += h * h * 4 * d[i - 1]! * C;
    }
    macs += c.depths[i]! * h * h * (49 * C + 8 * C * C);
  }
  return macs + d[3] * numClasses;
}

/** Pure arithmetic description of an encoder (contract: models). */
export function describeEncoder(spec: EncoderSpec): EncoderInfo {
  const r = resolveEncoder(spec);
  if (r.family === 'resnet') {
    const stageChannels = resnetStageChannels(r);
    const c = stageChannels[3];
    return {
      name: r.name,
      family: 'resnet',
      stageChannels,
      encoderParams: resnetParams(r),
      headParams: (k: number) => (k > 0 ? c * k + k : 0),
      flops: (size: number, k = 0) => resnetFlops(r, size, k),
      defaultDropPath: r.defaultDropPath,
      defaultBeta2: 0.95,
      layers: r.layers,
      width: r.width,
    };
  }
  const c = r.dims[3];
  return {
    name: r.name,
    family: 'convnext',
    stageChannels: [...r.dims] as Quad,
    encoderParams: convnextParams(r),
    headParams: (k: number) => (k > 0 ? 2 * c + c * k + k : 0),
    flops: (size: number, k = 0) => convnextFlops(r, size, k),
    defaultDropPath: r.defaultDropPath,
    defaultBeta2: 0.999,
    depths: r.depths,
    dims: r.dims,
  };
}

/** The densify norm actually used ('auto' → 'bn' for ResNets, 'ln' for ConvNeXts; spec §3.2). */
export function resolveDensifyNorm(family: Family, norm: ModelConfig['densify_norm']): 'bn' | 'ln' | 'none' {
  if (norm === 'auto') return family === 'resnet' ? 'bn' : 'ln';
  return norm;
}

/** Decoder channels [w, w/2, ..., w/32] for a decoder width (spec §3.3). */
export function decoderChannels(width: number): number[] {
  if (!Number.isInteger(width) || width < 32 || width % 32 !== 0) {
    throw new UsageError(`model.decoder.width must be a positive multiple of 32, got ${width}`);
  }
  return [0, 1, 2, 3, 4, 5].map((i) => width / 2 ** i);
}

/** LightDecoder parameter count (spec §3.3: 23,183,115 at width 768). */
export function decoderParamCount(width: number): number {
  const ch = decoderChannels(width);
  let n = 0;
  for (let i = 0; i < 5; i++) {
    const cin = ch[i]!;
    const cout = ch[i + 1]!;
    n += cin * cin * 16 + cin; // up_sample ConvTranspose k4 + bias
    n += 9 * cin * cin + 2 * cin; // conv3x3 no bias + BN
    n += 9 * cin * cout + 2 * cout; // conv3x3 no bias + BN
  }
  return n + ch[5]! * 3 + 3; // proj 1x1 → 3
}

export interface SparkParamBreakdown {
  encoder: number;
  densifyNorms: number;
  densifyProjs: number;
  maskTokens: number;
  decoder: number;
  total: number;
}

/** Per-part parameter counts of a SparK model (spec §3.4). */
export function sparkParamBreakdown(model: ModelConfig, inputSize?: number): SparkParamBreakdown {
  if (inputSize != null && (!Number.isInteger(inputSize) || inputSize <= 0 || inputSize % DOWNSAMPLE_RATIO !== 0)) {
    throw new UsageError(`input size must be a positive multiple of ${DOWNSAMPLE_RATIO}, got ${inputSize}`);
  }
  const info = describeEncoder(model.encoder);
  const width = model.decoder.width;
  const ch = decoderChannels(width);
  const norm = resolveDensifyNorm(info.family, model.densify_norm);
  let densifyNorms = 0;
  let densifyProjs = 0;
  let maskTokens = 0;
  for (let i = 0; i < 4; i++) {
    const e = info.stageChannels[3 - i]!;
    const d = ch[i]!;
    if (norm !== 'none') densifyNorms += 2 * e; // BN or LN: weight + bias
    if (i === 0) densifyProjs += e === d ? 0 : e * d + d;
    else densifyProjs += 9 * e * d + d;
    maskTokens += e;
  }
  const encoder = info.encoderParams;
  const decoder = decoderParamCount(width);
  return { encoder, densifyNorms, densifyProjs, maskTokens, decoder, total: encoder + densifyNorms + densifyProjs + maskTokens + decoder };
}

/** Total trainable parameters of a SparK model (encoder, densify norms and projections, mask tokens, decoder). */
export function sparkParamCount(model: ModelConfig, inputSize?: number): number {
  return sparkParamBreakdown(model, inputSize).total;
}

/** Default drop path of an encoder spec (per-model pre-training default; 0 for custom families). */
export function defaultDropPath(spec: EncoderSpec): number {
  return resolveEncoder(spec).defaultDropPath;
}

/**
 * Activation elements of one image in one SparK training forward pass at a square input: the outputs of every conv /
 * linear layer of the encoder and of the decoder (each is followed by a norm and an activation whose outputs
 * backprop also keeps; the calibration factor of `train/memory.ts` absorbs those). Pure arithmetic, like the FLOPs.
 */
export function activationElementsPerImage(model: ModelConfig, inputSize: number): { encoder: number; decoder: number; total: number } {
  const r = resolveEncoder(model.encoder);
  let enc = 0;
  if (r.family === 'resnet') {
    let h = convOut(inputSize, 7, 2, 3);
    enc += h * h * r.width;
    h = convOut(h, 3, 2, 1);
    enc += h * h * r.width; // maxpool
    for (let s = 0; s < 4; s++) {
      const p = r.width * 2 ** s;
      for (let b = 0; b < r.layers[s]!; b++) {
        const ho = convOut(h, 3, b === 0 && s > 0 ? 2 : 1, 1);
        enc += h * h * p + ho * ho * p + ho * ho * 4 * p; // conv1, conv2, conv3
        if (b === 0) enc += ho * ho * 4 * p; // downsample
        h = ho;
      }
    }
  } else {
    const d = r.dims;
    let h = convOut(inputSize, 4, 4, 0);
    enc += h * h * d[0];
    for (let i = 0; i < 4; i++) {
      const C = d[i]!;
      if (i > 0) {
        h = convOut(h, 2, 2, 0);
        enc += h * h * C;
      }
      enc += r.depths[i]! * h * h * (C + 4 * C + C); // dwconv, pwconv1, pwconv2
    }
  }
  const ch = decoderChannels(model.decoder.width);
  let dec = 0;
  let f = Math.floor(inputSize / DOWNSAMPLE_RATIO);
  for (let i = 0; i < 5; i++) {
    f *= 2;
    dec += f * f * (2 * ch[i]! + ch[i + 1]!); // up-sample, conv0, conv3
  }
  dec += f * f * 3;
  return { encoder: enc, decoder: dec, total: enc + dec };
}
