/**
 * Data pipeline throughput: decodes a folder of JPEGs (generated once in the temp folder) through the pre-training
 * transform (RandomResizedCrop bicubic + flip + normalise) with data.workers = 0, 1, 2 and prints images/second.
 *
 *   npx tsx bench/data-pipeline.ts [--images 200] [--width 500] [--height 375] [--size 224] [--batch 32]
 *                                  [--batches 12] [--workers 0,1,2]
 *   node dist/bench/data-pipeline.js ...   (after `npm run build`)
 */
import sharp from 'sharp';
import os from 'node:os';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { mkdir, writeFile, readdir } from 'node:fs/promises';
import { createLoader, syntheticImage } from '../src/data/index.js';
import type { DataConfig } from '../src/spec/types.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

const images = Number(arg('images', '200'));
const width = Number(arg('width', '500'));
const height = Number(arg('height', '375'));
const size = Number(arg('size', '224'));
const batch = Number(arg('batch', '32'));
const nBatches = Number(arg('batches', '12'));
const workerCounts = arg('workers', '0,1,2').split(',').map(Number);

async function makeFolder(): Promise<string> {
  const dir = path.join(os.tmpdir(), `spark-bench-jpegs-${images}-${width}x${height}`);
  if (existsSync(dir) && (await readdir(dir)).filter((f) => f.endsWith('.jpg')).length === images) return dir;
  await mkdir(dir, { recursive: true });
  const S = Math.max(width, height);
  for (let i = 0; i < images; i++) {
    // a 96 px synthetic image scaled up, so the JPEG has realistic smooth content and edges
    const px = Buffer.from(syntheticImage(1, i, 96));
    const jpg = await sharp(px, { raw: { width: 96, height: 96, channels: 3 } })
      .resize(S, S, { kernel: 'cubic' })
      .extract({ left: 0, top: 0, width, height })
      .jpeg({ quality: 90 })
      .toBuffer();
    await writeFile(path.join(dir, `img_${String(i).padStart(5, '0')}.jpg`), jpg);
  }
  return dir;
}

async function main(): Promise<void> {
  const root = await makeFolder();
  process.stdout.write(
    `data pipeline: ${images} JPEGs ${width}×${height} in ${root}; input ${size}, batch ${batch}, ${nBatches} timed batches, ` +
      `${os.availableParallelism()} cores, UV_THREADPOOL_SIZE=${process.env['UV_THREADPOOL_SIZE'] ?? 4}\n\n`,
  );
  const rows: string[][] = [['workers', 'img/s', 'img/s per worker', 'ms/batch']];
  for (const workers of workerCounts) {
    const cfg: DataConfig = {
      source: 'imagefolder',
      root,
      val_root: null,
      input_size: size,
      crop_scale: [0.67, 1],
      crop_ratio: [3 / 4, 4 / 3],
      hflip: 0.5,
      workers,
      prefetch: 4,
      synthetic_size: 0,
    };
    const loader = await createLoader(cfg, { batchSize: batch, seed: 0, augment: 'pretrain' });
    await loader.next(); // warm-up: worker start, JIT
    const t0 = performance.now();
    for (let i = 0; i < nBatches; i++) await loader.next();
    const sec = (performance.now() - t0) / 1000;
    await loader.close();
    const rate = (nBatches * batch) / sec;
    rows.push([String(workers), rate.toFixed(1), workers > 0 ? (rate / workers).toFixed(1) : '(main thread)', ((sec * 1000) / nBatches).toFixed(1)]);
  }
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) process.stdout.write(r.map((v, c) => v.padStart(w[c]!)).join('  ') + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
