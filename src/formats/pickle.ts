/**
 * A safe unpickler for the subset of the pickle protocol that `torch.save` writes (protocol 2, plus the framing and
 * memo opcodes of protocol 4). It executes nothing: GLOBAL may only name the few callables in ALLOWED_GLOBALS, and
 * REDUCE/BUILD are interpreted for those alone. Anything else — another global, NEWOBJ, INST, EXT codes, a
 * persistent id that is not a torch storage — is refused with a PickleError naming the opcode and byte offset.
 */

export class PickleError extends Error {
  constructor(message: string, readonly offset?: number) {
    super(offset != null ? `${message} (at byte ${offset} of data.pkl)` : message);
    this.name = 'PickleError';
  }
}

/** A Python tuple (kept distinct from lists). */
export class PyTuple extends Array<PyValue> {}
/** A Python global reference that is on the allow list. */
export interface PyGlobal {
  kind: 'global';
  module: string;
  name: string;
}
/** A torch storage referenced through a persistent id. */
export interface StorageRef {
  kind: 'storage';
  storageType: string;
  key: string;
  location: string;
  numel: number;
}
/** A tensor as `_rebuild_tensor_v2` describes it (data not yet read). */
export interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
  requiresGrad: boolean;
}
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyTuple
  | Map<PyValue, PyValue>
  | PyGlobal
  | StorageRef
  | TensorRef;

/** module.name of every global the reader accepts. */
export const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch.FloatStorage',
  'torch.DoubleStorage',
  'torch.HalfStorage',
  'torch.BFloat16Storage',
  'torch.LongStorage',
  'torch.IntStorage',
  'torch.ShortStorage',
  'torch.CharStorage',
  'torch.ByteStorage',
  'torch.BoolStorage',
]);

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

const LIMITS = { stack: 1_000_000, memo: 10_000_000, depth: 10_000 };

function isGlobal(v: unknown, full: string): boolean {
  return typeof v === 'object' && v !== null && (v as PyGlobal).kind === 'global' && `${(v as PyGlobal).module}.${(v as PyGlobal).name}` === full;
}

function asInt(v: PyValue, what: string, at: number): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw new PickleError(`${what} must be an integer`, at);
}

function asIntTuple(v: PyValue, what: string, at: number): number[] {
  if (!Array.isArray(v)) throw new PickleError(`${what} must be a tuple of integers`, at);
  return v.map((x) => {
    const n = asInt(x as PyValue, what, at);
    if (n < 0) throw new PickleError(`${what} has a negative entry`, at);
    return n;
  });
}

