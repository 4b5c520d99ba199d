/**
 * Inference of an encoder definition from reference state-dict keys and shapes, and the ConvNeXt key styles
 * (official ConvNeXt, which SparK uses, ↔ timm's ConvNeXt). ResNet keys are the same in timm and SparK.
 */
import type { EncoderSpec } from '../spec/types.js';
import { PRESET_NAMES, resolveEncoder } from '../models/registry.js';
import { UsageError } from '../util/errors.js';

type Quad = [number, number, number, number];

/** Infer `{family, layers|depths, width|dims}` from encoder keys (no prefix) and their PyTorch shapes. */
export function inferEncoder(shapes: Map<string, number[]>): Exclude<EncoderSpec, string> {
  const count = (re: RegExp) => {
    const seen = new Set<string>();
    for (const k of shapes.keys()) {
      const m = re.exec(k);
      if (m) seen.add(m[1]!);
    }
    return seen.size;
  };
  if (shapes.has('conv1.weight') && [...shapes.keys()].some((k) => k.startsWith('layer1.'))) {
    const layers = [1, 2, 3, 4].map((i) => count(new RegExp(`^layer${i}\\.(\\d+)\\.`))) as Quad;
    const width = shapes.get('conv1.weight')![0]!;
    return { family: 'resnet', layers, width };
  }
  if (shapes.has('downsample_layers.0.0.weight')) {
    const depths = [0, 1, 2, 3].map((i) => count(new RegExp(`^stages\\.${i}\\.(\\d+)\\.`))) as Quad;
    const dims = [0, 1, 2, 3].map((i) => (i === 0 ? shapes.get('downsample_layers.0.0.weight')![0]! : shapes.get(`downsample_layers.${i}.1.weight`)?.[0] ?? 0)) as Quad;
    return { family: 'convnext', depths, dims };
  }
  throw new UsageError('cannot recognise the encoder: neither timm ResNet keys (conv1.weight, layer1.*) nor official ConvNeXt keys (downsample_layers.*, stages.*)');
}

/** The preset with exactly this definition, if any (so imported models get their familiar names). */
export function presetFor(spec: Exclude<EncoderSpec, string>): string | null {
  const target = JSON.stringify(resolveEncoder(spec), ['family', 'layers', 'width', 'depths', 'dims']);
  for (const name of PRESET_NAMES) {
    if (JSON.stringify(resolveEncoder(name), ['family', 'layers', 'width', 'depths', 'dims']) === target) return name;
  }
  return null;
}

const TIMM_RULES: Array<[RegExp, string]> = [
  [/^downsample_layers\.0\.0\./, 'stem.0.'],
  [/^downsample_layers\.0\.1\./, 'stem.1.'],
  [/^downsample_layers\.([123])\.([01])\./, 'stages.$1.downsample.$2.'],
  [/^stages\.(\d)\.(\d+)\.dwconv\./, 'stages.$1.blocks.$2.conv_dw.'],
  [/^stages\.(\d)\.(\d+)\.norm\./, 'stages.$1.blocks.$2.norm.'],
  [/^stages\.(\d)\.(\d+)\.pwconv1\./, 'stages.$1.blocks.$2.mlp.fc1.'],
  [/^stages\.(\d)\.(\d+)\.pwconv2\./, 'stages.$1.blocks.$2.mlp.fc2.'],
  [/^stages\.(\d)\.(\d+)\.gamma$/, 'stages.$1.blocks.$2.gamma'],
  [/^norm\./, 'head.norm.'],
  [/^head\./, 'head.fc.'],
];

/** Official-ConvNeXt key → timm ConvNeXt key (ResNet keys are returned unchanged). */
export function officialToTimm(key: string): string {
  for (const [re, rep] of TIMM_RULES) if (re.test(key)) return key.replace(re, rep);
  return key;
}

const OFFICIAL_RULES: Array<[RegExp, string]> = [
  [/^stem\.([01])\./, 'downsample_layers.0.$1.'],
  [/^stages\.(\d)\.downsample\.([01])\./, 'downsample_layers.$1.$2.'],
  [/^stages\.(\d)\.blocks\.(\d+)\.conv_dw\./, 'stages.$1.$2.dwconv.'],
  [/^stages\.(\d)\.blocks\.(\d+)\.norm\./, 'stages.$1.$2.norm.'],
  [/^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc1\./, 'stages.$1.$2.pwconv1.'],
  [/^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc2\./, 'stages.$1.$2.pwconv2.'],
  [/^stages\.(\d)\.blocks\.(\d+)\.gamma$/, 'stages.$1.$2.gamma'],
  [/^head\.norm\./, 'norm.'],
  [/^head\.fc\./, 'head.'],
];

/** timm ConvNeXt key → official-ConvNeXt key (identity for keys already official). */
export function timmToOfficial(key: string): string {
  for (const [re, rep] of OFFICIAL_RULES) if (re.test(key)) return key.replace(re, rep);
  return key;
}
