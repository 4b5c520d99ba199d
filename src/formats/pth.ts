/**
 * Reads PyTorch `torch.save` checkpoints (zip container, spec §8.4) without Python: the safe unpickler
 * (pickle.ts) turns `data.pkl` into values with TensorRefs, and the tensors are read from the raw little-endian
 * storages in `data/<key>`, honouring storage offsets and strides. Every size is checked against the storage
 * and the archive before any byte is read.
 */
import { readFileSync } from 'node:fs';
import { ZipReader, ZipFormatError } from './zip.js';
import { unpickle, PickleError, type PyValue, type TensorRef, PyTuple } from './pickle.js';
import { SparkError } from '../util/errors.js';

/** A PyTorch tensor read from a checkpoint, in PyTorch's layout (contiguous, row-major). */
export interface TorchTensor {
  dtype: 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';
  shape: number[];
  /** Values; int64 are converted to numbers (exact up to 2^53), float16/bfloat16 widened to float32. */
  data: Float32Array | Float64Array | Int32Array | Uint8Array | number[];
}

const STORAGE_DTYPES: Record<string, { dtype: TorchTensor['dtype']; bytes: number }> = {
  FloatStorage: { dtype: 'float32', bytes: 4 },
  DoubleStorage: { dtype: 'float64', bytes: 8 },
  HalfStorage: { dtype: 'float16', bytes: 2 },
  BFloat16Storage: { dtype: 'bfloat16', bytes: 2 },
  LongStorage: { dtype: 'int64', bytes: 8 },
  IntStorage: { dtype: 'int32', bytes: 4 },
  ShortStorage: { dtype: 'int16', bytes: 2 },
  CharStorage: { dtype: 'int8', bytes: 1 },
  ByteStorage: { dtype: 'uint8', bytes: 1 },
  BoolStorage: { dtype: 'bool', bytes: 1 },
};

/** An unsafe or malformed checkpoint file: exit code 2 with the file named. */
export class CheckpointFormatError extends SparkError {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`, 2);
    this.name = 'CheckpointFormatError';
  }
}

export interface TorchFile {
  file: string;
  /** The unpickled object: tensors appear as TensorRef; call `tensor(ref)` to read one. */
  root: PyValue;
  tensor(ref: TensorRef): TorchTensor;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

export function readTorchFile(file: string): TorchFile {
  let zip: ZipReader;
  let root: PyValue;
  let prefix: string;
  try {
    zip = new ZipReader(readFileSync(file));
    const pkls = [...zip.entries.keys()].filter((n) => n.endsWith('/data.pkl') && n.split('/').length === 2);
    if (pkls.length !== 1) {
      throw new ZipFormatError(pkls.length === 0 ? 'no <name>/data.pkl in the archive (not a torch.save zip file; legacy non-zip checkpoints are not supported)' : 'several data.pkl entries');
    }
    prefix = pkls[0]!.slice(0, -'data.pkl'.length);
    const bo = zip.entries.has(`${prefix}byteorder`) ? zip.read(`${prefix}byteorder`).toString('utf8').trim() : 'little';
    if (bo !== 'little') throw new ZipFormatError(`byteorder '${bo}' is not supported`);
    root = unpickle(zip.read(pkls[0]!));
  } catch (e) {
    if (e instanceof ZipFormatError || e instanceof PickleError) throw new CheckpointFormatError(file, e.message);
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new CheckpointFormatError(file, 'no such file');
    throw e;
  }
  const cache = new Map<string, Buffer>();
  const storageBytes = (key: string): Buffer => {
    let b = cache.get(key);
    if (!b) {
      const name = `${prefix}data/${key}`;
      if (!zip.entries.has(name)) throw new CheckpointFormatError(file, `storage ${key} is missing from the archive`);
      b = zip.read(name);
      cache.set(key, b);
    }
    return b;
  };
  const tensor = (ref: TensorRef): TorchTensor => {
    const info = STORAGE_DTYPES[ref.storage.storageType];
    if (!info) throw new CheckpointFormatError(file, `unsupported storage type ${ref.storage.storageType}`);
    const raw = storageBytes(ref.storage.key);
    if (raw.length !== ref.storage.numel * info.bytes) {
      throw new CheckpointFormatError(file, `storage ${ref.storage.key} has ${raw.length} bytes, but the pickle declares ${ref.storage.numel} × ${info.bytes}`);
    }
    const numel = ref.shape.reduce((a, b) => a * b, 1);
    if (numel > 0) {
      let maxIndex = ref.offset;
      for (let i = 0; i < ref.shape.length; i++) maxIndex += (ref.shape[i]! - 1) * ref.stride[i]!;
      if (ref.offset < 0 || maxIndex >= ref.storage.numel) {
        throw new CheckpointFormatError(file, `tensor of shape [${ref.shape}] with offset ${ref.offset} and stride [${ref.stride}] reads past its storage of ${ref.storage.numel} elements`);
      }
    }
    // element reader
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const readAt = (i: number): number => {
      const o = i * info.bytes;
      switch (info.dtype) {
        case 'float32':
          return dv.getFloat32(o, true);
        case 'float64':
          return dv.getFloat64(o, true);
        case 'float16':
          return halfToFloat(dv.getUint16(o, true));
        case 'bfloat16':
          return new Float32Array(new Uint32Array([dv.getUint16(o, true) << 16]).buffer)[0]!;
        case 'int64':
          return Number(dv.getBigInt64(o, true));
        case 'int32':
          return dv.getInt32(o, true);
        case 'int16':
          return dv.getInt16(o, true);
        case 'int8':
          return dv.getInt8(o);
        default:
          return dv.getUint8(o);
      }
    };
    const out: number[] | Float32Array | Float64Array | Int32Array | Uint8Array =
      info.dtype === 'float64'
        ? new Float64Array(numel)
        : info.dtype.startsWith('float') || info.dtype === 'bfloat16'
          ? new Float32Array(numel)
          : info.dtype === 'int64'
            ? new Array<number>(numel)
            : info.dtype === 'uint8' || info.dtype === 'bool'
              ? new Uint8Array(numel)
              : new Int32Array(numel);
    const nd = ref.shape.length;
    const idx = new Array<number>(nd).fill(0);
    for (let n = 0; n < numel; n++) {
      let src = ref.offset;
      for (let d = 0; d < nd; d++) src += idx[d]! * ref.stride[d]!;
      out[n] = readAt(src);
      for (let d = nd - 1; d >= 0; d--) {
        if (++idx[d]! < ref.shape[d]!) break;
        idx[d] = 0;
      }
    }
    return { dtype: info.dtype, shape: [...ref.shape], data: out };
  };
  return { file, root, tensor };
}

export function isTensorRef(v: unknown): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as TensorRef).kind === 'tensor';
}

/** Convert plain (non-tensor) pickled values to JSON-like JS values (Maps → objects, tuples → arrays). */
export function toPlain(v: PyValue): unknown {
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) o[String(k)] = toPlain(x);
    return o;
  }
  if (v instanceof PyTuple || Array.isArray(v)) return Array.from(v as PyValue[], (x) => toPlain(x));
  if (typeof v === 'bigint') return v.toString();
  if (isTensorRef(v)) return `<tensor ${JSON.stringify(v.shape)}>`;
  return v;
}
