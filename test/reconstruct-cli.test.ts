import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { testBackend } from './helpers/backend.js';
import reconstruct from '../src/cli/commands/reconstruct.js';
import { buildSparK } from '../src/models/spark.js';
import { tensorToSafe } from '../src/train/checkpoint.js';
import { writeSafetensors, type SafeTensor } from '../src/util/safetensors.js';
import { configToYaml } from '../src/spec/load.js';
import { syntheticImage } from '../src/data/synthetic.js';
import { UsageError } from '../src/util/errors.js';
import { demoConfig } from '../src/ui/demo.js';
import { gridLayout } from '../src/ui/reconstruction.js';

/** A run folder with config.yaml and checkpoint/model.safetensors of a tiny model at 64 px (2×2 mask grid). */
async function tinyRun(): Promise<{ dir: string; imgs: string[] }> {
  await testBackend();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-recon-cli-'));
  const cfg = demoConfig('tiny', 1);
  cfg.model = { encoder: { family: 'resnet', layers: [1, 1, 1, 1], width: 2 }, decoder: { type: 'light', width: 32 }, mask_ratio: 0.5, drop_path: null, densify_norm: 'auto' };
  cfg.data.input_size = 64;
  cfg.runtime.backend = 'cpu';
  const model = buildSparK(cfg.model, 64, 5);
  const tensors = new Map<string, SafeTensor>();
  for (const [k, v] of [...model.params, ...model.buffers]) tensors.set(k, await tensorToSafe(v));
  model.dispose();
  mkdirSync(path.join(dir, 'checkpoint'));
  await writeSafetensors(path.join(dir, 'checkpoint', 'model.safetensors'), tensors, { step: '7' });
  writeFileSync(path.join(dir, 'config.yaml'), configToYaml(cfg));
  const imgs: string[] = [];
  for (let i = 0; i < 2; i++) {
    const f = path.join(dir, `img${i}.png`);
    // 80×100 source: the eval transform resizes the shorter side to 64 and center-crops
    await sharp(Buffer.from(syntheticImage(9, i, 100).subarray(0, 100 * 80 * 3)), { raw: { width: 100, height: 80, channels: 3 } }).png().toFile(f);
    imgs.push(f);
  }
  return { dir, imgs };
}

async function capture(fn: () => Promise<number>): Promise<{ code: number; out: string }> {
  const orig = process.stdout.write.bind(process.stdout);
  let out = '';
  process.stdout.write = ((s: string | Uint8Array) => {
    out += String(s);
    return true;
  }) as typeof process.stdout.write;
  try {
    return { code: await fn(), out };
  } finally {
    process.stdout.write = orig;
  }
}

test('spark reconstruct: writes the grid for a run folder and prints the loss; --mask and --mask-ratio', async () => {
  const { dir, imgs } = await tinyRun();
  const out = path.join(dir, 'grid.png');
  const r1 = await capture(() => reconstruct(['--checkpoint', dir, '--image', ...imgs, '--mask', '10/01', '--out', out]));
  assert.equal(r1.code, 0);
  assert.match(r1.out, /2 images at 64 px, 2\/4 cells visible, given mask; checkpoint step 7/);
  const loss1 = Number(/loss (\d+\.\d+)/.exec(r1.out)?.[1]);
  assert.ok(Number.isFinite(loss1) && loss1 > 0, r1.out);
  const meta = await sharp(out).metadata();
  assert.equal(meta.width, 192);
  assert.equal(meta.height, gridLayout(64, 2).labelHeight + 128);

  // a random mask, from the weights file directly (config found in the run folder above it); same seed → same loss
  const out2 = path.join(dir, 'g2.png');
  const file = path.join(dir, 'checkpoint', 'model.safetensors');
  const a = await capture(() => reconstruct(['-c', file, '-i', imgs[0]!, '--mask-ratio', '0.75', '--seed', '3', '-o', out2]));
  const b = await capture(() => reconstruct(['-c', file, imgs[0]!, '--mask-ratio', '0.75', '--seed', '3', '-o', out2]));
  assert.equal(a.code, 0);
  assert.match(a.out, /1 image at 64 px, 1\/4 cells visible, random masks, ratio 0\.75, seed 3/);
  assert.equal(/loss \S+/.exec(a.out)?.[0], /loss \S+/.exec(b.out)?.[0]);
  assert.ok(existsSync(out2));
});

test('spark reconstruct: bad arguments are UsageErrors (exit 2) with one clear line', async () => {
  const { dir, imgs } = await tinyRun();
  const out = path.join(dir, 'grid.png');
  const cases: Array<[string[], RegExp]> = [
    [['--image', imgs[0]!, '--out', out], /--checkpoint is required/],
    [['--checkpoint', dir, '--out', out], /at least one --image/],
    [['--checkpoint', dir, '--image', imgs[0]!], /--out <grid.png> is required/],
    [['--checkpoint', dir, '--image', imgs[0]!, '--out', path.join(dir, 'g.jpg')], /must name a \.png/],
    [['--checkpoint', dir, '--image', imgs[0]!, '--out', out, '--mask', '1010', '--mask-ratio', '0.5'], /either --mask or --mask-ratio/],
    [['--checkpoint', dir, '--image', imgs[0]!, '--out', out, '--mask-ratio', '1.5'], /--mask-ratio must be in \(0, 1\)/],
    [['--checkpoint', dir, '--image', imgs[0]!, '--out', out, '--mask', '101'], /--mask: expected 4 cells \(2×2 grid/],
    [['--checkpoint', dir, '--image', imgs[0]!, '--out', out, '--seed=-1'], /--seed must be a non-negative integer/],
    [['--checkpoint', dir, '--image', path.join(dir, 'nope.png'), '--out', out], /nope\.png: no such image file/],
    [['--checkpoint', path.join(dir, 'missing'), '--image', imgs[0]!, '--out', out], /no such run folder or checkpoint/],
    [['--checkpoint', dir, '--image', imgs[0]!, '--out', out, '--bogus'], /Unknown option '--bogus'/],
  ];
  for (const [argv, re] of cases) {
    await assert.rejects(
      () => reconstruct(argv),
      (e: unknown) => e instanceof UsageError && e.exitCode === 2 && re.test(e.message) && !e.message.includes('\n'),
      `argv ${argv.join(' ')} → ${re}`,
    );
  }
});
