/**
 * Registry arithmetic (O3, spec §3.3/3.4/5.2), the definitions the builders use (shapes-only builds, so full-size
 * models cost nothing), state-dict key lists and counts (O4, spec §8.2), layout conversion, and `spark list models`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModelConfig } from '../src/spec/types.js';
import {
  decoderParamCount,
  describeEncoder,
  PRESET_NAMES,
  resolveEncoder,
  sparkParamBreakdown,
  sparkParamCount,
} from '../src/models/registry.js';
import { buildEncoder, buildSparK } from '../src/models/spark.js';
import { numel } from '../src/models/params.js';
import {
  encoderStateEntries,
  encoderStateKeys,
  fromTorchLayout,
  permute,
  sparkStateEntries,
  sparkStateKeys,
  toTorchLayout,
} from '../src/models/weights.js';
import { UsageError } from '../src/util/errors.js';
import list, { modelRows } from '../src/cli/commands/list.js';

const model = (encoder: ModelConfig['encoder'], width = 768): ModelConfig => ({
  encoder,
  decoder: { type: 'light', width },
  mask_ratio: 0.6,
  drop_path: null,
  densify_norm: 'auto',
});

const ENCODER_PARAMS: Record<string, number> = {
  resnet50: 23_508_032,
  resnet101: 42_500_160,
  resnet152: 58_143_808,
  resnet200: 62_624_832,
  convnext_tiny: 27_818_592,
  convnext_small: 49_453_152,
  convnext_base: 87_564_416,
  convnext_large: 196_227_264,
};
const WITH_HEAD: Record<string, number> = {
  resnet50: 25_557_032,
  resnet101: 44_549_160,
  resnet152: 60_192_808,
  resnet200: 64_673_832,
  convnext_small: 50_223_688,
  convnext_base: 88_591_464,
  convnext_large: 197_767_336,
};
const SPARK_TOTAL: Record<string, [number, number, number, number, number]> = {
  // encoder, densify norms, densify projs, mask tokens, total (spec §3.4)
  resnet50: [23_508_032, 7_680, 6_219_168, 3_840, 52_921_835],
  resnet101: [42_500_160, 7_680, 6_219_168, 3_840, 71_913_963],
  resnet152: [58_143_808, 7_680, 6_219_168, 3_840, 87_557_611],
  resnet200: [62_624_832, 7_680, 6_219_168, 3_840, 92_038_635],
  convnext_small: [49_453_152, 2_880, 1_742_496, 1_440, 74_383_083],
  convnext_base: [87_564_416, 3_840, 3_110_304, 1_920, 113_863_595],
  convnext_large: [196_227_264, 5_760, 4_664_736, 2_880, 224_083_755],
};
// backbone conv+linear MACs, spec §5.2 "mine", in G (3 decimals)
const GMACS: Record<string, number> = {
  resnet50: 4.087,
  resnet101: 7.799,
  resnet152: 11.512,
  resnet200: 15.005,
  convnext_small: 8.683,
  convnext_base: 15.354,
  convnext_large: 34.36,
};

test('presets: names, families, stage channels, defaults (spec §2.6, §5.1, §6.1)', () => {
  for (const n of ['resnet50', 'resnet101', 'resnet152', 'resnet200', 'convnext_tiny', 'convnext_small', 'convnext_base', 'convnext_large', 'resnet_mini', 'convnext_mini']) {
    assert.ok(PRESET_NAMES.includes(n), n);
  }
  const dp: Record<string, number> = { resnet50: 0.05, resnet101: 0.08, resnet152: 0.1, resnet200: 0.15, convnext_small: 0.2, convnext_base: 0.3, convnext_large: 0.4, resnet_mini: 0, convnext_mini: 0 };
  for (const [n, v] of Object.entries(dp)) assert.equal(describeEncoder(n).defaultDropPath, v, n);
  assert.deepEqual(describeEncoder('resnet50').stageChannels, [256, 512, 1024, 2048]);
  assert.deepEqual(describeEncoder('convnext_small').stageChannels, [96, 192, 384, 768]);
  assert.deepEqual(describeEncoder('convnext_base').stageChannels, [128, 256, 512, 1024]);
  assert.deepEqual(describeEncoder('convnext_large').stageChannels, [192, 384, 768, 1536]);
  assert.deepEqual(describeEncoder('resnet_mini').stageChannels, [64, 128, 256, 512]);
  assert.deepEqual(describeEncoder('convnext_mini').stageChannels, [32, 64, 128, 256]);
  assert.equal(describeEncoder('resnet101').defaultBeta2, 0.95);
  assert.equal(describeEncoder('convnext_base').defaultBeta2, 0.999);
  assert.deepEqual(describeEncoder('resnet152').layers, [3, 8, 36, 3]);
  assert.deepEqual(describeEncoder('resnet200').layers, [3, 24, 36, 3]);
  assert.deepEqual(describeEncoder('convnext_tiny').depths, [3, 3, 9, 3]);
  // parameterised families
  const custom = describeEncoder({ family: 'resnet', layers: [3, 4, 6, 3] });
  assert.equal(custom.encoderParams, ENCODER_PARAMS['resnet50']);
  assert.equal(custom.name, 'resnet(layers=[3,4,6,3])');
  assert.equal(custom.defaultDropPath, 0);
  const cnx = describeEncoder({ family: 'convnext', depths: [3, 3, 9, 3], dims: [96, 192, 384, 768], name: 'mine' });
  assert.equal(cnx.name, 'mine');
  assert.equal(cnx.encoderParams, ENCODER_PARAMS['convnext_tiny']);
  assert.throws(() => describeEncoder('resnet34'), (e: unknown) => e instanceof UsageError && /resnet34/.test(e.message) && e.exitCode === 2);
  assert.throws(() => resolveEncoder({ family: 'resnet', layers: [1, 2, 3] as unknown as [number, number, number, number] }), UsageError);
});

test('O3: encoder, head, decoder and SparK parameter counts to the unit (arithmetic)', () => {
  for (const [n, v] of Object.entries(ENCODER_PARAMS)) assert.equal(describeEncoder(n).encoderParams, v, n);
  for (const [n, v] of Object.entries(WITH_HEAD)) {
    const i = describeEncoder(n);
    assert.equal(i.encoderParams + i.headParams(1000), v, n);
  }
  assert.equal(decoderParamCount(768), 23_183_115);
  for (const [n, [enc, norms, projs, tokens, total]] of Object.entries(SPARK_TOTAL)) {
    const b = sparkParamBreakdown(model(n), 224);
    assert.deepEqual([b.encoder, b.densifyNorms, b.densifyProjs, b.maskTokens, b.total], [enc, norms, projs, tokens, total], n);
    assert.equal(b.decoder, 23_183_115);
    assert.equal(sparkParamCount(model(n), 224), total);
  }
  assert.throws(() => sparkParamCount(model('resnet50'), 225), UsageError);
  assert.throws(() => sparkParamCount(model('resnet50', 100), 224), UsageError);
});

test('FLOPs (conv + linear MACs of the backbone) equal spec §5.2 "mine"', () => {
  for (const [n, g] of Object.entries(GMACS)) assert.equal(Math.round(describeEncoder(n).flops(224) / 1e6) / 1e3, g, n);
  assert.equal(Math.round(describeEncoder('convnext_large').flops(384) / 1e6) / 1e3, 100.976);
  // with a 1000-class head the linear layer adds C·1000 MACs
  assert.equal(describeEncoder('resnet50').flops(224, 1000) - describeEncoder('resnet50').flops(224), 2048 * 1000);
});

test('definitions used by the builders agree with the arithmetic for every preset (shapes-only builds)', () => {
  for (const n of PRESET_NAMES) {
    const enc = buildEncoder(n, { seed: 0, shapesOnly: true });
    const encParams = enc.defs.filter((d) => d.role === 'param').reduce((s, d) => s + numel(d.shape), 0);
    assert.equal(encParams, describeEncoder(n).encoderParams, `${n} encoder`);
    const withHead = buildEncoder(n, { seed: 0, shapesOnly: true, numClasses: 1000 });
    const headParams = withHead.defs.filter((d) => d.role === 'param').reduce((s, d) => s + numel(d.shape), 0);
    assert.equal(headParams, describeEncoder(n).encoderParams + describeEncoder(n).headParams(1000), `${n} with head`);
    const sp = buildSparK(model(n), 224, 0, { shapesOnly: true });
    const spParams = sp.defs.filter((d) => d.role === 'param').reduce((s, d) => s + numel(d.shape), 0);
    assert.equal(spParams, sparkParamCount(model(n), 224), `${n} SparK`);
    assert.equal(sp.params.size, 0, 'shapes-only creates no variables');
  }
  // a different decoder width and densify norm 'none'
  const m: ModelConfig = { ...model('convnext_mini', 64), densify_norm: 'none' };
  const sp = buildSparK(m, 64, 0, { shapesOnly: true });
  assert.equal(sp.defs.filter((d) => d.role === 'param').reduce((s, d) => s + numel(d.shape), 0), sparkParamCount(m, 64));
  assert.ok(!sp.defs.some((d) => d.key.startsWith('densify_norms.')));
});

test('O4: state-dict entry counts and key names (spec §8.2)', () => {
  const counts: Record<string, number> = { resnet50: 318, resnet101: 624, resnet152: 930, resnet200: 1218, convnext_small: 340, convnext_base: 340, convnext_large: 340 };
  for (const [n, c] of Object.entries(counts)) assert.equal(encoderStateKeys(n).length, c, n);
  const spark: Record<string, number> = { resnet50: 426, convnext_small: 434, convnext_base: 436, convnext_large: 436 };
  for (const [n, c] of Object.entries(spark)) assert.equal(sparkStateKeys(model(n), 224).length, c, n);

  const r50 = encoderStateEntries('resnet50');
  const byKey = new Map(r50.map((e) => [e.key, e]));
  assert.deepEqual(r50.slice(0, 6).map((e) => e.key), ['conv1.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var', 'bn1.num_batches_tracked']);
  assert.deepEqual(byKey.get('conv1.weight')!.torchShape, [64, 3, 7, 7]);
  assert.deepEqual(byKey.get('conv1.weight')!.tfShape, [7, 7, 3, 64]);
  assert.equal(byKey.get('bn1.num_batches_tracked')!.dtype, 'int64');
  assert.deepEqual(byKey.get('bn1.num_batches_tracked')!.torchShape, []);
  assert.deepEqual(byKey.get('layer1.0.downsample.0.weight')!.torchShape, [256, 64, 1, 1]);
  assert.ok(byKey.has('layer1.0.downsample.1.running_var'));
  assert.ok(byKey.has('layer4.2.bn3.weight'));
  assert.ok(!byKey.has('layer1.1.downsample.0.weight'));
  assert.ok(!r50.some((e) => e.key.startsWith('fc.')));
  assert.deepEqual(encoderStateKeys('resnet50', { numClasses: 1000 }).slice(-2), ['fc.weight', 'fc.bias']);

  const cnx = new Map(encoderStateEntries('convnext_small').map((e) => [e.key, e]));
  assert.deepEqual(cnx.get('downsample_layers.0.0.weight')!.torchShape, [96, 3, 4, 4]);
  assert.deepEqual(cnx.get('downsample_layers.1.1.weight')!.torchShape, [192, 96, 2, 2]);
  assert.deepEqual(cnx.get('downsample_layers.1.0.weight')!.torchShape, [96]);
  assert.deepEqual(cnx.get('stages.2.26.dwconv.weight')!.torchShape, [384, 1, 7, 7]);
  assert.deepEqual(cnx.get('stages.2.26.dwconv.weight')!.tfShape, [7, 7, 384, 1]);
  assert.deepEqual(cnx.get('stages.0.0.pwconv1.weight')!.torchShape, [384, 96]);
  assert.deepEqual(cnx.get('stages.0.0.pwconv2.weight')!.torchShape, [96, 384]);
  assert.deepEqual(cnx.get('stages.3.2.gamma')!.torchShape, [768]);
  assert.deepEqual(encoderStateKeys('convnext_small', { numClasses: 10 }).slice(-4), ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']);

  const sr = new Map(sparkStateEntries(model('resnet50'), 224).map((e) => [e.key, e]));
  for (const k of ['imn_m', 'imn_s', 'norm_black', 'config', 'sparse_encoder.sp_cnn.layer1.0.conv1.weight', 'sparse_encoder.sp_cnn.bn1.running_mean', 'dense_decoder.dec.0.conv.1.num_batches_tracked', 'dense_decoder.dec.4.conv.4.running_var', 'dense_decoder.proj.bias', 'densify_norms.3.running_mean', 'densify_projs.0.weight', 'mask_tokens.3']) {
    assert.ok(sr.has(k), k);
  }
  assert.deepEqual(sr.get('dense_decoder.dec.0.up_sample.weight')!.torchShape, [768, 768, 4, 4]);
  assert.deepEqual(sr.get('dense_decoder.dec.0.conv.0.weight')!.torchShape, [768, 768, 3, 3]);
  assert.deepEqual(sr.get('dense_decoder.dec.0.conv.3.weight')!.torchShape, [384, 768, 3, 3]);
  assert.deepEqual(sr.get('dense_decoder.proj.weight')!.torchShape, [3, 24, 1, 1]);
  assert.deepEqual(sr.get('mask_tokens.0')!.torchShape, [1, 2048, 1, 1]);
  assert.deepEqual(sr.get('mask_tokens.3')!.torchShape, [1, 256, 1, 1]);
  assert.deepEqual(sr.get('norm_black')!.torchShape, [1, 3, 224, 224]);
  // projection shapes (spec §3.2)
  assert.deepEqual([0, 1, 2, 3].map((i) => sr.get(`densify_projs.${i}.weight`)!.torchShape), [[768, 2048, 1, 1], [384, 1024, 3, 3], [192, 512, 3, 3], [96, 256, 3, 3]]);
  const sc = new Map(sparkStateEntries(model('convnext_small'), 224).map((e) => [e.key, e]));
  assert.ok(!sc.has('densify_projs.0.weight'), 'ConvNeXt-S: densify_projs.0 is Identity');
  assert.deepEqual(sc.get('densify_projs.1.weight')!.torchShape, [384, 384, 3, 3]);
  assert.deepEqual(sc.get('densify_norms.0.weight')!.torchShape, [768]);
  assert.ok(!sc.has('densify_norms.0.running_mean'), 'ConvNeXt densify norm is LN');
  const sb = new Map(sparkStateEntries(model('convnext_base'), 224).map((e) => [e.key, e]));
  assert.deepEqual(sb.get('densify_projs.0.weight')!.torchShape, [768, 1024, 1, 1]);
});

test('layout conversion: permutations are exact inverses and move elements where the table says', () => {
  // conv O×I×kH×kW ↔ [kH,kW,I,O]: element (o,i,y,x) lands at (y,x,i,o)
  const O = 3, I = 2, k = 2;
  const torch = Float32Array.from({ length: O * I * k * k }, (_, j) => j);
  const tfw = fromTorchLayout('a.conv.weight', [O, I, k, k], torch);
  assert.deepEqual(tfw.shape, [k, k, I, O]);
  for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) for (let y = 0; y < k; y++) for (let x = 0; x < k; x++) {
    assert.equal(tfw.data[((y * k + x) * I + i) * O + o], torch[((o * I + i) * k + y) * k + x]);
  }
  const back = toTorchLayout('a.conv.weight', tfw.shape, tfw.data);
  assert.deepEqual(back.shape, [O, I, k, k]);
  assert.deepEqual(Array.from(back.data), Array.from(torch));
  // linear O×I ↔ [I,O]
  const lin = fromTorchLayout('stages.0.0.pwconv1.weight', [3, 2], Float32Array.from([1, 2, 3, 4, 5, 6]));
  assert.deepEqual(lin.shape, [2, 3]);
  assert.deepEqual(Array.from(lin.data), [1, 3, 5, 2, 4, 6]);
  // convTranspose I×O×kH×kW ↔ [kH,kW,O,I]: (i,o,y,x) → (y,x,o,i)
  const ct = Float32Array.from({ length: 2 * 3 * 4 * 4 }, (_, j) => j);
  const ctf = fromTorchLayout('dense_decoder.dec.1.up_sample.weight', [2, 3, 4, 4], ct);
  assert.deepEqual(ctf.shape, [4, 4, 3, 2]);
  assert.equal(ctf.data[((1 * 4 + 2) * 3 + 2) * 2 + 1], ct[((1 * 3 + 2) * 4 + 1) * 4 + 2]);
  // depthwise, token, vectors
  assert.deepEqual(fromTorchLayout('stages.1.0.dwconv.weight', [5, 1, 7, 7], new Float32Array(245)).shape, [7, 7, 5, 1]);
  assert.deepEqual(fromTorchLayout('mask_tokens.0', [1, 8, 1, 1], new Float32Array(8)).shape, [1, 1, 1, 8]);
  assert.deepEqual(fromTorchLayout('bn1.weight', [4], new Float32Array(4)).shape, [4]);
  // generic permute round trip on a rank-5 array
  const d = Float64Array.from({ length: 120 }, (_, j) => j * 1.5);
  const p = permute(d, [2, 3, 4, 1, 5], [4, 0, 3, 1, 2]);
  assert.deepEqual(p.shape, [5, 2, 1, 3, 4]);
  const q = permute(p.data, p.shape, [1, 3, 4, 2, 0]);
  assert.deepEqual(q.shape, [2, 3, 4, 1, 5]);
  assert.deepEqual(Array.from(q.data), Array.from(d));
});

test('spark list models: rows computed from the definitions; --json; bad usage', async () => {
  const rows = modelRows();
  const r50 = rows.find((r) => r.name === 'resnet50')!;
  assert.equal(r50.encoderParams, 23_508_032);
  assert.equal(r50.paramsWithHead1000, 25_557_032);
  assert.equal(r50.sparkParams, 52_921_835);
  assert.equal((r50.flops / 1e9).toFixed(3), '4.087');
  assert.equal(rows.find((r) => r.name === 'convnext_small')!.defaultBeta2, 0.999);
  assert.equal(rows.length, PRESET_NAMES.length);
  const chunks: string[] = [];
  const orig = process.stdout.write.bind(process.stdout);
  (process.stdout as { write: unknown }).write = (s: string) => (chunks.push(String(s)), true);
  let code: number;
  let codeJson: number;
  try {
    code = await list(['models']);
    codeJson = await list(['models', '--json']);
  } finally {
    (process.stdout as { write: unknown }).write = orig;
  }
  assert.equal(code, 0);
  assert.equal(codeJson, 0);
  assert.match(chunks[0]!, /resnet50\s+23,508,032\s+25,557,032\s+52,921,835\s+4\.087\s+256\/512\/1024\/2048\s+0\.05\s+0\.95/);
  assert.match(chunks[0]!, /convnext_small\s+49,453,152\s+50,223,688\s+74,383,083\s+8\.683/);
  const parsed = JSON.parse(chunks[1]!) as Array<{ name: string; flops: number }>;
  assert.equal(parsed.find((r) => r.name === 'convnext_large')!.flops, describeEncoder('convnext_large').flops(224));
  await assert.rejects(list(['datasets']), UsageError);
  await assert.rejects(list(['--input-size', '100']), UsageError);
  await assert.rejects(list(['--bogus']), (e: unknown) => e instanceof UsageError && e.message === "list: unknown option '--bogus' (see `spark list --help`)");
});
