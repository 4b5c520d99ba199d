/**
 * ConvNeXt as pre-trained by SparK (spec §2.4): stem conv 4×4 s4 + LN, downsample LN + conv 2×2 s2, blocks
 * dwconv7 → LN → pwconv1 → GELU → pwconv2 → γ → × mask → DropPath + residual. Sparse when given a mask pyramid.
 * Keys are the official ConvNeXt's: `downsample_layers.{i}.{0,1}.*`, `stages.{s}.{j}.{gamma,dwconv,norm,pwconv1,pwconv2}.*`.
 */
import * as tf from '@tensorflow/tfjs';
import { conv2d, depthwiseConv2d, dropPath, gelu, layerNorm, linear, sparseConv2d, type MaskPyramid } from './ops.js';
import { addSame, maskMul } from './fused.js';
import { truncNormal02, type ParamScope } from './params.js';
import type { ResolvedConvNeXt } from './registry.js';
import type { EncoderCore } from './resnet.js';

interface LN {
  weight: tf.Variable;
  bias: tf.Variable;
}
interface Block {
  gamma: tf.Variable;
  dw: tf.Variable;
  dwBias: tf.Variable;
  norm: LN;
  pw1: tf.Variable;
  pw1Bias: tf.Variable;
  pw2: tf.Variable;
  pw2Bias: tf.Variable;
  dropPath: number;
}

/** torch.linspace(0, rate, n). */
export function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));
}

export function defineConvNeXt(s: ParamScope, c: ResolvedConvNeXt, dropPathRate: number, layerScaleInit = 1e-6): EncoderCore {
  const d = c.dims;
  const zeros = { kind: 'zeros' } as const;
  // downsample_layers (registered before stages in the official model)
  const down: Array<{ conv: tf.Variable; convBias: tf.Variable; norm: LN; k: number }> = [];
  {
    const conv = s.conv('downsample_layers.0.0.weight', 4, 3, d[0], truncNormal02);
    const convBias = s.vector('downsample_layers.0.0.bias', d[0], zeros);
    const norm = s.layerNorm('downsample_layers.0.1', d[0]);
    down.push({ conv, convBias, norm, k: 4 });
  }
  for (let i = 1; i < 4; i++) {
    const norm = s.layerNorm(`downsample_layers.${i}.0`, d[i - 1]!);
    const conv = s.conv(`downsample_layers.${i}.1.weight`, 2, d[i - 1]!, d[i]!, truncNormal02);
    const convBias = s.vector(`downsample_layers.${i}.1.bias`, d[i]!, zeros);
    down.push({ conv, convBias, norm, k: 2 });
  }
  const total = c.depths.reduce((a, b) => a + b, 0);
  const rates = linspace(0, dropPathRate, total);
  let bi = 0;
  const stages: Block[][] = [];
  for (let st = 0; st < 4; st++) {
    const C = d[st]!;
    const blocks: Block[] = [];
    for (let j = 0; j < c.depths[st]!; j++) {
      const pre = `stages.${st}.${j}.`;
      // the block's own parameter (gamma) precedes its children in the state dict
      const gamma = s.vector(pre + 'gamma', C, { kind: 'const', value: layerScaleInit });
      const dw = s.param(pre + 'dwconv.weight', [7, 7, C, 1], truncNormal02, 'depthwise');
      const dwBias = s.vector(pre + 'dwconv.bias', C, zeros);
      const norm = s.layerNorm(pre + 'norm', C);
      const pw1 = s.param(pre + 'pwconv1.weight', [C, 4 * C], truncNormal02, 'linear');
      const pw1Bias = s.vector(pre + 'pwconv1.bias', 4 * C, zeros);
      const pw2 = s.param(pre + 'pwconv2.weight', [4 * C, C], truncNormal02, 'linear');
      const pw2Bias = s.vector(pre + 'pwconv2.bias', C, zeros);
      blocks.push({ gamma, dw, dwBias, norm, pw1, pw1Bias, pw2, pw2Bias, dropPath: rates[bi++]! });
    }
    stages.push(blocks);
  }

  return {
    stageChannels: [...d] as [number, number, number, number],
    forward(x, masks, ctx) {
      const tr = ctx.training;
      const outs: tf.Tensor4D[] = [];
      let h = x;
      for (let st = 0; st < 4; st++) {
        const ds = down[st]!;
        const hs = h;
        // the downsampling layer and each block in a tidy of its own: what the backward needs is saved by the ops,
        // the rest is freed as soon as the block is done (not at the end of the whole forward pass)
        h = tf.tidy(() => {
          if (st === 0) {
            // SparseConv then sparse LN: the LN's own × mask zeroes the masked positions (LN is per-position)
            const c = conv2d(hs, ds.conv as unknown as tf.Tensor4D, 4, 0, ds.convBias);
            return layerNorm(c, ds.norm.weight, ds.norm.bias, masks ? masks.at(c.shape[1]) : null);
          }
          const n = layerNorm(hs, ds.norm.weight, ds.norm.bias, masks ? masks.at(hs.shape[1]) : null);
          return sparseConv2d(n, ds.conv as unknown as tf.Tensor4D, masks, { stride: 2, pad: 0, bias: ds.convBias });
        });
        for (const blk of stages[st]!) {
          const m = masks ? masks.at(h.shape[1]) : null;
          const hin = h;
          h = tf.tidy(() => {
            // sparse dwconv then sparse LN: as in the stem, the LN's × mask stands for the conv's
            let y = depthwiseConv2d(hin, blk.dw as unknown as tf.Tensor4D, 1, 3, blk.dwBias);
            y = layerNorm(y, blk.norm.weight, blk.norm.bias, m);
            let z = linear(y, blk.pw1 as unknown as tf.Tensor2D, blk.pw1Bias);
            z = gelu(z);
            z = linear(z, blk.pw2 as unknown as tf.Tensor2D, blk.pw2Bias);
            z = tf.mul(z, blk.gamma);
            if (m) z = maskMul(z, m);
            return addSame(hin, dropPath(z as tf.Tensor4D, blk.dropPath, tr, ctx.rng));
          });
        }
        outs.push(h);
      }
      return outs;
    },
  };
}
