/**
 * Corrupt files among the images (issue 13 item 4): training skips them and the reconstruction grid uses readable
 * images only; when every image is unreadable, `spark run` exits 2 with one line and leaves no run folder and no
 * MLflow run behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { testBackend } from './helpers/backend.js';
import { spawnSpark, tinySpecYaml, tmpDir } from './helpers/train.js';
import { loadExperiment } from '../src/spec/index.js';
import { runExperiment } from '../src/train/run.js';
import { gridLayout } from '../src/ui/reconstruction.js';
import type { RunEvent } from '../src/train/events.js';

async function writePng(file: string, seed: number): Promise<void> {
  const w = 80;
  const h = 72;
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * 7 + seed * 53) % 251;
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
}

function garbage(file: string, seed: number): void {
  writeFileSync(file, Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 31 + seed) % 256)));
}

function imageFolderSpec(out: string, root: string, extra: { steps: number; reconstruct: number; tracking?: string }): string {
  return tinySpecYaml({ outDir: out, steps: extra.steps, checkpointEvery: 0 })
    .replace('  source: synthetic\n', `  source: imagefolder\n  root: ${JSON.stringify(root)}\n`)
    .replace('reconstruct_every: 0}', `reconstruct_every: ${extra.reconstruct}, reconstruct_images: 4}`)
    .replace('tracking: {enabled: false}', extra.tracking ?? 'tracking: {enabled: false}');
}

test('2 corrupt files of 5: training skips them, the reconstruction grid shows the 3 readable images', async () => {
  await testBackend();
  const out = tmpDir();
  const root = path.join(out, 'images');
  mkdirSync(root);
  // sorted order a.png b.png (bad) c.png d.png (bad) e.png: the grid's evenly spaced picks hit both bad files
  await writePng(path.join(root, 'a.png'), 1);
  garbage(path.join(root, 'b.png'), 2);
  await writePng(path.join(root, 'c.png'), 3);
  garbage(path.join(root, 'd.png'), 4);
  await writePng(path.join(root, 'e.png'), 5);
  const file = path.join(out, 'spec.yaml');
  // batch 2 over 5 files: 3 steps = 1 epoch, a grid at its end
  writeFileSync(file, imageFolderSpec(out, root, { steps: 3, reconstruct: 1 }));
  const { config, specPath, resolvedYaml } = await loadExperiment(file);
  const events: RunEvent[] = [];
  const res = await runExperiment({ config, specPath, resolvedYaml, subscribers: [{ onEvent: (e) => events.push(e) }] });
  assert.equal(res.status, 'FINISHED', res.error);
  const warnings = events.filter((e): e is Extract<RunEvent, { type: 'warning' }> => e.type === 'warning');
  assert.ok(warnings.some((w) => w.code === 'skipped-files'), 'the corrupt files are reported');
  assert.deepEqual(warnings.filter((w) => w.code === 'reconstruction-failed').map((w) => w.message), []);
  const skipped = readFileSync(path.join(res.runDir, 'skipped-files.txt'), 'utf8');
  assert.match(skipped, /b\.png/);
  assert.match(skipped, /d\.png/);
  const recon = events.filter((e): e is Extract<RunEvent, { type: 'reconstruction' }> => e.type === 'reconstruction');
  assert.equal(recon.length, 1, 'one grid, at the end of epoch 1 (the final grid is the same step)');
  const meta = await sharp(recon[0]!.path).metadata();
  const want = gridLayout(64, 3);
  assert.equal(meta.width, want.width);
  assert.equal(meta.height, want.height, 'three rows: the three readable images');
});

test('every image unreadable: exit 2, one line naming the folder, no run folder, no MLflow run', async () => {
  const out = tmpDir();
  const root = path.join(out, 'images');
  mkdirSync(root);
  for (let i = 0; i < 3; i++) garbage(path.join(root, `img${i}.png`), i);
  const mlruns = path.join(out, 'mlruns');
  const file = path.join(out, 'spec.yaml');
  writeFileSync(file, imageFolderSpec(out, root, { steps: 3, reconstruct: 1, tracking: `tracking: {enabled: true, uri: ${JSON.stringify(mlruns)}}` }));
  const { done } = spawnSpark('run', [file]);
  const r = await done;
  assert.equal(r.code, 2, r.stdout + r.stderr);
  const all = (r.stdout + r.stderr).split('\n').filter((l) => l.includes('unreadable'));
  assert.equal(all.length, 1, `printed once:\n${r.stdout}${r.stderr}`);
  assert.match(all[0]!, /all 3 images under data\.root '.*images' are unreadable/);
  assert.equal(r.stdout.trim(), '', 'nothing else printed');
  assert.ok(!existsSync(path.join(out, 'tiny')) || readdirSync(path.join(out, 'tiny')).length === 0, 'no run folder');
  const runs = existsSync(mlruns) ? readdirSync(mlruns, { recursive: true }).map(String).filter((p) => p.endsWith('meta.yaml') && p.split(path.sep).length > 2) : [];
  assert.deepEqual(runs, [], 'no MLflow run');
});
