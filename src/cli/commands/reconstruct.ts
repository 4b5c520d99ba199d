/**
 * `spark reconstruct --checkpoint <run-dir|file> --image <file…> [--mask-ratio r | --mask "0101…"] [--seed N]
 * --out grid.png`: the README-style reconstruction figure (spec §8.5) from a pre-training checkpoint, and the
 * SparK loss on those images.
 */
import { parseCommandArgs } from '../args.js';
import { existsSync, statSync } from 'node:fs';
import { UsageError } from '../../util/errors.js';

export const summary = 'draw input | masked | reconstruction for images from a pre-training checkpoint (and print the loss)';

const USAGE = `usage: spark reconstruct --checkpoint <run-dir | model.safetensors> --image <file…> --out <grid.png> [options]

options:
  -c, --checkpoint <path>  run folder, its checkpoint folder, or a full SparK model.safetensors
  -i, --image <file…>      images to reconstruct (repeatable; extra positional arguments are images too)
  -o, --out <file.png>     the grid to write: one row per image, input | masked | reconstruction
      --mask-ratio <r>     random masks with this ratio, in (0, 1) (default: the checkpoint's model.mask_ratio)
      --mask <bits>        one fixed mask for every image: f×f characters 0/1 (1 = visible), row-major,
                           f = input_size / 32; spaces, '/', ',' may separate rows, e.g. --mask 100/010/001
      --seed <N>           seed of the random masks (default 0)
      --config <spec.yaml> experiment spec, when the checkpoint file has no run folder (config.yaml) around it
      --backend <name>     auto | tensorflow | torch | wasm | cpu (default: the checkpoint config's runtime.backend)
  -h, --help               show this help`;

const HELP = ' (see `spark reconstruct --help`)';

function num(name: string, v: string): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x)) throw new UsageError(`--${name} must be a number, got '${v}'`);
  return x;
}

export default async function reconstruct(argv: string[]): Promise<number> {
  const parsed = parseCommandArgs('reconstruct', {
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      checkpoint: { type: 'string', short: 'c' },
      image: { type: 'string', short: 'i', multiple: true },
      out: { type: 'string', short: 'o' },
      'mask-ratio': { type: 'string' },
      mask: { type: 'string' },
      seed: { type: 'string' },
      config: { type: 'string' },
      backend: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!v.checkpoint) throw new UsageError(`--checkpoint is required${HELP}`);
  const images = [...(v.image ?? []), ...parsed.positionals];
  if (!images.length) throw new UsageError(`at least one --image is required${HELP}`);
  if (!v.out) throw new UsageError(`--out <grid.png> is required${HELP}`);
  if (!/\.png$/i.test(v.out)) throw new UsageError(`--out must name a .png file, got '${v.out}'`);
  if (v.mask !== undefined && v['mask-ratio'] !== undefined) throw new UsageError('give either --mask or --mask-ratio, not both');
  let maskRatio: number | null = null;
  if (v['mask-ratio'] !== undefined) {
    maskRatio = num('mask-ratio', v['mask-ratio']);
    if (!(maskRatio > 0 && maskRatio < 1)) throw new UsageError(`--mask-ratio must be in (0, 1), got ${v['mask-ratio']}`);
  }
  let seed = 0;
  if (v.seed !== undefined) {
    seed = num('seed', v.seed);
    if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed must be a non-negative integer, got '${v.seed}'`);
  }
  const backends = ['auto', 'tensorflow', 'torch', 'wasm', 'cpu'] as const;
  if (v.backend !== undefined && !(backends as readonly string[]).includes(v.backend)) {
    throw new UsageError(`--backend must be one of ${backends.join(', ')}, got '${v.backend}'`);
  }
  for (const f of images) {
    if (!existsSync(f) || !statSync(f).isFile()) throw new UsageError(`${f}: no such image file`);
  }

  // ---- checkpoint and config
  const { loadCheckpoint, assignVariables } = await import('../../train/checkpoint.js');
  const ck = await loadCheckpoint(v.checkpoint);
  let config = ck.config;
  if (v.config) {
    const { loadExperiment } = await import('../../spec/index.js');
    config = (await loadExperiment(v.config)).config;
  }
  if (!config) {
    throw new UsageError(`${v.checkpoint}: no config.yaml found next to the checkpoint; pass the run folder or --config <spec.yaml>`);
  }
  const decoderKeys = [...ck.params.keys()].filter((k) => k.startsWith('dense_decoder.'));
  if (!decoderKeys.length) {
    throw new UsageError(`${ck.file}: has no decoder weights (an encoder-only export?); reconstruction needs the full SparK checkpoint (checkpoint/model.safetensors)`);
  }

  const { initBackend, runtimeBackendOptions } = await import('../../backend/init.js');
  await initBackend((v.backend as (typeof backends)[number] | undefined) ?? config.runtime.backend, runtimeBackendOptions(config.runtime));
  const { buildSparK } = await import('../../models/spark.js');
  const { renderReconstructionGrid, parseMaskString, tileMask } = await import('../../ui/reconstruction.js');
  const { loadEvalImage } = await import('../../data/transforms.js');

  const size = config.data.input_size;
  const modelCfg = { ...config.model, ...(maskRatio != null ? { mask_ratio: maskRatio } : {}) };
  const model = buildSparK(modelCfg, size, config.runtime.seed);
  try {
    assignVariables(model.params, ck.params, ck.file);
    assignVariables(model.buffers, ck.buffers, ck.file);
    const bits = v.mask !== undefined ? parseMaskString(v.mask, model.fmap) : null;
    const data: Float32Array[] = [];
    for (const f of images) {
      try {
        data.push(await loadEvalImage(f, size));
      } catch (e) {
        throw new UsageError(`${f}: cannot read the image (${(e as Error).message.split('\n')[0]})`);
      }
    }
    const mask = bits ? tileMask(bits, model.fmap, data.length) : null;
    let res;
    try {
      res = await renderReconstructionGrid(model, data, mask, size, v.out, { seed });
    } finally {
      mask?.dispose();
    }
    const L = model.fmap * model.fmap;
    const visible = bits ? bits.reduce((a, b) => a + b, 0) : model.lenKeep;
    const how = bits ? 'given mask' : `random masks, ratio ${modelCfg.mask_ratio}, seed ${seed}`;
    process.stdout.write(
      `wrote ${v.out} (${data.length} image${data.length === 1 ? '' : 's'} at ${size} px, ${visible}/${L} cells visible, ${how}; ` +
        `checkpoint step ${ck.step})\n` +
        `loss ${res.loss.toFixed(4)}\n`,
    );
    return 0;
  } finally {
    model.dispose();
  }
}
