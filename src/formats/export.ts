/**
 * `spark export`: a run's pre-trained encoder as
 *  - `.safetensors` in PyTorch layouts with timm ResNet / official-ConvNeXt keys (or timm ConvNeXt keys with
 *    `keys: 'timm'`), so `timm.create_model(name).load_state_dict(load_file(f), strict=False)` leaves only the
 *    head missing; `num_batches_tracked` is int64 as in PyTorch;
 *  - a TF.js weights folder (`model.json` with a standard weightsManifest + one binary shard) in TF layouts with the
 *    reference names, readable by `tf.io.decodeWeights` and by `loadTfjsWeights` here.
 */
import path from 'node:path';
import { promises as fsp } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { EncoderSpec } from '../spec/types.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { encoderStateEntries, toTorchLayout } from '../models/weights.js';
import { ENCODER_PREFIX } from '../models/spark.js';
import { describeEncoder } from '../models/registry.js';
import { writeSafetensors, type SafeTensor } from '../util/safetensors.js';
import { atomicWriteFile } from '../util/atomic.js';
import { UsageError } from '../util/errors.js';
import { officialToTimm } from './encoder-keys.js';

export type ExportFormat = 'safetensors' | 'tfjs';

export interface ExportOptions {
  format: ExportFormat;
  /** Output file (.safetensors) or folder (tfjs). */
  out: string;
  /** Key style for ConvNeXt safetensors: 'official' (SparK's, default) or 'timm'. ResNet keys are the same. */
  keys?: 'official' | 'timm';
}

export interface ExportResult {
  out: string;
  format: ExportFormat;
  encoder: EncoderSpec;
  encoderName: string;
  tensors: number;
  parameters: number;
}

/** The encoder tensors (TF layouts, reference keys without prefix) and spec of a run / import / checkpoint. */
export async function loadEncoderState(source: string): Promise<{ encoder: EncoderSpec; tensors: Map<string, SafeTensor>; step: number }> {
  const ck = await loadCheckpoint(source);
  if (!ck.config) throw new UsageError(`${source}: no config.yaml next to the checkpoint, cannot tell which encoder it holds`);
  const all = new Map<string, SafeTensor>([...ck.params, ...ck.buffers]);
  const hasPrefix = [...all.keys()].some((k) => k.startsWith(ENCODER_PREFIX));
  const tensors = new Map<string, SafeTensor>();
  for (const [k, t] of all) {
    if (hasPrefix) {
      if (k.startsWith(ENCODER_PREFIX)) tensors.set(k.slice(ENCODER_PREFIX.length), t);
    } else tensors.set(k, t);
  }
  return { encoder: ck.config.model.encoder, tensors, step: ck.step };
}

function f32View(t: SafeTensor): Float32Array {
  const c = t.data.slice();
  return new Float32Array(c.buffer, 0, c.byteLength / 4);
}

export async function exportEncoder(source: string, opts: ExportOptions): Promise<ExportResult> {
  const { encoder, tensors, step } = await loadEncoderState(source);
  const entries = encoderStateEntries(encoder);
  const missing = entries.filter((e) => !tensors.has(e.key)).map((e) => e.key);
  if (missing.length) throw new UsageError(`${source}: the checkpoint lacks ${missing.length} encoder tensors (${missing.slice(0, 4).join(', ')}…)`);
  const info = describeEncoder(encoder);
  const encoderName = info.name;
  let parameters = 0;
  if (opts.format === 'safetensors') {
    const out = new Map<string, SafeTensor>();
    for (const e of entries) {
      const t = tensors.get(e.key)!;
      const key = opts.keys === 'timm' ? officialToTimm(e.key) : e.key;
      if (e.dtype === 'int64') {
        const v = t.dtype === 'I32' ? new Int32Array(t.data.slice().buffer) : Int32Array.from(f32View(t));
        out.set(key, { dtype: 'I64', shape: e.torchShape, data: new Uint8Array(BigInt64Array.from(v, (x) => BigInt(x)).buffer) });
        continue;
      }
      const conv = toTorchLayout(e.key, t.shape, f32View(t));
      if (JSON.stringify(conv.shape) !== JSON.stringify(e.torchShape)) throw new UsageError(`${source}: ${e.key} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(e.tfShape)}`);
      out.set(key, { dtype: 'F32', shape: conv.shape, data: new Uint8Array(conv.data.buffer, conv.data.byteOffset, conv.data.byteLength) });
      if (e.role === 'param') parameters += conv.data.length;
    }
    await writeSafetensors(opts.out, out, {
      format: 'pt',
      'spark.encoder': encoderName,
      'spark.encoder_spec': JSON.stringify(encoder),
      'spark.keys': opts.keys ?? 'official',
      'spark.step': String(step),
    });
    return { out: opts.out, format: 'safetensors', encoder, encoderName, tensors: out.size, parameters };
  }
  // tfjs weights folder
  const specs: Array<{ name: string; shape: number[]; dtype: 'float32' | 'int32' }> = [];
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for (const e of entries) {
    const t = tensors.get(e.key)!;
    const isInt = e.dtype === 'int64';
    const data = isInt ? (t.dtype === 'I32' ? t.data.slice() : new Uint8Array(Int32Array.from(f32View(t)).buffer)) : t.data.slice();
    specs.push({ name: e.key, shape: t.shape, dtype: isInt ? 'int32' : 'float32' });
    chunks.push(data);
    bytes += data.byteLength;
    if (e.role === 'param') parameters += data.byteLength / 4;
  }
  const bin = new Uint8Array(bytes);
  let off = 0;
  for (const c of chunks) {
    bin.set(c, off);
    off += c.byteLength;
  }
  const dir = opts.out;
  const manifest = {
    format: 'spark-encoder',
    generatedBy: 'spark',
    convertedBy: null,
    modelTopology: null,
    userDefinedMetadata: { encoder, encoderName, stageChannels: info.stageChannels, layout: 'NHWC; TF weight layouts (conv [kH,kW,I,O], linear [I,O])', step },
    weightsManifest: [{ paths: ['weights.bin'], weights: specs }],
  };
  await atomicWriteFile(path.join(dir, 'weights.bin'), bin);
  await atomicWriteFile(path.join(dir, 'model.json'), JSON.stringify(manifest, null, 1) + '\n');
  return { out: dir, format: 'tfjs', encoder, encoderName, tensors: specs.length, parameters };
}

/** Read a folder written by `exportEncoder(..., {format: 'tfjs'})` into named tensors (caller disposes). */
export async function loadTfjsWeights(dir: string): Promise<{ tensors: tf.NamedTensorMap; metadata: Record<string, unknown> }> {
  const manifest = JSON.parse(await fsp.readFile(path.join(dir, 'model.json'), 'utf8')) as {
    weightsManifest: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }>;
    userDefinedMetadata?: Record<string, unknown>;
  };
  const tensors: tf.NamedTensorMap = {};
  for (const group of manifest.weightsManifest) {
    const parts = await Promise.all(group.paths.map((p) => fsp.readFile(path.join(dir, p))));
    const buf = Buffer.concat(parts);
    Object.assign(tensors, tf.io.decodeWeights(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength), group.weights));
  }
  return { tensors, metadata: manifest.userDefinedMetadata ?? {} };
}
