/**
 * The SparK model (spec §1, §3, §4): random masking, sparse encoder, per-scale densify (norm → mask token →
 * projection), LightDecoder, and the per-patch normalised masked-patch L2 loss. Also `buildEncoder` for dense use
 * (fine-tuning, linear probe) with an optional classification head.
 *
 * Reference keys (spec §8.2): `sparse_encoder.sp_cnn.<encoder keys>`, `dense_decoder.*`, `densify_norms.{i}.*`,
 * `densify_projs.{i}.*` (none for an Identity projection), `mask_tokens.{i}` — i = 0 is stride 32.
 */
import * as tf from '@tensorflow/tfjs';
import type { EncoderSpec, ModelConfig } from '../spec/types.js';
import { UsageError } from '../util/errors.js';
import { Rng, roundHalfEven } from '../util/rng.js';
import { defineConvNeXt } from './convnext.js';
import { defineLightDecoder, type LightDecoder } from './decoder.js';
import { batchNorm, conv2d, layerNorm, linear, MaskPyramid, upsampleMask, type BatchNormVars } from './ops.js';
import { maskTokenFill } from './fused.js';
import { ParamStore, torchDefaultBound, truncNormal02, type ParamScope, type TensorDef } from './params.js';
import {
  DOWNSAMPLE_RATIO,
  describeEncoder,
  resolveDensifyNorm,
  resolveEncoder,
  type EncoderInfo,
  type ResolvedEncoder,
} from './registry.js';
import { defineResNet, type EncoderCore, type ForwardCtx } from './resnet.js';

export type { ForwardCtx } from './resnet.js';

export const ENCODER_PREFIX = 'sparse_encoder.sp_cnn.';
export const DECODER_PREFIX = 'dense_decoder.';
export const PATCH = DOWNSAMPLE_RATIO;

/** len_keep = round_half_even(L·(1 − ratio)) (spec §1.2). */
export function lenKeepFor(inputSize: number, maskRatio: number): number {
  const f = Math.floor(inputSize / DOWNSAMPLE_RATIO);
  return roundHalfEven(f * f * (1 - maskRatio));
}

/**
 * A random mask [B, f, f, 1] float32, 1 = visible, exactly `lenKeep` visible cells per image, uniformly chosen
 * (partial Fisher–Yates from `rng`, image by image; cells row-major l = row·f + col).
 */
export function randomMask(batch: number, fmap: number, lenKeep: number, rng: Rng): tf.Tensor4D {
  const L = fmap * fmap;
  if (!(lenKeep >= 0 && lenKeep <= L)) throw new Error(`randomMask: lenKeep ${lenKeep} outside [0, ${L}]`);
  const data = new Float32Array(batch * L);
  const idx = new Int32Array(L);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < L; i++) idx[i] = i;
    for (let i = 0; i < lenKeep; i++) {
      const j = i + rng.int(L - i);
      const t = idx[i]!;
      idx[i] = idx[j]!;
      idx[j] = t;
      data[b * L + idx[i]!] = 1;
    }
  }
  return tf.tensor4d(data, [batch, fmap, fmap, 1]);
}

/** (B, H, W, C) → (B, L, p·p·C), channel fastest (spec §4.1). */
export function patchify(x: tf.Tensor4D, p = PATCH): tf.Tensor3D {
  const [b, H, W, C] = x.shape;
  const h = H / p;
  const w = W / p;
  if (!Number.isInteger(h) || !Number.isInteger(w)) throw new Error(`patchify: ${H}×${W} is not divisible by ${p}`);
  return tf.tidy(() => x.reshape([b, h, p, w, p, C]).transpose([0, 1, 3, 2, 4, 5]).reshape([b, h * w, p * p * C]) as tf.Tensor3D);
}