/** Unpickle `data`; `persistentLoad` resolves BINPERSID ids (torch storages). */
export function unpickle(data: Uint8Array): PyValue {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let p = 0;

  const need = (n: number, at: number) => {
    if (p + n > buf.length) throw new PickleError('truncated pickle', at);
  };
  const pop = (at: number): PyValue => {
    if (stack.length === 0) throw new PickleError('stack underflow', at);
    const v = stack.pop()!;
    if (v === MARK) throw new PickleError('unexpected MARK on the stack', at);
    return v;
  };
  const popMark = (at: number): PyValue[] => {
    const m = marks.pop();
    if (m == null) throw new PickleError('no MARK for this opcode', at);
    const items = stack.splice(m);
    items.shift(); // the MARK itself
    if (items.some((x) => x === MARK)) throw new PickleError('nested MARK', at);
    return items as PyValue[];
  };
  const push = (v: PyValue, at: number) => {
    if (stack.length >= LIMITS.stack) throw new PickleError('pickle stack too deep', at);
    stack.push(v);
  };
  const top = (at: number): PyValue => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) throw new PickleError('stack underflow', at);
    return stack[stack.length - 1] as PyValue;
  };
  const memoPut = (idx: number, at: number) => {
    if (memo.size >= LIMITS.memo) throw new PickleError('memo too large', at);
    memo.set(idx, top(at));
  };
  const memoGet = (idx: number, at: number) => {
    if (!memo.has(idx)) throw new PickleError(`memo key ${idx} not defined`, at);
    push(memo.get(idx)!, at);
  };
  const str = (n: number, at: number) => {
    need(n, at);
    const s = buf.toString('utf8', p, p + n);
    p += n;
    return s;
  };
  const setItems = (d: PyValue, items: PyValue[], at: number) => {
    if (!(d instanceof Map)) throw new PickleError('SETITEM(S) on something that is not a dict', at);
    if (items.length % 2) throw new PickleError('odd number of items for SETITEMS', at);
    for (let i = 0; i < items.length; i += 2) d.set(items[i]!, items[i + 1]!);
  };
  const global = (module: string, name: string, at: number): PyGlobal => {
    const full = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(full)) throw new PickleError(`refusing global '${full}' (not a tensor/state-dict type)`, at);
    return { kind: 'global', module, name };
  };

  while (true) {
    const at = p;
    if (p >= buf.length) throw new PickleError('pickle ended without STOP', at);
    const op = buf[p++]!;
    switch (op) {
      case 0x80: // PROTO
        need(1, at);
        if (buf[p]! > 5) throw new PickleError(`unsupported pickle protocol ${buf[p]}`, at);
        p += 1;
        break;
      case 0x95: // FRAME
        need(8, at);
        p += 8;
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) throw new PickleError(`STOP with ${stack.length} items on the stack`, at);
        return pop(at);
      case 0x28: // MARK
        marks.push(stack.length);
        stack.push(MARK);
        if (marks.length > LIMITS.depth) throw new PickleError('too many nested MARKs', at);
        break;
      case 0x7d: // EMPTY_DICT
        push(new Map(), at);
        break;
      case 0x5d: // EMPTY_LIST
        push([], at);
        break;
      case 0x29: // EMPTY_TUPLE
        push(new PyTuple(), at);
        break;
      case 0x74: // TUPLE
        push(PyTuple.from(popMark(at)) as PyTuple, at);
        break;
      case 0x85: // TUPLE1
      case 0x86: // TUPLE2
      case 0x87: {
        // TUPLE3
        const n = op - 0x84;
        const items: PyValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop(at));
        push(PyTuple.from(items) as PyTuple, at);
        break;
      }
      case 0x71: // BINPUT
        need(1, at);
        memoPut(buf[p++]!, at);
        break;
      case 0x72: // LONG_BINPUT
        need(4, at);
        memoPut(buf.readUInt32LE(p), at);
        p += 4;
        break;
      case 0x94: // MEMOIZE
        memoPut(memo.size, at);
        break;
      case 0x68: // BINGET
        need(1, at);
        memoGet(buf[p++]!, at);
        break;
      case 0x6a: // LONG_BINGET
        need(4, at);
        memoGet(buf.readUInt32LE(p), at);
        p += 4;
        break;
      case 0x4a: // BININT
        need(4, at);
        push(buf.readInt32LE(p), at);
        p += 4;
        break;
      case 0x4b: // BININT1
        need(1, at);
        push(buf[p++]!, at);
        break;
      case 0x4d: // BININT2
        need(2, at);
        push(buf.readUInt16LE(p), at);
        p += 2;
        break;
      case 0x8a: {
        // LONG1
        need(1, at);
        const n = buf[p++]!;
        need(n, at);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[p + i]!);
        if (n > 0 && buf[p + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v, at);
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        need(8, at);
        push(buf.readDoubleBE(p), at);
        p += 8;
        break;
      case 0x4e: // NONE
        push(null, at);
        break;
      case 0x88: // NEWTRUE
        push(true, at);
        break;
      case 0x89: // NEWFALSE
        push(false, at);
        break;
      case 0x58: // BINUNICODE
        need(4, at);
        {
          const n = buf.readUInt32LE(p);
          p += 4;
          push(str(n, at), at);
        }
        break;
      case 0x8c: // SHORT_BINUNICODE
        need(1, at);
        push(str(buf[p++]!, at), at);
        break;
      case 0x8d: {
        // BINUNICODE8
        need(8, at);
        const n = Number(buf.readBigUInt64LE(p));
        p += 8;
        push(str(n, at), at);
        break;
      }
      case 0x54: // BINSTRING
        need(4, at);
        {
          const n = buf.readInt32LE(p);
          p += 4;
          if (n < 0) throw new PickleError('negative string length', at);
          push(str(n, at), at);
        }
        break;
      case 0x55: // SHORT_BINSTRING
        need(1, at);
        push(str(buf[p++]!, at), at);
        break;
      case 0x43: // SHORT_BINBYTES
      case 0x42: {
        // BINBYTES
        const n = op === 0x43 ? (need(1, at), buf[p++]!) : (need(4, at), (p += 4), buf.readUInt32LE(p - 4));
        need(n, at);
        push(new Uint8Array(buf.subarray(p, p + n)), at);
        p += n;
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n"
        const nl1 = buf.indexOf(0x0a, p);
        const nl2 = nl1 < 0 ? -1 : buf.indexOf(0x0a, nl1 + 1);
        if (nl1 < 0 || nl2 < 0 || nl2 - p > 512) throw new PickleError('malformed GLOBAL', at);
        const module = buf.toString('utf8', p, nl1);
        const name = buf.toString('utf8', nl1 + 1, nl2);
        p = nl2 + 1;
        push(global(module, name, at), at);
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop(at);
        const module = pop(at);
        if (typeof name !== 'string' || typeof module !== 'string') throw new PickleError('STACK_GLOBAL needs two strings', at);
        push(global(module, name, at), at);
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop(at);
        const fn = pop(at);
        push(reduce(fn, args, at), at);
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop(at);
        push(persistent(pid, at), at);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop(at);
        const k = pop(at);
        setItems(top(at), [k, v], at);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark(at);
        setItems(top(at), items, at);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop(at);
        const l = top(at);
        if (!Array.isArray(l) || l instanceof PyTuple) throw new PickleError('APPEND to something that is not a list', at);
        l.push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark(at);
        const l = top(at);
        if (!Array.isArray(l) || l instanceof PyTuple) throw new PickleError('APPENDS to something that is not a list', at);
        for (const v of items) l.push(v);
        break;
      }
      case 0x62: {
        // BUILD: only OrderedDict's `_metadata` attribute (state dicts); ignored
        const state = pop(at);
        const obj = top(at);
        if (!(obj instanceof Map)) throw new PickleError('BUILD on an object other than an OrderedDict', at);
        if (!(state instanceof Map) && !(state instanceof PyTuple)) throw new PickleError('BUILD with an unexpected state', at);
        break;
      }
      case 0x30: // POP
        if (stack.length === 0) throw new PickleError('stack underflow', at);
        if (stack.pop() === MARK) marks.pop();
        break;
      case 0x31: // POP_MARK
        popMark(at);
        break;
      case 0x32: // DUP
        push(top(at), at);
        break;
      default:
        throw new PickleError(`refusing pickle opcode 0x${op.toString(16).padStart(2, '0')} ('${String.fromCharCode(op)}')`, at);
    }
  }
}

