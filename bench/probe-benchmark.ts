/**
 * Linear-probe benchmark (issue 7.5): SparK pre-training on a generated labelled dataset, then a linear probe of
 * the pre-trained and of a random-init encoder. Prints a markdown table.
 *
 *   npm run build && node dist/bench/probe-benchmark.js [--steps 600] [--classes 12] [--train 40] [--val 15]
 *       [--size 96] [--batch 32] [--encoder resnet_mini] [--seed 0] [--backend auto] [--workdir /tmp/spark-probe-bench]
 */
import { parseArgs } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { rmSync } from 'node:fs';
import { probeBenchmark, formatProbeBenchmark } from '../src/interop/probe-benchmark.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '600' },
    classes: { type: 'string', default: '12' },
    train: { type: 'string', default: '40' },
    val: { type: 'string', default: '15' },
    size: { type: 'string', default: '96' },
    batch: { type: 'string', default: '32' },
    encoder: { type: 'string', default: 'resnet_mini' },
    seed: { type: 'string', default: '0' },
    backend: { type: 'string', default: 'auto' },
    'probe-epochs': { type: 'string', default: '200' },
    workdir: { type: 'string', default: path.join(os.tmpdir(), 'spark-probe-bench') },
    json: { type: 'boolean', default: false },
  },
});
rmSync(values.workdir!, { recursive: true, force: true });
const r = await probeBenchmark({
  dir: values.workdir!,
  classes: Number(values.classes),
  trainPerClass: Number(values.train),
  valPerClass: Number(values.val),
  size: Number(values.size),
  pretrainSteps: Number(values.steps),
  batchSize: Number(values.batch),
  encoder: values.encoder!,
  seed: Number(values.seed),
  backend: values.backend as 'auto',
  probeEpochs: Number(values['probe-epochs']),
  console: true,
});
process.stdout.write((values.json ? JSON.stringify(r, null, 2) : formatProbeBenchmark(r)) + '\n');
