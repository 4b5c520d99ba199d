/**
 * The GPU check's JavaScript side, bundled into one file by bench/gpu/prepare.sh (esbuild: tfjs + the torch backend
 * + the trainer's step; no node_modules on the GPU machine) and run by bench/gpu/run.sh under the carried Node.
 *
 *   node bench.mjs check  --device D                       conv + gradients on torch vs the cpu backend (TF32 off)
 *   node bench.mjs losses --device D [--expect f.json] [--out f.json]
 *        a few small SparK steps (resnet_mini, convnext_mini at 64 px, batch 4, LAMB at lr 1e-3 so that the weights
 *        move) on torch, TF32 off: loss and gradient norm of each; with --expect, each must match the recorded CPU
 *        value within relative 1e-4 (exit 1 otherwise)
 *   node bench.mjs cases  --models a,b --batches 32,64 --size 224     the resolved cases for bench/torch_spark.py
 *   node bench.mjs bench  --device D --models a,b --batches 32,64 --size 224 [--warmup 3] [--iters 10] [--tf32 on|off]
 *        [--out f.json]   the SparK training step (sparse mode, trainStep + LAMB) on torch; one line per step on stderr
 *   node bench.mjs table  --spark s.json --torch t.json [--losses l.json] [--out table.md]   the one table
 *
 * Also runs from the sources (`npx tsx bench/gpu/entry.ts …`) in a checkout.
 */
import * as tf from '@tensorflow/tfjs';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { registerTorch } from '../../src/backend/torch-load.js';
import { torchSelfCheck } from '../../src/backend/torch-check.js';
import { describeEncoder } from '../../src/models/registry.js';
import type { ModelConfig } from '../../src/spec/types.js';
import { buildSparK } from '../../src/models/spark.js';
import { trainStep } from '../../src/train/step.js';
import { buildParamGroups, Lamb } from '../../src/train/optimizers.js';
import { resolveCase, stepFlops, syntheticBatch, timeMode, type BenchCase } from '../lib/spark-step.js';
import { compareLosses, formatTable, type LossCheck, type LossRecord, type SparkBench, type SparkBenchRecord, type TorchOut } from './report.js';

function args(argv: string[]): { cmd: string; opt: Record<string, string> } {
  const [cmd = 'help', ...rest] = argv;
  const opt: Record<string, string> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument '${a}'`);
    const v = rest[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${a} needs a value`);
    opt[a.slice(2)] = v;
    i++;
  }
  return { cmd, opt };
}

const list = (s: string | undefined, def: string): string[] => (s ?? def).split(',').map((x) => x.trim()).filter(Boolean);
const log = (s: string): void => void process.stderr.write(s + '\n');

/** A preset at a size and batch with the reference decoder (width 768), mask ratio 0.6 and its default drop path. */
function presetCase(name: string, size: number, batch: number, decoderWidth = 768, dropPath: number | null = null): BenchCase {
  const model: ModelConfig = { encoder: name, decoder: { type: 'light', width: decoderWidth }, mask_ratio: 0.6, drop_path: dropPath, densify_norm: 'auto' };
  return { label: name, model, inputSize: size, batch, beta2: describeEncoder(name).defaultBeta2 };
}

/** The small steps whose losses CPU and GPU must agree on: no drop path (no extra randomness), TF32 off. */
function lossCases(): BenchCase[] {
  return [presetCase('resnet_mini', 64, 4, 128, 0), presetCase('convnext_mini', 64, 4, 128, 0)];
}
const LOSS_STEPS = 4;

/** `steps` SparK steps from seed 0: the loss and the gradient norm (before clipping) of each. */
function smallSteps(c: BenchCase, steps: number): { losses: number[]; gradNorms: number[] } {
  const x = syntheticBatch(c.batch, c.inputSize);
  const model = buildSparK(c.model, c.inputSize, 0);
  const optimizer = new Lamb(buildParamGroups(model.params), { betas: [0.9, c.beta2], eps: 1e-6, maxGradNorm: 5 });
  const losses: number[] = [];
  const gradNorms: number[] = [];
  try {
    for (let it = 0; it < steps; it++) {
      const r = trainStep(model, optimizer, [x], { seed: 0, it, hyper: { lr: 1e-3, wd: 0.04 } });
      losses.push(r.loss);
      gradNorms.push(r.gradNorm);
    }
  } finally {
    optimizer.dispose();
    model.dispose();
    x.dispose();
  }
  return { losses, gradNorms };
}

async function useTorch(device: string, tf32: boolean): Promise<void> {
  await registerTorch(device, tf32);
  if (!(await tf.setBackend('torch'))) throw new Error(`tf.setBackend('torch') failed on ${device}`);
  await tf.ready();
}

