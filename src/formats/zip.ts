/**
 * A small, strict ZIP reader for torch.save archives (stored or deflated entries, ZIP64 sizes). Entry names are
 * validated: absolute paths, `..` segments, backslashes and NULs are refused, as are duplicate names and entries
 * whose data would run past the end of the file.
 */
import { inflateRawSync } from 'node:zlib';

export interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  /** Offset of the local file header. */
  offset: number;
}

export class ZipFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ZipFormatError';
  }
}

const EOCD_SIG = 0x06054b50;
const EOCD64_LOC_SIG = 0x07064b50;
const EOCD64_SIG = 0x06064b50;
const CDH_SIG = 0x02014b50;
const LFH_SIG = 0x04034b50;

function safeName(name: string): boolean {
  if (name.length === 0 || name.includes('\0') || name.includes('\\')) return false;
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return false;
  return !name.split('/').some((seg) => seg === '..');
}

export class ZipReader {
  readonly entries = new Map<string, ZipEntry>();

  constructor(private readonly buf: Buffer) {
    const dv = buf;
    // find the end-of-central-directory record (last 64 KiB + 22 bytes)
    let eocd = -1;
    for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
      if (dv.readUInt32LE(i) === EOCD_SIG) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw new ZipFormatError('not a zip archive (no end-of-central-directory record)');
    let count = dv.readUInt16LE(eocd + 10);
    let cdSize = dv.readUInt32LE(eocd + 12);
    let cdOffset = dv.readUInt32LE(eocd + 16);
    if (count === 0xffff || cdOffset === 0xffffffff || cdSize === 0xffffffff) {
      const loc = eocd - 20;
      if (loc < 0 || dv.readUInt32LE(loc) !== EOCD64_LOC_SIG) throw new ZipFormatError('zip64 locator missing');
      const e64 = Number(dv.readBigUInt64LE(loc + 8));
      if (e64 < 0 || e64 + 56 > buf.length || dv.readUInt32LE(e64) !== EOCD64_SIG) throw new ZipFormatError('zip64 record missing');
      count = Number(dv.readBigUInt64LE(e64 + 32));
      cdSize = Number(dv.readBigUInt64LE(e64 + 40));
      cdOffset = Number(dv.readBigUInt64LE(e64 + 48));
    }
    if (cdOffset + cdSize > buf.length) throw new ZipFormatError('central directory runs past the end of the file');
    let p = cdOffset;
    for (let i = 0; i < count; i++) {
      if (p + 46 > buf.length || dv.readUInt32LE(p) !== CDH_SIG) throw new ZipFormatError(`bad central directory entry ${i}`);
      const method = dv.readUInt16LE(p + 10);
      let csize = dv.readUInt32LE(p + 20);
      let size = dv.readUInt32LE(p + 24);
      const nlen = dv.readUInt16LE(p + 28);
      const xlen = dv.readUInt16LE(p + 30);
      const clen = dv.readUInt16LE(p + 32);
      let offset = dv.readUInt32LE(p + 42);
      const name = buf.subarray(p + 46, p + 46 + nlen).toString('utf8');
      // zip64 extra field
      let x = p + 46 + nlen;
      const xend = x + xlen;
      while (x + 4 <= xend) {
        const id = dv.readUInt16LE(x);
        const len = dv.readUInt16LE(x + 2);
        if (id === 0x0001) {
          let q = x + 4;
          if (size === 0xffffffff) (size = Number(dv.readBigUInt64LE(q))), (q += 8);
          if (csize === 0xffffffff) (csize = Number(dv.readBigUInt64LE(q))), (q += 8);
          if (offset === 0xffffffff) offset = Number(dv.readBigUInt64LE(q));
        }
        x += 4 + len;
      }
      if (!safeName(name)) throw new ZipFormatError(`unsafe entry name in archive: ${JSON.stringify(name)}`);
      if (this.entries.has(name)) throw new ZipFormatError(`duplicate entry in archive: ${name}`);
      if (method !== 0 && method !== 8) throw new ZipFormatError(`entry ${name}: unsupported compression method ${method}`);
      if (offset + 30 > buf.length) throw new ZipFormatError(`entry ${name}: header past the end of the file`);
      this.entries.set(name, { name, method, compressedSize: csize, size, offset });
      p = xend + clen;
    }
  }

  /** The entry's uncompressed bytes (a view for stored entries). */
  read(name: string): Buffer {
    const e = this.entries.get(name);
    if (!e) throw new ZipFormatError(`entry not found: ${name}`);
    const b = this.buf;
    if (b.readUInt32LE(e.offset) !== LFH_SIG) throw new ZipFormatError(`entry ${name}: bad local header`);
    const start = e.offset + 30 + b.readUInt16LE(e.offset + 26) + b.readUInt16LE(e.offset + 28);
    if (start + e.compressedSize > b.length) throw new ZipFormatError(`entry ${name}: data runs past the end of the file`);
    const raw = b.subarray(start, start + e.compressedSize);
    if (e.method === 0) {
      if (e.compressedSize !== e.size) throw new ZipFormatError(`entry ${name}: stored size mismatch`);
      return raw;
    }
    const out = inflateRawSync(raw, { maxOutputLength: e.size + 1 });
    if (out.length !== e.size) throw new ZipFormatError(`entry ${name}: inflated size ${out.length} != declared ${e.size}`);
    return out;
  }
}
