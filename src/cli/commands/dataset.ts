import { parseCommandArgs } from '../args.js';
import { writeLabelledDataset, TEXTURE_MAX_CLASSES, type TexturePalette } from '../../downstream/probe-dataset.js';
import { SYNTHETIC_MAX_CLASSES } from '../../data/index.js';
import { UsageError } from '../../util/errors.js';

export const summary = 'write a small generated labelled dataset (train/ and val/ class folders) for probes and fine-tuning';

const HELP = `usage: spark dataset <textures|shapes> --out <dir> [--classes N] [--train N] [--val N] [--size PX] [--seed S]
                     [--palette grey|colour] [--force]

Writes <dir>/train and <dir>/val, one folder per class (ImageNet layout), PNG images generated deterministically
from the seed (val uses seed + 1000, so no validation image repeats a training one). The folder is written
under a temporary name and renamed at the end: it is complete or absent.

  textures  full-frame texture families (stripes, checker, dots, rings, noise, zigzag, grid, gradient) with random
            orientation, scale, phase, tones, an occluder and pixel noise; the class is the family. --palette grey
            (default) draws grey tones, colour random RGB ones (a short SparK pre-training learns colour first
            there, see src/downstream/probe-dataset.ts).
  shapes    one shape × fill object per image on a random background.

  --classes  number of classes (default 8)          --train / --val  images per class (default 40 / 30)
  --size     image side in pixels (default 64)      --seed           default 0
  --force    replace an existing <dir>

The linear-probe benchmark of the README uses: spark dataset textures --out data/textures
`;

function intOpt(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got '${v}'`);
  return n;
}

export default async function dataset(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs('dataset', {
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string', short: 'o' },
      classes: { type: 'string', default: '8' },
      train: { type: 'string', default: '40' },
      val: { type: 'string', default: '30' },
      size: { type: 'string', default: '64' },
      seed: { type: 'string', default: '0' },
      palette: { type: 'string', default: 'grey' },
      force: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('spark dataset: expected one kind, textures or shapes (see --help)');
  const kindArg = positionals[0]!;
  if (kindArg !== 'textures' && kindArg !== 'shapes') throw new UsageError(`spark dataset: unknown kind '${kindArg}' (expected textures or shapes)`);
  if (!values.out) throw new UsageError('spark dataset: --out <dir> is required');
  const kind = kindArg === 'textures' ? 'texture' : 'shapes';
  if (values.palette !== 'grey' && values.palette !== 'colour') throw new UsageError(`--palette must be grey or colour, got '${values.palette}'`);
  const maxClasses = kind === 'texture' ? TEXTURE_MAX_CLASSES : SYNTHETIC_MAX_CLASSES;
  const o = {
    kind,
    classes: intOpt('classes', values.classes!, 2, maxClasses),
    trainPerClass: intOpt('train', values.train!, 1, 100000),
    valPerClass: intOpt('val', values.val!, 1, 100000),
    size: intOpt('size', values.size!, 8, 4096),
    seed: intOpt('seed', values.seed!, 0, 2 ** 31 - 1),
    palette: values.palette as TexturePalette,
  } as const;
  const r = await writeLabelledDataset(values.out, o, values.force);
  process.stdout.write(
    `wrote ${r.images} images of ${o.size} px, ${r.classes.length} classes (${kindArg}${kind === 'texture' ? `, ${o.palette}` : ''}):\n  ${r.train}  (${o.trainPerClass} per class)\n  ${r.val}  (${o.valPerClass} per class)\n`,
  );
  return 0;
}