async function losses(opt: Record<string, string>): Promise<number> {
  const device = opt['device'] ?? 'cpu';
  await useTorch(device, false);
  const rec: LossRecord = { device, steps: LOSS_STEPS, cases: [] };
  for (const c of lossCases()) {
    const r = smallSteps(c, LOSS_STEPS);
    rec.cases.push({ label: c.label, size: c.inputSize, batch: c.batch, ...r });
    log(`${c.label} on ${device}: losses ${r.losses.map((l) => l.toPrecision(8)).join(', ')}; gradient norms ${r.gradNorms.map((l) => l.toPrecision(6)).join(', ')}`);
  }
  let ok = true;
  let report: string[] = [];
  if (opt['expect']) {
    ({ ok, report } = compareLosses(JSON.parse(readFileSync(opt['expect'], 'utf8')) as LossRecord, rec));
    for (const l of report) log(l);
  }
  const out = { ...rec, ...(opt['expect'] ? { expect: opt['expect'], ok, report } : {}) };
  if (opt['out']) writeFileSync(opt['out'], JSON.stringify(out, null, 2) + '\n');
  else process.stdout.write(JSON.stringify(out) + '\n');
  return ok ? 0 : 1;
}

function benchCases(opt: Record<string, string>): BenchCase[] {
  const size = Number(opt['size'] ?? 224);
  return list(opt['models'], 'resnet50,convnext_small').flatMap((m) => list(opt['batches'], '32,64').map((b) => presetCase(m, size, Number(b))));
}

async function bench(opt: Record<string, string>): Promise<number> {
  const device = opt['device'] ?? 'cuda:0';
  const tf32 = (opt['tf32'] ?? 'on') !== 'off';
  await useTorch(device, tf32);
  const warmup = Number(opt['warmup'] ?? 3);
  const iters = Number(opt['iters'] ?? 10);
  const out: SparkBenchRecord[] = [];
  for (const c of benchCases(opt)) {
    const rec: SparkBenchRecord = { label: c.label, batch: c.batch, size: c.inputSize, device, tf32, gflopPerStep: stepFlops(c) / 1e9 };
    log(`[spark torch ${device}] ${c.label} batch ${c.batch} @ ${c.inputSize}`);
    try {
      rec.result = await timeMode(c, 'sparse', { warmup, iters, seed: 0, log });
      const r = rec.result;
      log(`  median ${r.medianMs.toFixed(1)} ms, ${r.imgPerSec.toFixed(1)} img/s, tensors ${r.numTensors.beforeBuild} → ${r.numTensors.afterDispose}`);
    } catch (e) {
      rec.error = String((e as Error).message ?? e).split('\n')[0]!.slice(0, 300);
      log(`  FAILED: ${rec.error}`);
    }
    out.push(rec);
    if (opt['out']) writeFileSync(opt['out'], JSON.stringify({ device, tf32, host: os.hostname(), results: out }, null, 2) + '\n');
  }
  if (!opt['out']) process.stdout.write(JSON.stringify({ device, tf32, results: out }) + '\n');
  return out.some((r) => r.error) ? 1 : 0;
}

function table(opt: Record<string, string>): number {
  const read = <T>(f: string): T => JSON.parse(readFileSync(f, 'utf8')) as T;
  const r = formatTable(read<SparkBench>(opt['spark']!), read<TorchOut>(opt['torch']!), opt['losses'] ? read<LossCheck>(opt['losses']) : undefined);
  process.stdout.write(r.text);
  if (opt['out']) writeFileSync(opt['out'], r.text);
  return r.ok ? 0 : 1;
}

async function main(argv: string[]): Promise<number> {
  const { cmd, opt } = args(argv);
  switch (cmd) {
    case 'check': {
      const r = await torchSelfCheck({ device: opt['device'] ?? 'cpu' });
      log(`self-check on ${opt['device'] ?? 'cpu'}: ${r.ok ? 'ok' : 'FAILED'}: ${r.message}${r.fix && !r.ok ? ` (fix: ${r.fix})` : ''}`);
      return r.ok ? 0 : 1;
    }
    case 'losses':
      return losses(opt);
    case 'cases':
      process.stdout.write(JSON.stringify(benchCases(opt).map(resolveCase)) + '\n');
      return 0;
    case 'bench':
      return bench(opt);
    case 'table':
      return table(opt);
    default:
      process.stdout.write('usage: node bench.mjs check|losses|cases|bench|table [--options] (see bench/gpu/entry.ts)\n');
      return cmd === 'help' ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench/gpu: ${String((e as Error)?.message ?? e).split('\n')[0]}\n`);
    process.exit(1);
  },
);
