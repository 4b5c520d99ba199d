/**
 * Layer-wise learning-rate decay for fine-tuning (spec §7.3, oracle O9): each parameter gets a layer id from its
 * reference name (timm ResNet / official ConvNeXt keys, with the classification head), and its lr is multiplied by
 * `lr_scale^(N + 1 − layer_id)` where N + 1 is the head's id.
 */
import type { EncoderSpec } from '../spec/types.js';
import { resolveEncoder } from '../models/registry.js';

export interface LayerDecayTable {
  /** Highest layer id (the head's). */
  maxLayerId: number;
  layerId(name: string): number;
  /** lr multiplier of a layer id. */
  scale(layerId: number): number;
}

export function layerDecay(spec: EncoderSpec, lrScale: number): LayerDecayTable {
  const r = resolveEncoder(spec);
  let maxLayerId: number;
  let layerId: (name: string) => number;
  if (r.family === 'resnet') {
    const [, l2, l3] = r.layers;
    // the reference groups layer2/layer3 blocks by (2, 3) for R50/R101 and (4, 4) for R152/R200
    const [blk2, blk3] = l2 <= 4 ? [2, 3] : [4, 4];
    const n2 = Math.ceil(l2 / blk2);
    const N = 2 + n2 + Math.ceil(l3 / blk3);
    maxLayerId = N + 1;
    layerId = (name) => {
      if (name.startsWith('conv1.') || name.startsWith('bn1.')) return 0;
      const m = /^layer([1-4])\.(\d+)\./.exec(name);
      if (m) {
        const stage = Number(m[1]);
        const j = Number(m[2]);
        if (stage === 1) return 1;
        if (stage === 2) return 2 + Math.floor(j / blk2);
        if (stage === 3) return 2 + n2 + Math.floor(j / blk3);
        return N;
      }
      if (name.startsWith('fc.')) return N + 1;
      throw new Error(`layer decay: no layer id for '${name}'`);
    };
  } else {
    const N = r.depths[2] > 9 ? 12 : 6;
    maxLayerId = N + 1;
    layerId = (name) => {
      let m = /^downsample_layers\.(\d)\./.exec(name);
      if (m) {
        const i = Number(m[1]);
        return i === 0 ? 0 : i === 1 ? 2 : i === 2 ? 3 : N;
      }
      m = /^stages\.(\d)\.(\d+)\./.exec(name);
      if (m) {
        const s = Number(m[1]);
        const j = Number(m[2]);
        return s === 0 ? 1 : s === 1 ? 2 : s === 2 ? 3 + Math.floor(j / 3) : N;
      }
      if (name.startsWith('norm.') || name.startsWith('head.')) return N + 1;
      throw new Error(`layer decay: no layer id for '${name}'`);
    };
  }
  return { maxLayerId, layerId, scale: (id) => lrScale ** (maxLayerId - id) };
}
