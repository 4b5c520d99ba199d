/**
 * `spark import`: a PyTorch checkpoint (torch.save zip, spec §8.4) or a safetensors file in PyTorch layout →
 * a spark folder that `loadCheckpoint`, `spark reconstruct`, `spark finetune` and `spark probe` read:
 *   <out>/config.yaml                 a resolved experiment config describing the model
 *   <out>/encoder.safetensors         the encoder (timm / official-ConvNeXt keys, TF layouts)
 *   <out>/checkpoint/model.safetensors  the whole SparK model (with-decoder files only, reference keys)
 *   <out>/import.json                 what was read: layout, source, key report
 * The three layouts of spec §8.1–8.3 are recognised: encoder-only state dict, the old
 * `{arch, module, is_pretrain}` wrapper, and the with-decoder SparK file (`module` with `sparse_encoder.sp_cnn.*`
 * and `config`). Missing or unexpected keys, or shape mismatches, fail the import unless `allowPartial`.
 */
import path from 'node:path';
import { existsSync, mkdirSync, readdirSync, rmSync, renameSync } from 'node:fs';
import type { EncoderSpec, ModelConfig } from '../spec/types.js';
import { readTorchFile, isTensorRef, toPlain, type TorchTensor } from './pth.js';
import type { PyValue } from './pickle.js';
import { readSafetensors, writeSafetensors, type SafeTensor } from '../util/safetensors.js';
import { atomicWriteFile } from '../util/atomic.js';
import { SparkError, UsageError } from '../util/errors.js';
import { encoderStateEntries, sparkStateEntries, fromTorchLayout, type StateEntry } from '../models/weights.js';
import { ENCODER_PREFIX } from '../models/spark.js';
import { inferEncoder, presetFor, timmToOfficial } from './encoder-keys.js';
import { resolveConfig, configToYaml } from '../spec/index.js';

export type CheckpointLayout = 'encoder' | 'wrapped-encoder' | 'spark-with-decoder';

/** A tensor source in PyTorch layout, keyed by its name in the file. */
interface SourceTensor {
  shape: number[];
  dtype: string;
  read(): Float32Array | number[];
}

export interface ImportOptions {
  out: string;
  allowPartial?: boolean;
  /** Override the inferred encoder (a preset name or family object). */
  encoder?: EncoderSpec;
}

export interface ImportReport {
  file: string;
  layout: CheckpointLayout;
  encoder: EncoderSpec;
  encoderName: string;
  inputSize: number;
  model: ModelConfig | null;
  loaded: number;
  missing: string[];
  unexpected: string[];
  shapeMismatches: string[];
  /** Keys present in the reference format that spark does not hold (imn_m, imn_s, norm_black, config). */
  ignored: string[];
  outDir: string;
  files: string[];
  /** Non-tensor entries of the file (arch, epoch, config, …) as plain values. */
  extras: Record<string, unknown>;
}

export class ImportError extends SparkError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'ImportError';
  }
}

function fromPth(file: string): { root: PyValue; tensors: (m: Map<PyValue, PyValue>) => Map<string, SourceTensor> } {
  const f = readTorchFile(file);
  const tensors = (m: Map<PyValue, PyValue>) => {
    const out = new Map<string, SourceTensor>();
    for (const [k, v] of m) {
      if (typeof k !== 'string' || !isTensorRef(v)) continue;
      out.set(k, {
        shape: [...v.shape],
        dtype: v.storage.storageType,
        read: () => {
          const t: TorchTensor = f.tensor(v);
          if (t.dtype === 'int64' || t.dtype === 'int32') return Array.from(t.data as ArrayLike<number>);
          return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>);
        },
      });
    }
    return out;
  };
  return { root: f.root, tensors };
}

async function fromSafetensors(file: string): Promise<Map<string, SourceTensor>> {
  const { tensors } = await readSafetensors(file);
  const out = new Map<string, SourceTensor>();
  for (const [k, t] of tensors) {
    out.set(k, {
      shape: t.shape,
      dtype: t.dtype,
      read: () => {
        const b = t.data;
        const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        const n = t.shape.reduce((a, c) => a * c, 1);
        switch (t.dtype) {
          case 'F32':
            return Float32Array.from({ length: n }, (_, i) => dv.getFloat32(i * 4, true));
          case 'F64':
            return Float32Array.from({ length: n }, (_, i) => dv.getFloat64(i * 8, true));
          case 'I64':
            return Array.from({ length: n }, (_, i) => Number(dv.getBigInt64(i * 8, true)));
          case 'I32':
            return Array.from({ length: n }, (_, i) => dv.getInt32(i * 4, true));
          default:
            throw new ImportError(`${file}: tensor ${k} has unsupported dtype ${t.dtype}`);
        }
      },
    });
  }
  return out;
}