/** Exact inverse of `patchify`: (B, L, p·p·C) → (B, H, W, C). */
export function unpatchify(x: tf.Tensor3D, p = PATCH, channels = 3): tf.Tensor4D {
  const [b, L, N] = x.shape;
  const h = Math.round(Math.sqrt(L));
  if (h * h !== L || N !== p * p * channels) throw new Error(`unpatchify: bad shape ${JSON.stringify(x.shape)}`);
  return tf.tidy(() => x.reshape([b, h, h, p, p, channels]).transpose([0, 1, 3, 2, 4, 5]).reshape([b, h * p, h * p, channels]) as tf.Tensor4D);
}

/** Per-patch mean and std = √(unbiased var + 1e-6) of a patchified input (spec §4.2), each [B, L, 1]. */
export function patchStats(patches: tf.Tensor3D, eps = 1e-6): { mean: tf.Tensor3D; std: tf.Tensor3D } {
  return tf.tidy(() => {
    const n = patches.shape[2];
    const mean = tf.mean(patches, -1, true) as tf.Tensor3D;
    const varUnbiased = tf.div(tf.sum(tf.square(tf.sub(patches, mean)), -1, true), n - 1);
    const std = tf.sqrt(tf.add(varUnbiased, eps)) as tf.Tensor3D;
    return { mean, std };
  });
}

/**
 * SparK loss (spec §4): target = per-patch normalised input, per-patch MSE of the prediction, averaged over masked
 * patches only: Σ l2·(1−m) / (Σ(1−m) + 1e-8). `inp` and `pred` are [B,H,W,3], `mask` [B,f,f,1] (1 = visible).
 * `biasedVariance` exists only to show it gives a different value (tests).
 */
export function sparkLoss(inp: tf.Tensor4D, pred: tf.Tensor4D, mask: tf.Tensor4D, opts: { biasedVariance?: boolean } = {}): tf.Scalar {
  return tf.tidy(() => {
    const target0 = patchify(inp);
    let mean: tf.Tensor3D;
    let std: tf.Tensor3D;
    if (opts.biasedVariance) {
      const mom = tf.moments(target0, -1, true);
      mean = mom.mean as tf.Tensor3D;
      std = tf.sqrt(tf.add(mom.variance, 1e-6)) as tf.Tensor3D;
    } else {
      ({ mean, std } = patchStats(target0));
    }
    const target = tf.div(tf.sub(target0, mean), std);
    const rec = patchify(pred);
    const l2 = tf.mean(tf.square(tf.sub(rec, target)), -1); // [B, L]
    const [b, f] = mask.shape;
    const nonActive = tf.sub(1, tf.reshape(mask, [b, f * f]));
    return tf.div(tf.sum(tf.mul(l2, nonActive)), tf.add(tf.sum(nonActive), 1e-8)) as tf.Scalar;
  });
}

/** The dense or sparse encoder with its own parameters (contract: `buildEncoder`). */
export interface Encoder {
  info: EncoderInfo;
  name: string;
  stageChannels: [number, number, number, number];
  dropPath: number;
  /** Trainable parameters and BN buffers, keyed by reference (timm / official ConvNeXt) names, plus the head if any. */
  params: Map<string, tf.Variable>;
  buffers: Map<string, tf.Variable>;
  /** Definitions (key, TF shape, role, layout) in reference state-dict order. */
  defs: TensorDef[];
  /** Number of classes of the head (0 = none). */
  numClasses: number;
  /** The 4 stage maps (strides 4..32). `mask` [B,f,f,1] makes it sparse (input is masked first); null = dense. */
  encode(x: tf.Tensor4D, mask: tf.Tensor4D | null, ctx: ForwardCtx): tf.Tensor4D[];
  /**
   * Logits [B, numClasses] of the dense network with its head (ResNet: global average pool → fc; ConvNeXt: global
   * average pool → LayerNorm `norm` → `head`). Throws when numClasses = 0.
   */
  classify(x: tf.Tensor4D, ctx: ForwardCtx): tf.Tensor2D;
  dispose(): void;
}

