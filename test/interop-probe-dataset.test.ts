import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import sharp from 'sharp';
import { textureLabelled, writeTextureFolder, TEXTURE_MAX_CLASSES } from '../src/downstream/probe-dataset.js';

test('texture dataset: a pure function of (seed, index, size, classes, palette); label = index mod classes', () => {
  const a = textureLabelled(3, 17, 32, 8);
  const b = textureLabelled(3, 17, 32, 8);
  assert.deepEqual(a.pixels, b.pixels);
  assert.equal(a.label, 17 % 8);
  assert.equal(a.pixels.length, 32 * 32 * 3);
  assert.notDeepEqual(textureLabelled(4, 17, 32, 8).pixels, a.pixels, 'another seed draws another image');
  assert.notDeepEqual(textureLabelled(3, 18, 32, 8).pixels, a.pixels, 'another index draws another image');
  assert.throws(() => textureLabelled(0, 0, 32, TEXTURE_MAX_CLASSES + 1), /classes must be an integer/);
});

test("texture dataset: 'grey' (default) images have equal channel means (only the pixel noise differs per channel), 'colour' ones do not", () => {
  // per image: the largest difference between the means of two channels, in grey levels
  const spread = (px: Uint8Array) => {
    const m = [0, 1, 2].map((ch) => {
      let s = 0;
      for (let p = ch; p < px.length; p += 3) s += px[p]!;
      return s / (px.length / 3);
    });
    return Math.max(...m) - Math.min(...m);
  };
  let grey = 0;
  let colour = 0;
  for (let i = 0; i < 16; i++) {
    grey = Math.max(grey, spread(textureLabelled(0, i, 32, 8).pixels));
    colour += spread(textureLabelled(0, i, 32, 8, 'colour').pixels) / 16;
  }
  // zero-mean noise of σ ≤ 13 levels averaged over 1024 pixels: channel means agree to well under 2 levels
  assert.ok(grey < 2, `grey images: largest channel-mean difference ${grey}`);
  assert.ok(colour > 20, `colour images: mean channel-mean difference ${colour}`);
});

test('texture dataset: writeTextureFolder writes class folders of PNGs with the generated pixels', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-textures-'));
  try {
    const r = await writeTextureFolder(dir, { classes: 3, perClass: 2, size: 32, seed: 5 });
    assert.deepEqual(r.classes, ['class_00', 'class_01', 'class_02']);
    assert.deepEqual(readdirSync(dir).sort(), r.classes);
    assert.equal(r.files.length, 6);
    // image k of class c is textureLabelled(seed, k·classes + c)
    const { data } = await sharp(path.join(dir, 'class_02', 'img_00001.png')).raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual(new Uint8Array(data), textureLabelled(5, 1 * 3 + 2, 32, 3).pixels);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