function asMap(v: PyValue | undefined): Map<PyValue, PyValue> | null {
  return v instanceof Map ? v : null;
}

function num(v: unknown, dflt: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : dflt;
}

/** Read, check and convert a checkpoint; writes the output folder atomically (temp folder + rename). */
export async function importCheckpoint(file: string, opts: ImportOptions): Promise<ImportReport> {
  if (!existsSync(file)) throw new UsageError(`${file}: no such file`);
  let layout: CheckpointLayout;
  let src: Map<string, SourceTensor>;
  let extras: Record<string, unknown> = {};
  let sparkConfig: Record<string, unknown> | null = null;
  if (file.endsWith('.safetensors')) {
    src = await fromSafetensors(file);
    layout = [...src.keys()].some((k) => k.startsWith(ENCODER_PREFIX)) ? 'spark-with-decoder' : 'encoder';
  } else {
    const { root, tensors } = fromPth(file);
    const top = asMap(root);
    if (!top) throw new ImportError(`${file}: the pickled object is not a dict (got ${Array.isArray(root) ? 'a list' : typeof root})`);
    const module = asMap(top.get('module'));
    if (module) {
      for (const [k, v] of top) if (k !== 'module' && k !== 'optimizer' && typeof k === 'string') extras[k] = toPlain(v);
      src = tensors(module);
      if ([...src.keys()].some((k) => k.startsWith(ENCODER_PREFIX))) {
        layout = 'spark-with-decoder';
        const cfg = module.get('config');
        sparkConfig = cfg instanceof Map ? (toPlain(cfg) as Record<string, unknown>) : null;
      } else {
        layout = 'wrapped-encoder';
      }
    } else {
      src = tensors(top);
      layout = 'encoder';
      const nonTensor = [...top.keys()].filter((k) => typeof k === 'string' && !src.has(k));
      if (src.size === 0) throw new ImportError(`${file}: no tensors found (keys: ${nonTensor.slice(0, 8).join(', ')})`);
    }
  }
  // the encoder keys, without the SparK prefix, in official form
  const encShapes = new Map<string, number[]>();
  for (const [k, t] of src) {
    if (layout === 'spark-with-decoder') {
      if (k.startsWith(ENCODER_PREFIX)) encShapes.set(k.slice(ENCODER_PREFIX.length), t.shape);
    } else {
      encShapes.set(timmToOfficial(k), t.shape);
    }
  }
  let encoder: EncoderSpec;
  if (opts.encoder) {
    encoder = opts.encoder;
  } else {
    const inferred = inferEncoder(encShapes);
    encoder = presetFor(inferred) ?? inferred;
  }
  const inputSize = Math.round(num(sparkConfig?.['sparse_encoder.input_size'], num(extras['input_size'], 224)));
  let model: ModelConfig | null = null;
  let expected: StateEntry[];
  if (layout === 'spark-with-decoder') {
    const dn = String(sparkConfig?.['densify_norm_str'] ?? 'auto');
    model = {
      encoder,
      decoder: { type: 'light', width: Math.round(num(sparkConfig?.['dense_decoder.width'], 768)) },
      mask_ratio: num(sparkConfig?.['mask_ratio'], 0.6),
      drop_path: null,
      densify_norm: dn === 'bn' || dn === 'ln' ? dn : dn === '' ? 'none' : 'auto',
    };
    expected = sparkStateEntries(model, inputSize);
  } else {
    expected = encoderStateEntries(encoder);
  }
  // match keys
  const srcByKey = new Map<string, [string, SourceTensor]>();
  for (const [k, t] of src) srcByKey.set(layout === 'spark-with-decoder' ? k : timmToOfficial(k), [k, t]);
  const missing: string[] = [];
  const shapeMismatches: string[] = [];
  const ignored: string[] = [];
  const out = new Map<string, SafeTensor>();
  const bufferNames: string[] = [];
  for (const e of expected) {
    if (e.role === 'deprecated' || e.role === 'config') {
      if (srcByKey.has(e.key) || (e.role === 'config' && sparkConfig)) ignored.push(e.key);
      continue;
    }
    const hit = srcByKey.get(e.key);
    if (!hit) {
      missing.push(e.key);
      continue;
    }
    const [, t] = hit;
    if (JSON.stringify(t.shape) !== JSON.stringify(e.torchShape)) {
      shapeMismatches.push(`${e.key}: file ${JSON.stringify(t.shape)} vs model ${JSON.stringify(e.torchShape)}`);
      continue;
    }
    const values = t.read();
    if (e.dtype === 'int64') {
      out.set(e.key, { dtype: 'I32', shape: e.tfShape, data: new Uint8Array(Int32Array.from(values as ArrayLike<number>).buffer) });
    } else {
      const conv = fromTorchLayout(e.key, e.torchShape, values instanceof Float32Array ? values : Float32Array.from(values));
      out.set(e.key, { dtype: 'F32', shape: conv.shape, data: new Uint8Array(conv.data.buffer, conv.data.byteOffset, conv.data.byteLength) });
    }
    if (e.role === 'buffer') bufferNames.push(e.key);
  }
  const known = new Set(expected.map((e) => e.key));
  const unexpected = [...srcByKey.keys()].filter((k) => !known.has(k));
  const encoderName = typeof encoder === 'string' ? encoder : (presetFor(encoder) ?? JSON.stringify(encoder));
  const report: ImportReport = {
    file,
    layout,
    encoder,
    encoderName,
    inputSize,
    model,
    loaded: out.size,
    missing,
    unexpected,
    shapeMismatches,
    ignored,
    outDir: path.resolve(opts.out),
    files: [],
    extras,
  };
  if ((missing.length || unexpected.length || shapeMismatches.length) && !opts.allowPartial) {
    const parts: string[] = [];
    if (missing.length) parts.push(`${missing.length} missing (${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''})`);
    if (unexpected.length) parts.push(`${unexpected.length} unexpected (${unexpected.slice(0, 5).join(', ')}${unexpected.length > 5 ? ', …' : ''})`);
    if (shapeMismatches.length) parts.push(`${shapeMismatches.length} with the wrong shape (${shapeMismatches.slice(0, 3).join('; ')})`);
    throw new ImportError(`${file}: keys do not match encoder ${encoderName}: ${parts.join('; ')} — pass --allow-partial to import anyway, or --encoder to choose the model`);
  }
  if (out.size === 0) throw new ImportError(`${file}: no tensor matches encoder ${encoderName}`);

  // write into a temp folder, then rename over the output
  const outDir = path.resolve(opts.out);
  if (existsSync(outDir) && readdirSync(outDir).length > 0 && !existsSync(path.join(outDir, 'import.json'))) {
    throw new UsageError(`${opts.out}: exists and is not an earlier import; choose an empty or new folder`);
  }
  const tmp = `${outDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const meta = { source: path.resolve(file), layout, buffers: JSON.stringify(bufferNames.map((k) => (layout === 'spark-with-decoder' ? k : k))) };
  const files: string[] = [];
  const encOut = new Map<string, SafeTensor>();
  for (const [k, t] of out) {
    if (layout === 'spark-with-decoder') {
      if (k.startsWith(ENCODER_PREFIX)) encOut.set(k.slice(ENCODER_PREFIX.length), t);
    } else encOut.set(k, t);
  }
  const encBuffers = bufferNames.map((k) => (k.startsWith(ENCODER_PREFIX) ? k.slice(ENCODER_PREFIX.length) : k)).filter((k) => encOut.has(k));
  await writeSafetensors(path.join(tmp, 'encoder.safetensors'), encOut, { ...meta, buffers: JSON.stringify(encBuffers), step: '0' });
  files.push('encoder.safetensors');
  if (layout === 'spark-with-decoder') {
    await writeSafetensors(path.join(tmp, 'checkpoint', 'model.safetensors'), out, { ...meta, step: '0' });
    files.push('checkpoint/model.safetensors');
  }
  const name = `import-${path.basename(file).replace(/\.[^.]+$/, '').replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  const config = resolveConfig(
    {
      name,
      model: model ? { ...model, encoder } : { encoder },
      data: { input_size: inputSize },
      tracking: { enabled: false },
    },
    { file: path.resolve(file) },
  );
  await atomicWriteFile(path.join(tmp, 'config.yaml'), configToYaml(config));
  files.push('config.yaml');
  const { file: _f, outDir: _o, ...rest } = report;
  await atomicWriteFile(path.join(tmp, 'import.json'), JSON.stringify({ ...rest, source: path.resolve(file), files: [...files, 'import.json'] }, null, 2) + '\n');
  files.push('import.json');
  if (existsSync(outDir)) {
    const old = `${outDir}.old-${process.pid}`;
    renameSync(outDir, old);
    renameSync(tmp, outDir);
    rmSync(old, { recursive: true, force: true });
  } else {
    mkdirSync(path.dirname(outDir), { recursive: true });
    renameSync(tmp, outDir);
  }
  report.files = files;
  return report;
}
