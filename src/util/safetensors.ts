/**
 * The safetensors container (huggingface/safetensors format): 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then the raw little-endian
 * tensor bytes. Used for checkpoints and for `spark export --format safetensors`.
 */
import { promises as fsp } from 'node:fs';
import { atomicWriteFile } from './atomic.js';

export type SafeDType = 'F32' | 'F64' | 'I64' | 'I32' | 'U8' | 'F16' | 'BF16' | 'I8' | 'I16' | 'BOOL';

export interface SafeTensor {
  dtype: SafeDType;
  shape: number[];
  /** Raw little-endian bytes of the tensor (a copy or a view). */
  data: Uint8Array;
}

const DTYPE_BYTES: Record<SafeDType, number> = { F32: 4, F64: 8, I64: 8, I32: 4, U8: 1, F16: 2, BF16: 2, I8: 1, I16: 2, BOOL: 1 };

export function dtypeBytes(d: SafeDType): number {
  return DTYPE_BYTES[d];
}

/** Float32Array → SafeTensor (shares memory). */
export function f32(shape: number[], values: Float32Array): SafeTensor {
  return { dtype: 'F32', shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

/** Read a SafeTensor's values as Float32Array (F32 only; copies when unaligned). */
export function toFloat32(t: SafeTensor): Float32Array {
  if (t.dtype !== 'F32') throw new Error(`expected F32 tensor, got ${t.dtype}`);
  if (t.data.byteOffset % 4 === 0) return new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
  return new Float32Array(t.data.slice().buffer);
}

/** Serialise tensors (sorted by name, 8-byte aligned header as the reference implementation pads). */
export function encodeSafetensors(tensors: Map<string, SafeTensor> | Record<string, SafeTensor>, metadata?: Record<string, string>): Uint8Array {
  const entries = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata) header['__metadata__'] = metadata;
  let off = 0;
  for (const [name, t] of entries) {
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (n !== t.data.byteLength) throw new Error(`safetensors: ${name}: shape ${JSON.stringify(t.shape)} needs ${n} bytes, got ${t.data.byteLength}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const hbytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + hbytes.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hbytes.length), true);
  out.set(hbytes, 8);
  let p = 8 + hbytes.length;
  for (const [, t] of entries) {
    out.set(t.data, p);
    p += t.data.byteLength;
  }
  return out;
}

/** Parse a safetensors buffer; validates offsets and sizes. */
export function decodeSafetensors(buf: Uint8Array): { tensors: Map<string, SafeTensor>; metadata: Record<string, string> } {
  if (buf.byteLength < 8) throw new Error('safetensors: file too short');
  const hlen = Number(new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true));
  if (hlen > buf.byteLength - 8 || hlen > 100_000_000) throw new Error('safetensors: header length out of range');
  const header = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + 8, hlen).toString('utf8')) as Record<string, unknown>;
  const base = 8 + hlen;
  const tensors = new Map<string, SafeTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = v as Record<string, string>;
      continue;
    }
    const e = v as { dtype: SafeDType; shape: number[]; data_offsets: [number, number] };
    if (!(e.dtype in DTYPE_BYTES)) throw new Error(`safetensors: ${name}: unknown dtype ${String(e.dtype)}`);
    const [b, en] = e.data_offsets;
    const need = e.shape.reduce((a, c) => a * c, 1) * DTYPE_BYTES[e.dtype];
    if (!(b >= 0 && en >= b && base + en <= buf.byteLength && en - b === need)) {
      throw new Error(`safetensors: ${name}: data offsets [${b}, ${en}] do not match shape ${JSON.stringify(e.shape)} / file size`);
    }
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data: buf.subarray(base + b, base + en) });
  }
  return { tensors, metadata };
}

export async function writeSafetensors(file: string, tensors: Map<string, SafeTensor> | Record<string, SafeTensor>, metadata?: Record<string, string>): Promise<void> {
  await atomicWriteFile(file, encodeSafetensors(tensors, metadata));
}

export async function readSafetensors(file: string): Promise<{ tensors: Map<string, SafeTensor>; metadata: Record<string, string> }> {
  const buf = await fsp.readFile(file);
  return decodeSafetensors(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength));
}
