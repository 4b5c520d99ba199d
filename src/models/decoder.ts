/**
 * LightDecoder (spec §3.3): 5 UNet blocks, each ConvTranspose(k4,s2,p1) → conv3×3 (no bias) → BN → ReLU6 →
 * conv3×3 (no bias) → BN (no final activation), then a 1×1 projection to 3 channels. Densified features are added
 * before blocks 0–3. BNs are dense (statistics over every position). Keys `dec.{i}.up_sample.*`,
 * `dec.{i}.conv.{0,1,3,4}.*`, `proj.*` under the given scope (SparK: `dense_decoder.`).
 */
import * as tf from '@tensorflow/tfjs';
import { batchNorm, conv2d, convTranspose2x, type BatchNormVars } from './ops.js';
import { addSame } from './fused.js';
import { kaimingNormalFanOut, truncNormal02, type ParamScope } from './params.js';
import { decoderChannels } from './registry.js';

interface UNetBlock {
  up: tf.Variable;
  upBias: tf.Variable;
  conv0: tf.Variable;
  bn1: BatchNormVars;
  conv3: tf.Variable;
  bn4: BatchNormVars;
}

export interface LightDecoder {
  width: number;
  /** Channels [w, w/2, w/4, w/8, w/16, w/32]. */
  channels: number[];
  /** `toDec[i]` (i = 0..3, smallest first, channels[i]) → [B, 32·f, 32·f, 3]. */
  forward(toDec: tf.Tensor4D[], training: boolean): tf.Tensor4D;
}

export function defineLightDecoder(s: ParamScope, width: number, upSampleRatio = 32): LightDecoder {
  const n = Math.round(Math.log2(upSampleRatio));
  if (2 ** n !== upSampleRatio) throw new Error(`LightDecoder: up-sample ratio must be a power of 2, got ${upSampleRatio}`);
  const ch = decoderChannels(width);
  const blocks: UNetBlock[] = [];
  for (let i = 0; i < n; i++) {
    const cin = ch[i]!;
    const cout = ch[i + 1]!;
    const pre = `dec.${i}.`;
    blocks.push({
      // ConvTranspose2d weight (in, out, 4, 4): torch fan_out = size(0)·16 = cin·16 (spec §3.3)
      up: s.param(pre + 'up_sample.weight', [4, 4, cin, cin], kaimingNormalFanOut(cin * 16), 'convTranspose'),
      upBias: s.vector(pre + 'up_sample.bias', cin, { kind: 'zeros' }),
      conv0: s.conv(pre + 'conv.0.weight', 3, cin, cin, truncNormal02),
      bn1: s.batchNorm(pre + 'conv.1', cin),
      conv3: s.conv(pre + 'conv.3.weight', 3, cin, cout, truncNormal02),
      bn4: s.batchNorm(pre + 'conv.4', cout),
    });
  }
  const proj = s.conv('proj.weight', 1, ch[n]!, 3, truncNormal02);
  const projBias = s.vector('proj.bias', 3, { kind: 'zeros' });

  return {
    width,
    channels: ch,
    forward(toDec, training) {
      let x: tf.Tensor4D | null = null;
      for (let i = 0; i < blocks.length; i++) {
        const b = blocks[i]!;
        const xin = i < toDec.length ? (x ? addSame(x, toDec[i]!) : toDec[i]!) : x;
        if (!xin) throw new Error('LightDecoder: no input features');
        // one tidy per block: only what the backward needs (saved by the ops) outlives the block
        x = tf.tidy(() => {
          let h = convTranspose2x(xin, b.up as unknown as tf.Tensor4D, b.upBias);
          h = batchNorm(conv2d(h, b.conv0 as unknown as tf.Tensor4D, 1, 1), b.bn1, null, training, { act: 'relu6' });
          return batchNorm(conv2d(h, b.conv3 as unknown as tf.Tensor4D, 1, 1), b.bn4, null, training);
        });
      }
      return conv2d(x!, proj as unknown as tf.Tensor4D, 1, 0, projBias);
    },
  };
}
