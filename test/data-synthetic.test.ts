import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtemp, rm } from 'node:fs/promises';
import {
  syntheticImage,
  syntheticLabelled,
  writeSyntheticFolder,
  scanImageFolder,
  createLoader,
  SYNTHETIC_MAX_CLASSES,
} from '../src/data/index.js';

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

test('synthetic images are a pure function of (seed, index, size) and differ between indices and seeds', () => {
  const a = syntheticImage(1, 5, 64);
  assert.equal(a.length, 64 * 64 * 3);
  assert.ok(equalBytes(a, syntheticImage(1, 5, 64)));
  assert.ok(!equalBytes(a, syntheticImage(1, 6, 64)));
  assert.ok(!equalBytes(a, syntheticImage(2, 5, 64)));
  const distinct = new Set<string>();
  for (let i = 0; i < 50; i++) distinct.add(Buffer.from(syntheticImage(3, i, 16)).toString('base64'));
  assert.equal(distinct.size, 50);
  assert.equal(syntheticImage(1, 0, 7).length, 7 * 7 * 3, 'any size');
  assert.throws(() => syntheticImage(1, 0, 0), RangeError);
});

test('synthetic images have structure: neighbouring pixels are far more alike than random pixels', () => {
  let near = 0;
  let far = 0;
  let std = 0;
  const S = 64;
  for (let i = 0; i < 20; i++) {
    const px = syntheticImage(4, i, S);
    let m = 0;
    for (let k = 0; k < px.length; k++) m += px[k]!;
    m /= px.length;
    for (let k = 0; k < px.length; k++) std += (px[k]! - m) ** 2 / px.length / 20;
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S - 1; x++) {
        const o = (y * S + x) * 3;
        near += Math.abs(px[o]! - px[o + 3]!);
        const r = (((y * 31 + x * 17) % S) * S + ((x * 13 + 7) % S)) * 3;
        far += Math.abs(px[o]! - px[r]!);
      }
    }
  }
  assert.ok(Math.sqrt(std) > 20, `images are not flat (std ${Math.sqrt(std)})`);
  assert.ok(near * 3 < far, `neighbour difference ${near} vs distant ${far}`);
});

test('synthetic generation is fast (pure JS)', () => {
  const t0 = performance.now();
  for (let i = 0; i < 300; i++) syntheticImage(9, i, 64);
  const perSec = 300 / ((performance.now() - t0) / 1000);
  // thousands per second on an idle core; a loose bound so a loaded CI machine passes
  assert.ok(perSec > 200, `${perSec.toFixed(0)} img/s`);
});

test('labelled variant: label = index mod classes, class fixes the object kind, background is random', () => {
  const a = syntheticLabelled(1, 7, 32, 5);
  assert.equal(a.label, 2);
  assert.ok(equalBytes(a.pixels, syntheticLabelled(1, 7, 32, 5).pixels));
  assert.ok(!equalBytes(a.pixels, syntheticLabelled(1, 12, 32, 5).pixels), 'same class, different image');
  assert.throws(() => syntheticLabelled(1, 0, 32, SYNTHETIC_MAX_CLASSES + 1), RangeError);
  assert.throws(() => syntheticLabelled(1, 0, 32, 0), RangeError);
});

test('writeSyntheticFolder writes an ImageNet-layout folder whose pixels and labels round-trip', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'spark-synth-'));
  try {
    const out = await writeSyntheticFolder(path.join(dir, 'ds'), { classes: 3, perClass: 4, size: 24, seed: 5, format: 'png' });
    assert.deepEqual(out.classes, ['class_00', 'class_01', 'class_02']);
    assert.equal(out.files.length, 12);
    const scan = scanImageFolder(out.root);
    assert.deepEqual(scan.classes, out.classes);
    assert.deepEqual(scan.files, out.files);
    assert.deepEqual([...scan.labels!], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    // PNG is lossless: the file holds exactly syntheticLabelled(seed, k·classes + c)
    const { data, info } = await sharp(path.join(out.root, 'class_01', 'img_00002.png')).raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual([info.width, info.height, info.channels], [24, 24, 3]);
    assert.ok(equalBytes(data, syntheticLabelled(5, 2 * 3 + 1, 24, 3).pixels));
    const jpg = await writeSyntheticFolder(path.join(dir, 'jpg'), { classes: 2, perClass: 2, size: 32, seed: 5, format: 'jpg' });
    assert.deepEqual(jpg.files, ['class_00/img_00000.jpg', 'class_00/img_00001.jpg', 'class_01/img_00000.jpg', 'class_01/img_00001.jpg'].map((f) => path.join(...f.split('/'))));
    assert.equal((await sharp(path.join(jpg.root, jpg.files[0]!)).metadata()).format, 'jpeg');
    // the loader reads it with labels
    const l = await createLoader(
      { source: 'imagefolder', root: out.root, val_root: null, input_size: 32, crop_scale: [0.67, 1], crop_ratio: [0.75, 4 / 3], hflip: 0.5, workers: 0, prefetch: 1, synthetic_size: 0 },
      { batchSize: 12, seed: 0, augment: 'eval', withLabels: true },
    );
    const b = await l.next();
    assert.deepEqual([...b.labels!], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    await l.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
