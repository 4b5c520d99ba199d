import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { readTorchFile, isTensorRef, toPlain, CheckpointFormatError } from '../src/formats/pth.js';
import { unpickle, PickleError } from '../src/formats/pickle.js';
import { packageRoot } from '../src/util/paths.js';

const FIX = path.join(packageRoot(), 'test', 'fixtures', 'interop');

test('reads every dtype, strided and offset tensors exactly as torch wrote them', () => {
  const f = readTorchFile(path.join(FIX, 'dtypes.pth'));
  const expected = JSON.parse(readFileSync(path.join(FIX, 'dtypes.json'), 'utf8')) as Record<string, { shape: number[]; values: number[] }>;
  const root = f.root as Map<unknown, unknown>;
  const tensors = root.get('tensors') as Map<string, unknown>;
  assert.deepEqual([...tensors.keys()], Object.keys(expected));
  for (const [name, exp] of Object.entries(expected)) {
    const ref = tensors.get(name);
    assert.ok(isTensorRef(ref), name);
    const t = f.tensor(ref);
    assert.deepEqual(t.shape, exp.shape, `${name} shape`);
    const got = Array.from(t.data as ArrayLike<number>, Number);
    assert.equal(got.length, exp.values.length, name);
    for (let i = 0; i < got.length; i++) {
      // expected values went through float32 in the generator (v.float()), so compare at float32 precision
      assert.ok(Math.abs(got[i]! - exp.values[i]!) <= 1e-6 * Math.max(1, Math.abs(exp.values[i]!)), `${name}[${i}] ${got[i]} != ${exp.values[i]}`);
    }
  }
  assert.equal(f.tensor(tensors.get('i64') as never).dtype, 'int64');
  assert.equal((f.tensor(tensors.get('i64') as never).data as number[])[2], 2 ** 40);
  const meta = toPlain(root.get('meta') as never) as Record<string, unknown>;
  assert.deepEqual(meta, { epoch: 3, lr: 1.5e-3, name: 'x', flags: [true, null], big: (2n ** 70n).toString() });
});

test('reads a state_dict() OrderedDict (with the _metadata BUILD) in key order', () => {
  const f = readTorchFile(path.join(FIX, 'resnet_timm_style.pth'));
  const sd = f.root as Map<string, unknown>;
  assert.ok(sd instanceof Map);
  const keys = [...sd.keys()];
  assert.equal(keys[0], 'conv1.weight');
  assert.ok(keys.includes('layer4.0.downsample.1.num_batches_tracked'));
  const w = f.tensor(sd.get('conv1.weight') as never);
  assert.deepEqual(w.shape, [8, 3, 7, 7]);
  assert.equal(f.tensor(sd.get('bn1.num_batches_tracked') as never).data[0], 7);
});

test('refuses hostile files with a clear error and executes nothing', () => {
  const cases: Array<[string, RegExp]> = [
    ['hostile_global.pth', /refusing global '(posix|os)\.system'/],
    ['hostile_opcode.pth', /refusing pickle opcode 0x69/],
    ['hostile_path.pth', /unsafe entry name in archive: "\.\.\/\.\.\/evil\/data\/0"/],
  ];
  for (const [file, re] of cases) {
    assert.throws(() => readTorchFile(path.join(FIX, file)), (e: unknown) => {
      assert.ok(e instanceof CheckpointFormatError, file);
      assert.equal(e.exitCode, 2);
      assert.match(e.message, re);
      assert.ok(e.message.startsWith(path.join(FIX, file)), 'names the file');
      return true;
    });
  }
  // sizes that do not match the storages: detected when the tensor is read
  const f = readTorchFile(path.join(FIX, 'hostile_size.pth'));
  const w = (f.root as Map<string, unknown>).get('w');
  assert.throws(() => f.tensor(w as never), /storage 0 has 8 bytes, but the pickle declares 4 × 4/);
  assert.throws(() => readTorchFile(path.join(FIX, 'dtypes.json')), /not a zip archive/);
});

test('the unpickler bounds-checks its input', () => {
  assert.throws(() => unpickle(new Uint8Array([0x80, 0x02, 0x58, 0xff, 0xff, 0xff, 0x7f])), PickleError); // huge BINUNICODE
  assert.throws(() => unpickle(new Uint8Array([0x80, 0x02, 0x68, 0x05, 0x2e])), /memo key 5 not defined/);
  assert.throws(() => unpickle(new Uint8Array([0x80, 0x02, 0x4e])), /ended without STOP/);
  assert.throws(() => unpickle(Buffer.from('\x80\x02cbuiltins\neval\n.', 'latin1')), /refusing global 'builtins.eval'/);
  assert.throws(() => unpickle(Buffer.from('\x80\x02\x8c\x08builtins\x8c\x04exec\x93.', 'latin1')), /refusing global 'builtins.exec'/);
  assert.equal(unpickle(Buffer.from('\x80\x02K\x05.', 'latin1')), 5);
});