export interface BuildEncoderOptions {
  seed: number;
  /** Drop-path rate; null/undefined = the encoder's pre-training default. */
  dropPath?: number | null;
  /** Add a classification head with this many classes (fine-tuning); default 0. */
  numClasses?: number;
  /** Key prefix (default '' = timm / official-ConvNeXt names). */
  prefix?: string;
  /** Only record definitions, create no tensors (counts and key lists of full-size models). */
  shapesOnly?: boolean;
}

function defineEncoderCore(s: ParamScope, r: ResolvedEncoder, dropPath: number): EncoderCore {
  return r.family === 'resnet' ? defineResNet(s, r, dropPath) : defineConvNeXt(s, r, dropPath);
}

/** Build an encoder (optionally with a classification head) for dense use. */
export function buildEncoder(spec: EncoderSpec, opts: BuildEncoderOptions): Encoder {
  const r = resolveEncoder(spec);
  const info = describeEncoder(spec);
  const dropPath = opts.dropPath ?? r.defaultDropPath;
  const numClasses = opts.numClasses ?? 0;
  const store = new ParamStore(opts.seed, !opts.shapesOnly);
  const s = store.scope(opts.prefix ?? '');
  const core = defineEncoderCore(s, r, dropPath);
  const c = core.stageChannels[3];
  let head: { norm?: { weight: tf.Variable; bias: tf.Variable }; w: tf.Variable; b: tf.Variable } | null = null;
  if (numClasses > 0) {
    if (r.family === 'resnet') {
      // timm ResNet leaves fc at PyTorch's Linear default init
      head = { w: s.param('fc.weight', [c, numClasses], torchDefaultBound(c), 'linear'), b: s.vector('fc.bias', numClasses, torchDefaultBound(c)) };
    } else {
      const norm = s.layerNorm('norm', c);
      head = { norm, w: s.param('head.weight', [c, numClasses], truncNormal02, 'linear'), b: s.vector('head.bias', numClasses, { kind: 'zeros' }) };
    }
  }
  const encode = (x: tf.Tensor4D, mask: tf.Tensor4D | null, ctx: ForwardCtx): tf.Tensor4D[] => {
    if (!mask) return core.forward(x, null, ctx);
    const masks = new MaskPyramid(mask);
    return core.forward(masks.apply(x), masks, ctx);
  };
  return {
    info,
    name: r.name,
    stageChannels: core.stageChannels,
    dropPath,
    params: store.params,
    buffers: store.buffers,
    defs: store.defs,
    numClasses,
    encode,
    classify(x, ctx) {
      if (!head) throw new Error('classify: this encoder was built without a head (numClasses = 0)');
      const h = head;
      return tf.tidy(() => {
        const feats = core.forward(x, null, ctx);
        let pooled = tf.mean(feats[3]!, [1, 2]) as tf.Tensor2D;
        if (h.norm) pooled = layerNorm(pooled as unknown as tf.Tensor4D, h.norm.weight, h.norm.bias, null) as unknown as tf.Tensor2D;
        return linear(pooled, h.w as unknown as tf.Tensor2D, h.b) as tf.Tensor2D;
      });
    },
    dispose: () => store.dispose(),
  };
}

export interface SparKForwardOptions {
  training: boolean;
  /** DropPath draws (training with drop path > 0). E.g. `Rng.from(seed, 'droppath', step)`. */
  rng?: Rng;
}

export interface SparKModel {
  encoderName: string;
  info: EncoderInfo;
  family: 'resnet' | 'convnext';
  inputSize: number;
  /** Mask side f = inputSize / 32. */
  fmap: number;
  lenKeep: number;
  maskRatio: number;
  dropPath: number;
  densifyNorm: 'bn' | 'ln' | 'none';
  decoderWidth: number;
  params: Map<string, tf.Variable>;
  buffers: Map<string, tf.Variable>;
  /** Definitions of all params and buffers (reference keys, TF shapes) in reference order. */
  defs: TensorDef[];
  makeMask(batch: number, rng: Rng): tf.Tensor4D;
  forward(x: tf.Tensor4D, mask: tf.Tensor4D, opts: SparKForwardOptions): { loss: tf.Scalar; pred: tf.Tensor4D };
  reconstruct(x: tf.Tensor4D, mask: tf.Tensor4D): { masked: tf.Tensor4D; composite: tf.Tensor4D; loss: tf.Scalar; pred: tf.Tensor4D };
  encode(x: tf.Tensor4D, mask: tf.Tensor4D | null, opts: SparKForwardOptions): tf.Tensor4D[];
  dispose(): void;
}