function persistent(pid: PyValue, at: number): StorageRef {
  if (!(pid instanceof PyTuple) || pid.length !== 5 || pid[0] !== 'storage') throw new PickleError('persistent id is not a torch storage', at);
  const [, type, key, location, numel] = pid;
  if (typeof type !== 'object' || type === null || (type as PyGlobal).kind !== 'global') throw new PickleError('storage type is not a storage class', at);
  const g = type as PyGlobal;
  if (g.module !== 'torch' || !g.name.endsWith('Storage')) throw new PickleError(`storage type ${g.module}.${g.name} is not a storage class`, at);
  if (typeof key !== 'string' || !/^[A-Za-z0-9_]+$/.test(key)) throw new PickleError(`bad storage key ${JSON.stringify(key)}`, at);
  return { kind: 'storage', storageType: g.name, key, location: String(location), numel: asInt(numel as PyValue, 'storage numel', at) };
}

function reduce(fn: PyValue, args: PyValue, at: number): PyValue {
  if (!(args instanceof PyTuple)) throw new PickleError('REDUCE arguments must be a tuple', at);
  if (isGlobal(fn, 'collections.OrderedDict')) {
    if (args.length !== 0) throw new PickleError('OrderedDict() with arguments is not supported', at);
    return new Map();
  }
  if (isGlobal(fn, 'torch._utils._rebuild_tensor_v2')) {
    if (args.length < 4) throw new PickleError('_rebuild_tensor_v2 needs at least 4 arguments', at);
    const storage = args[0] as StorageRef;
    if (!storage || (storage as StorageRef).kind !== 'storage') throw new PickleError('_rebuild_tensor_v2: first argument is not a storage', at);
    const offset = asInt(args[1]!, 'storage offset', at);
    const shape = asIntTuple(args[2]!, 'tensor size', at);
    const stride = asIntTuple(args[3]!, 'tensor stride', at);
    if (shape.length !== stride.length) throw new PickleError('size and stride have different lengths', at);
    return { kind: 'tensor', storage, offset, shape, stride, requiresGrad: args[4] === true };
  }
  if (isGlobal(fn, 'torch._utils._rebuild_parameter')) {
    const t = args[0] as TensorRef;
    if (!t || t.kind !== 'tensor') throw new PickleError('_rebuild_parameter: not a tensor', at);
    return t;
  }
  const g = fn as PyGlobal;
  throw new PickleError(`refusing to call ${g && g.kind === 'global' ? `${g.module}.${g.name}` : 'a non-callable'}`, at);
}
