/**
 * ResNet v1.5 with Bottleneck blocks (timm 0.5.4 `ResNet`, spec §2.5), sparse when given a mask pyramid.
 * Keys are timm's: `conv1.weight`, `bn1.*`, `layer{1..4}.{i}.conv{1,2,3}.weight`, `.bn{1,2,3}.*`,
 * `layer{s}.0.downsample.{0,1}.*`. Returns the 4 stage maps (strides 4, 8, 16, 32).
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../util/rng.js';
import { batchNorm, conv2d, dropPath, relu, sparseMaxPool, type BatchNormVars, type MaskPyramid } from './ops.js';
import { addSame } from './fused.js';
import { kaimingNormalFanOut, type ParamScope } from './params.js';
import type { ResolvedResNet } from './registry.js';

export interface ForwardCtx {
  training: boolean;
  rng?: Rng;
}

export interface EncoderCore {
  stageChannels: [number, number, number, number];
  /** The 4 stage maps, strides 4/8/16/32 (large to small). `masks` = null: dense network. */
  forward(x: tf.Tensor4D, masks: MaskPyramid | null, ctx: ForwardCtx): tf.Tensor4D[];
}

interface Bottleneck {
  conv1: tf.Variable;
  bn1: BatchNormVars;
  conv2: tf.Variable;
  bn2: BatchNormVars;
  conv3: tf.Variable;
  bn3: BatchNormVars;
  downsample: { conv: tf.Variable; bn: BatchNormVars } | null;
  stride: number;
  dropPath: number;
}

/**
 * Conv (no bias), × mask at the output resolution, (sparse) BN, optionally ReLU (fused into the BN). The sparse BN ignores x at masked positions and
 * outputs 0 there (its gradient is 0 there too), so the × mask of the reference's SparseConv is folded into it.
 */
function convBn(
  x: tf.Tensor4D,
  w: tf.Variable,
  bn: BatchNormVars,
  stride: number,
  pad: number,
  masks: MaskPyramid | null,
  training: boolean,
  act: 'relu' | null = null,
): tf.Tensor4D {
  const y = conv2d(x, w as unknown as tf.Tensor4D, stride, pad);
  return batchNorm(y, bn, masks ? masks.at(y.shape[1]) : null, training, { act });
}

/** Per-block drop-path rates: rate·idx/(total−1), over all blocks globally (timm 0.5.4). */
export function resnetDropPathRates(layers: readonly number[], rate: number): number[] {
  const total = layers.reduce((a, b) => a + b, 0);
  return Array.from({ length: total }, (_, i) => (total > 1 ? (rate * i) / (total - 1) : 0));
}

export function defineResNet(s: ParamScope, r: ResolvedResNet, dropPathRate: number): EncoderCore {
  const w0 = r.width;
  const conv = (name: string, k: number, cin: number, cout: number) => s.conv(name, k, cin, cout, kaimingNormalFanOut(cout * k * k));
  const stemConv = conv('conv1.weight', 7, 3, w0);
  const stemBn = s.batchNorm('bn1', w0);
  const rates = resnetDropPathRates(r.layers, dropPathRate);
  const stages: Bottleneck[][] = [];
  let inplanes = w0;
  let bi = 0;
  for (let st = 0; st < 4; st++) {
    const p = w0 * 2 ** st;
    const blocks: Bottleneck[] = [];
    for (let b = 0; b < r.layers[st]!; b++) {
      const pre = `layer${st + 1}.${b}.`;
      const stride = b === 0 && st > 0 ? 2 : 1;
      const blk: Bottleneck = {
        conv1: conv(pre + 'conv1.weight', 1, inplanes, p),
        bn1: s.batchNorm(pre + 'bn1', p),
        conv2: conv(pre + 'conv2.weight', 3, p, p),
        bn2: s.batchNorm(pre + 'bn2', p),
        conv3: conv(pre + 'conv3.weight', 1, p, 4 * p),
        bn3: s.batchNorm(pre + 'bn3', 4 * p, { kind: 'zeros' }), // zero_init_last_bn
        downsample: null,
        stride,
        dropPath: rates[bi++]!,
      };
      if (b === 0) {
        blk.downsample = { conv: conv(pre + 'downsample.0.weight', 1, inplanes, 4 * p), bn: s.batchNorm(pre + 'downsample.1', 4 * p) };
      }
      blocks.push(blk);
      inplanes = 4 * p;
    }
    stages.push(blocks);
  }

  return {
    stageChannels: [4 * w0, 8 * w0, 16 * w0, 32 * w0],
    forward(x, masks, ctx) {
      const tr = ctx.training;
      // each block in a tidy of its own: what its backward needs is saved by the ops themselves, the rest is freed
      // as soon as the block is done (not at the end of the whole forward pass)
      let h = tf.tidy(() => sparseMaxPool(convBn(x, stemConv, stemBn, 2, 3, masks, tr, 'relu'), masks, 3, 2, 1));
      const outs: tf.Tensor4D[] = [];
      for (const blocks of stages) {
        for (const blk of blocks) {
          const hin = h;
          h = tf.tidy(() => {
            let y = convBn(hin, blk.conv1, blk.bn1, 1, 0, masks, tr, 'relu');
            y = convBn(y, blk.conv2, blk.bn2, blk.stride, 1, masks, tr, 'relu');
            y = convBn(y, blk.conv3, blk.bn3, 1, 0, masks, tr);
            y = dropPath(y, blk.dropPath, tr, ctx.rng);
            const sc = blk.downsample ? convBn(hin, blk.downsample.conv, blk.downsample.bn, blk.stride, 0, masks, tr) : hin;
            return relu(addSame(y, sc));
          });
        }
        outs.push(h);
      }
      return outs;
    },
  };
}