export interface BuildSparKOptions {
  /** Only record definitions (key lists and counts of full-size models without allocating them). */
  shapesOnly?: boolean;
  /**
   * The dense twin (benchmarks: the cost of the sparse emulation): the same parameters and keys, but the encoder and
   * the densify norms run without the mask (no × mask, ordinary BN / LN statistics) and no mask tokens are filled in
   * (they exist and get no gradient). The loss is still taken on the masked patches. Not SparK: never train with it.
   */
  dense?: boolean;
}

/** Build a SparK model (contract: models). Parameters are initialised from `Rng.from(seed, 'init', key)`. */
export function buildSparK(model: ModelConfig, inputSize: number, seed: number, opts: BuildSparKOptions = {}): SparKModel {
  if (!Number.isInteger(inputSize) || inputSize <= 0 || inputSize % DOWNSAMPLE_RATIO !== 0) {
    throw new UsageError(`input size must be a positive multiple of ${DOWNSAMPLE_RATIO}, got ${inputSize}`);
  }
  if (!(model.mask_ratio > 0 && model.mask_ratio < 1)) throw new UsageError(`model.mask_ratio must be in (0, 1), got ${model.mask_ratio}`);
  const r = resolveEncoder(model.encoder);
  const info = describeEncoder(model.encoder);
  const fmap = inputSize / DOWNSAMPLE_RATIO;
  const L = fmap * fmap;
  const lenKeep = lenKeepFor(inputSize, model.mask_ratio);
  if (lenKeep < 1 || lenKeep >= L) {
    throw new UsageError(`mask_ratio ${model.mask_ratio} at input ${inputSize} keeps ${lenKeep} of ${L} cells; need at least 1 visible and 1 masked`);
  }
  const dropPath = model.drop_path ?? r.defaultDropPath;
  const densifyNorm = resolveDensifyNorm(r.family, model.densify_norm);
  const store = new ParamStore(seed, !opts.shapesOnly);
  const root = store.scope('');
  const core = defineEncoderCore(root.scope(ENCODER_PREFIX), r, dropPath);
  const decoder: LightDecoder = defineLightDecoder(root.scope(DECODER_PREFIX), model.decoder.width);

  // densify modules, i = 0 is stride 32 (spec §3.2)
  const tokens: tf.Variable[] = [];
  const norms: Array<{ bn?: BatchNormVars; ln?: { weight: tf.Variable; bias: tf.Variable } } | null> = [];
  const projs: Array<{ w: tf.Variable; b: tf.Variable; k: number } | null> = [];
  const eWidths = [3, 2, 1, 0].map((j) => core.stageChannels[j]!);
  for (let i = 0; i < 4; i++) {
    const e = eWidths[i]!;
    tokens.push(root.param(`mask_tokens.${i}`, [1, 1, 1, e], { kind: 'truncNormal', std: 0.02, a: -0.02, b: 0.02 }, 'token'));
  }
  for (let i = 0; i < 4; i++) {
    const e = eWidths[i]!;
    if (densifyNorm === 'bn') norms.push({ bn: root.batchNorm(`densify_norms.${i}`, e) });
    else if (densifyNorm === 'ln') norms.push({ ln: root.layerNorm(`densify_norms.${i}`, e) });
    else norms.push(null);
  }
  for (let i = 0; i < 4; i++) {
    const e = eWidths[i]!;
    const d = decoder.channels[i]!;
    if (i === 0 && e === d) {
      projs.push(null); // nn.Identity
      continue;
    }
    const k = i === 0 ? 1 : 3;
    const bound = torchDefaultBound(e * k * k);
    projs.push({ w: root.conv(`densify_projs.${i}.weight`, k, e, d, bound), b: root.vector(`densify_projs.${i}.bias`, d, bound), k });
  }

  const checkInput = (x: tf.Tensor4D, mask: tf.Tensor4D | null) => {
    if (x.rank !== 4 || x.shape[1] !== inputSize || x.shape[2] !== inputSize || x.shape[3] !== 3) {
      throw new Error(`SparK: input must be [B,${inputSize},${inputSize},3], got ${JSON.stringify(x.shape)}`);
    }
    if (mask && (mask.shape[0] !== x.shape[0] || mask.shape[1] !== fmap || mask.shape[2] !== fmap || mask.shape[3] !== 1)) {
      throw new Error(`SparK: mask must be [${x.shape[0]},${fmap},${fmap},1], got ${JSON.stringify(mask.shape)}`);
    }
  };

  const predict = (x: tf.Tensor4D, mask: tf.Tensor4D, o: SparKForwardOptions): tf.Tensor4D => {
    const masks = opts.dense ? null : new MaskPyramid(mask);
    const xm = masks ? masks.apply(x) : x;
    const feats = core.forward(xm, masks, o);
    const toDec: tf.Tensor4D[] = [];
    for (let i = 0; i < 4; i++) {
      let f = feats[3 - i]!;
      const m = masks ? masks.at(f.shape[1]) : null;
      const nrm = norms[i];
      if (nrm?.bn) f = batchNorm(f, nrm.bn, m, o.training);
      else if (nrm?.ln) f = layerNorm(f, nrm.ln.weight, nrm.ln.bias, m);
      // where(mask, f, token); a masked norm has already zeroed f at masked positions
      if (m) f = maskTokenFill(nrm ? f : masks!.apply(f), m, tokens[i]!);
      const pj = projs[i];
      if (pj) f = conv2d(f, pj.w as unknown as tf.Tensor4D, 1, (pj.k - 1) / 2, pj.b);
      toDec.push(f);
    }
    return decoder.forward(toDec, o.training);
  };

  return {
    encoderName: r.name,
    info,
    family: r.family,
    inputSize,
    fmap,
    lenKeep,
    maskRatio: model.mask_ratio,
    dropPath,
    densifyNorm,
    decoderWidth: model.decoder.width,
    params: store.params,
    buffers: store.buffers,
    defs: store.defs,
    makeMask: (batch, rng) => randomMask(batch, fmap, lenKeep, rng),
    forward(x, mask, o) {
      checkInput(x, mask);
      return tf.tidy(() => {
        const pred = predict(x, mask, o);
        return { loss: sparkLoss(x, pred, mask), pred };
      });
    },
    reconstruct(x, mask) {
      checkInput(x, mask);
      return tf.tidy(() => {
        const pred = predict(x, mask, { training: false });
        const loss = sparkLoss(x, pred, mask);
        const { mean, std } = patchStats(patchify(x));
        const rec = unpatchify(tf.add(tf.mul(patchify(pred), std), mean) as tf.Tensor3D);
        const up = upsampleMask(mask, DOWNSAMPLE_RATIO);
        const masked = tf.mul(x, up) as tf.Tensor4D;
        const composite = tf.add(tf.mul(x, up), tf.mul(rec, tf.sub(1, up))) as tf.Tensor4D; // where(mask, inp, rec)
        return { masked, composite, loss, pred };
      });
    },
    encode(x, mask, o) {
      checkInput(x, mask);
      return tf.tidy(() => {
        if (!mask) return core.forward(x, null, o);
        const masks = new MaskPyramid(mask);
        return core.forward(masks.apply(x), masks, o);
      });
    },
    dispose: () => store.dispose(),
  };
}
