/**
 * Linear-probe benchmark (issue 7.5): SparK pre-training on a generated labelled dataset, then a linear probe of
 * the pre-trained and of a random-init encoder. Prints a markdown table.
 *
 *   npx tsx bench/probe-benchmark.ts [--dataset texture|shapes] [--palette grey|colour] [--steps 400] [--classes 8] [--train 40] [--val 30]
 *       [--size 64] [--batch 16] [--lr 1e-2] [--mask 0.6] [--encoder resnet_mini] [--seed 0] [--backend auto]
 *       [--probe-epochs 100] [--probe-lr 0.01] [--probe-wd 1e-4] [--probe-batch 64] [--workdir /tmp/spark-probe-bench]
 *
 * Run it for two or more seeds before reading anything into one difference: with a few hundred validation images one
 * image is worth 0.3–1 point of top-1.
 */
import { parseArgs } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { rmSync } from 'node:fs';
import { probeBenchmark, formatProbeBenchmark } from '../src/downstream/probe-benchmark.js';

const { values } = parseArgs({
  options: {
    dataset: { type: 'string', default: 'texture' },
    palette: { type: 'string', default: 'grey' },
    steps: { type: 'string', default: '400' },
    classes: { type: 'string', default: '8' },
    train: { type: 'string', default: '40' },
    val: { type: 'string', default: '30' },
    size: { type: 'string', default: '64' },
    batch: { type: 'string', default: '16' },
    lr: { type: 'string', default: '1e-2' },
    mask: { type: 'string', default: '0.6' },
    encoder: { type: 'string', default: 'resnet_mini' },
    seed: { type: 'string', default: '0' },
    backend: { type: 'string', default: 'auto' },
    'probe-epochs': { type: 'string', default: '100' },
    'probe-lr': { type: 'string', default: '0.01' },
    'probe-wd': { type: 'string', default: '1e-4' },
    'probe-batch': { type: 'string', default: '64' },
    workdir: { type: 'string', default: path.join(os.tmpdir(), 'spark-probe-bench') },
    json: { type: 'boolean', default: false },
  },
});
rmSync(values.workdir!, { recursive: true, force: true });
const r = await probeBenchmark({
  dir: values.workdir!,
  dataset: values.dataset as 'texture' | 'shapes',
  palette: values.palette as 'grey' | 'colour',
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
  pretrainLr: Number(values.lr),
  maskRatio: Number(values.mask),
  probeLr: Number(values['probe-lr']),
  probeWeightDecay: Number(values['probe-wd']),
  probeBatch: Number(values['probe-batch']),
  console: true,
});
process.stdout.write((values.json ? JSON.stringify(r, null, 2) : formatProbeBenchmark(r)) + '\n');
