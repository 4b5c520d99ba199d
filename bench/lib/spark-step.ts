/**
 * Shared pieces of the step-throughput benchmark (bench/step-throughput.ts): the benchmark cases (encoder, input
 * size, batch), a FLOP count of the whole SparK network, the "dense twin" of a SparK model, and the timing of one
 * case on the current backend through the trainer's own `trainStepAsync` and `Lamb`, with its kernel count.
 *
 * Modes of one case (all run through src/train/step.ts `trainStepAsync` + src/train/optimizers.ts `Lamb`, exactly as
 * `spark run` does: variableGrads → gradient map → LAMB with clip 5, wd 0.04, lr 1e-4 → one read of loss and norm):
 *  - `sparse`:  the SparK step: a fresh random mask per image and step (ratio from the config, e.g. 0.6).
 *  - `visible`: the same SparK model and graph with an all-ones mask passed in (`trainStepAsync(..., { masks })`). Every
 *               masking op still runs (× ones, BN statistics over all positions through the masked formula), so
 *               this differs from `sparse` only through data-dependent kernel speed. The loss averages over masked
 *               patches only, so it is exactly 0 and so are the gradients (the backward pass still runs in full).
 *  - `dense`:   the dense twin: the same encoder, densify and decoder parameters, but the encoder runs without a
 *               mask (no × mask, ordinary BN / LN statistics), densify is norm → projection without the mask-token
 *               fill, and the loss is the SparK loss of the same random mask. This is what the network would cost
 *               without the sparse emulation; `sparse / dense` is the sparse overhead.
 */
import * as tf from '@tensorflow/tfjs';
import os from 'node:os';
import type { ModelConfig } from '../../src/spec/types.js';
import { Rng } from '../../src/util/rng.js';
import { buildSparK, randomMask, type SparKModel } from '../../src/models/spark.js';
import { describeEncoder, resolveEncoder, decoderChannels, resolveDensifyNorm, DOWNSAMPLE_RATIO } from '../../src/models/registry.js';
import { stepRngs, trainStepAsync, type TrainableModel } from '../../src/train/step.js';
import { buildParamGroups, Lamb, type SparkOptimizer, type StepHyper } from '../../src/train/optimizers.js';
import { syntheticImage } from '../../src/data/synthetic.js';
import { normalizeRgb } from '../../src/data/normalize.js';

export type Mode = 'sparse' | 'visible' | 'dense';
export const MODES: readonly Mode[] = ['sparse', 'visible', 'dense'];

/** One benchmark case: a model config at an input size and batch. */
export interface BenchCase {
  /** Label in the table (`resnet50`, `convnext_small`, `quickstart`, or a preset name). */
  label: string;
  model: ModelConfig;
  inputSize: number;
  batch: number;
  /** LAMB β2 the trainer would use (0.95 ResNets, 0.999 ConvNeXts). */
  beta2: number;
}

/** Everything a non-TS implementation needs to rebuild the same network (what bench/torch_spark.py reads). */
export interface ResolvedCase {
  label: string;
  family: 'resnet' | 'convnext';
  layers?: number[];
  width?: number;
  depths?: number[];
  dims?: number[];
  decoder_width: number;
  densify_norm: 'bn' | 'ln' | 'none';
  drop_path: number;
  mask_ratio: number;
  size: number;
  batch: number;
  beta2: number;
}

export function resolveCase(c: BenchCase): ResolvedCase {
  const r = resolveEncoder(c.model.encoder);
  const base = {
    label: c.label,
    decoder_width: c.model.decoder.width,
    densify_norm: resolveDensifyNorm(r.family, c.model.densify_norm),
    drop_path: c.model.drop_path ?? r.defaultDropPath,
    mask_ratio: c.model.mask_ratio,
    size: c.inputSize,
    batch: c.batch,
    beta2: c.beta2,
  };
  return r.family === 'resnet'
    ? { ...base, family: 'resnet', layers: [...r.layers], width: r.width }
    : { ...base, family: 'convnext', depths: [...r.depths], dims: [...r.dims] };
}

/**
 * Multiply-accumulates of one forward pass of the whole SparK network per image (dense count: the sparse emulation
 * computes every position): encoder backbone + densify projections + LightDecoder.
 */
export function sparkMacs(model: ModelConfig, inputSize: number): { encoder: number; densify: number; decoder: number; total: number } {
  const info = describeEncoder(model.encoder);
  const encoder = info.flops(inputSize);
  const f = inputSize / DOWNSAMPLE_RATIO;
  const ch = decoderChannels(model.decoder.width);
  const eW = [3, 2, 1, 0].map((j) => info.stageChannels[j]!);
  let densify = 0;
  for (let i = 0; i < 4; i++) {
    const r = f * 2 ** i;
    if (i === 0) densify += eW[0] === ch[0] ? 0 : r * r * eW[0]! * ch[0]!;
    else densify += r * r * 9 * eW[i]! * ch[i]!;
  }
  let decoder = 0;
  for (let i = 0; i < ch.length - 1; i++) {
    const cin = ch[i]!;
    const cout = ch[i + 1]!;
    const rIn = f * 2 ** i;
    const r = 2 * rIn;
    decoder += rIn * rIn * 16 * cin * cin; // ConvTranspose 4×4 s2
    decoder += r * r * 9 * cin * cin; // conv 3×3
    decoder += r * r * 9 * cin * cout; // conv 3×3
  }
  decoder += inputSize * inputSize * ch[ch.length - 1]! * 3; // proj 1×1
  return { encoder, densify, decoder, total: encoder + densify + decoder };
}

/** FLOPs of one training step (forward + input and weight gradients ≈ 3 × forward, 2 FLOPs per MAC). */
export function stepFlops(c: BenchCase): number {
  return 6 * sparkMacs(c.model, c.inputSize).total * c.batch;
}

/** The dense twin of `buildSparK` (see the file header): `buildSparK(..., { dense: true })`. */
export function buildDenseTwin(model: ModelConfig, inputSize: number, seed: number): SparKModel {
  return buildSparK(model, inputSize, seed, { dense: true });
}

/** A batch of normalised synthetic images [B, S, S, 3] (the same pixels for every mode and backend). */
export function syntheticBatch(batch: number, size: number, seed = 1): tf.Tensor4D {
  const n = size * size * 3;
  const data = new Float32Array(batch * n);
  for (let b = 0; b < batch; b++) normalizeRgb(syntheticImage(seed, b, size), size, size, false, data, b * n);
  return tf.tensor4d(data, [batch, size, size, 3]);
}

export interface ModeResult {
  mode: Mode;
  /** Wall time of each timed step, ms. */
  timesMs: number[];
  medianMs: number;
  minMs: number;
  maxMs: number;
  imgPerSec: number;
  /** Effective GFLOP/s of the dense FLOP count (sparse steps compute every position too). */
  gflops: number;
  warmupMs: number[];
  losses: number[];
  numTensors: { beforeBuild: number; afterBuild: number; afterWarmup: number; afterTimed: number; afterDispose: number };
  numBytesAfterWarmup: number;
  /** RSS sampled after each step (max), MiB. */
  rssMiB: number;
  /** Peak RSS of the process (getrusage maxrss) when this mode's timed steps ended, MiB: with one mode per process
   * (step-throughput without --interleave) the mode's own peak; interleaved, the peak of all modes together. */
  peakRssMiB: number;
  /** Kernel calls (`tf.profile`) of one whole step (forward, backward, optimizer, the read's stack). */
  kernelsPerStep: number;
  /** Kernel calls of the optimizer update alone (on the same step's gradients). */
  optimizerKernelsPerStep: number;
  /** Kernel calls of one step by kernel name, most frequent first. */
  kernelsByName: Record<string, number>;
  /** 1-minute load average before and after this mode's steps (other processes compete for the cores). */
  loadavg: [number, number];
}

export function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Peak resident set size of this process so far, MiB. */
export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/**
 * Kernel calls of one training step (untimed, run after the timed ones) and of its optimizer update alone, by
 * `tf.profile` (every kernel the engine runs, nested ones included).
 */
export async function countStepKernels(
  model: TrainableModel,
  optimizer: SparkOptimizer,
  x: tf.Tensor4D,
  opts: { seed: number; it: number; hyper: StepHyper; masks?: tf.Tensor4D[] },
): Promise<{ total: number; optimizer: number; byName: Record<string, number> }> {
  const prof = await tf.profile(async () => {
    await trainStepAsync(model, optimizer, [x], opts);
  });
  // (tf.profile reuses one profile object: take what is needed before the next profile)
  const total = prof.kernels.length;
  const counts = new Map<string, number>();
  for (const k of prof.kernels) counts.set(k.name, (counts.get(k.name) ?? 0) + 1);
  const byName = Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]));
  // the optimizer alone, on gradients of the same kind (as trainStepAsync calls it: with an on-device applyIf)
  const names = [...model.params.keys()];
  const varList = [...model.params.values()];
  const { value, grads } = tf.tidy(() => {
    const r = stepRngs(opts.seed, opts.it, 0);
    const mask = opts.masks?.[0] ?? model.makeMask(x.shape[0], r.mask);
    return tf.variableGrads(() => model.forward(x, mask, { training: true, rng: r.dropPath }).loss, varList);
  });
  const gradMap = new Map<string, tf.Tensor>();
  names.forEach((n, i) => {
    const g = grads[varList[i]!.name];
    if (g) gradMap.set(n, g);
  });
  const yes = tf.scalar(true, 'bool');
  const optProf = await tf.profile(() => {
    optimizer.update(gradMap, opts.hyper, { applyIf: yes }).gradNorm.dispose();
  });
  tf.dispose([value, yes, ...gradMap.values()]);
  return { total, optimizer: optProf.kernels.length, byName };
}

/**
 * Time `warmup + iters` training steps of one mode on the current backend; model and optimizer are built here and
 * disposed at the end. `log` receives one line per step.
 */
export async function timeMode(c: BenchCase, mode: Mode, opts: { warmup: number; iters: number; seed?: number; log?: (s: string) => void }): Promise<ModeResult> {
  const seed = opts.seed ?? 0;
  const load0 = os.loadavg()[0]!;
  const log = opts.log ?? (() => undefined);
  const beforeBuild = tf.memory().numTensors;
  const x = syntheticBatch(c.batch, c.inputSize);
  const model = buildSparK(c.model, c.inputSize, seed, { dense: mode === 'dense' });
  const { lenKeep, fmap } = model;
  const optimizer = new Lamb(buildParamGroups(model.params), { betas: [0.9, c.beta2], eps: 1e-6, maxGradNorm: 5 });
  const ones = mode === 'visible' ? tf.ones([c.batch, fmap, fmap, 1]) as tf.Tensor4D : null;
  const afterBuild = tf.memory().numTensors;
  const hyper = { lr: 1e-4, wd: 0.04 };
  const warmupMs: number[] = [];
  const timesMs: number[] = [];
  const losses: number[] = [];
  let afterWarmup = afterBuild;
  let numBytesAfterWarmup = 0;
  let rss = process.memoryUsage().rss;
  let afterTimed = afterBuild;
  let peak = 0;
  let kernels = { total: 0, optimizer: 0, byName: {} as Record<string, number> };
  try {
    for (let i = 0; i < opts.warmup + opts.iters; i++) {
      if (i === opts.warmup) {
        afterWarmup = tf.memory().numTensors;
        numBytesAfterWarmup = tf.memory().numBytes;
      }
      const t0 = performance.now();
      let masks: tf.Tensor4D[] | undefined;
      if (ones) masks = [ones];
      else if (mode === 'dense') masks = [randomMask(c.batch, fmap, lenKeep, Rng.from(seed, 'mask', i, 0))];
      // sparse: trainStepAsync draws the mask itself from Rng.from(seed, 'mask', it, micro), as in training
      const r = await trainStepAsync(model, optimizer, [x], { seed, it: i, hyper, ...(masks ? { masks } : {}) });
      if (mode === 'dense') tf.dispose(masks!);
      const dt = performance.now() - t0;
      rss = Math.max(rss, process.memoryUsage().rss);
      (i < opts.warmup ? warmupMs : timesMs).push(dt);
      losses.push(r.loss);
      log(`  ${mode} ${i < opts.warmup ? 'warmup' : 'step'} ${i < opts.warmup ? i + 1 : i - opts.warmup + 1}: ${dt.toFixed(0)} ms, loss ${r.loss.toFixed(4)}, tensors ${tf.memory().numTensors}`);
    }
    afterTimed = tf.memory().numTensors;
    peak = peakRssMiB();
    const it = opts.warmup + opts.iters;
    const masks = ones ? [ones] : mode === 'dense' ? [randomMask(c.batch, fmap, lenKeep, Rng.from(seed, 'mask', it, 0))] : undefined;
    kernels = await countStepKernels(model, optimizer, x, { seed, it, hyper, ...(masks ? { masks } : {}) });
    if (mode === 'dense') tf.dispose(masks!);
  } finally {
    optimizer.dispose();
    model.dispose();
    x.dispose();
    ones?.dispose();
  }
  const afterDispose = tf.memory().numTensors;
  const med = median(timesMs);
  return {
    mode,
    timesMs,
    medianMs: med,
    minMs: Math.min(...timesMs),
    maxMs: Math.max(...timesMs),
    imgPerSec: (1000 * c.batch) / med,
    gflops: stepFlops(c) / (med / 1000) / 1e9,
    warmupMs,
    losses,
    numTensors: { beforeBuild, afterBuild, afterWarmup, afterTimed, afterDispose },
    numBytesAfterWarmup,
    rssMiB: rss / 2 ** 20,
    peakRssMiB: peak,
    kernelsPerStep: kernels.total,
    optimizerKernelsPerStep: kernels.optimizer,
    kernelsByName: kernels.byName,
    loadavg: [load0, os.loadavg()[0]!],
  };
}

/**
 * Like `timeMode` for several modes at once, alternating them step by step (sparse, dense, sparse, dense, ...) so
 * that every mode sees the same background load: on a shared machine this makes their ratio far more reliable than
 * timing the modes one after the other. All models and optimizers are alive together (more memory: weights and
 * optimizer state of each; activations are freed after every step). Tensor counts are of the whole process.
 */
export async function timeInterleaved(c: BenchCase, modes: Mode[], opts: { warmup: number; iters: number; seed?: number; log?: (s: string) => void }): Promise<ModeResult[]> {
  const seed = opts.seed ?? 0;
  const log = opts.log ?? (() => undefined);
  const load0 = os.loadavg()[0]!;
  const beforeBuild = tf.memory().numTensors;
  const x = syntheticBatch(c.batch, c.inputSize);
  const probe = buildSparK(c.model, c.inputSize, seed, { shapesOnly: true });
  const { lenKeep, fmap } = probe;
  const ones = tf.ones([c.batch, fmap, fmap, 1]) as tf.Tensor4D;
  const runs = modes.map((mode) => {
    const model: SparKModel = buildSparK(c.model, c.inputSize, seed, { dense: mode === 'dense' });
    const optimizer = new Lamb(buildParamGroups(model.params), { betas: [0.9, c.beta2], eps: 1e-6, maxGradNorm: 5 });
    return { mode, model, optimizer, warmupMs: [] as number[], timesMs: [] as number[], losses: [] as number[], rss: 0, kernels: { total: 0, optimizer: 0, byName: {} as Record<string, number> } };
  });
  const afterBuild = tf.memory().numTensors;
  let afterWarmup = afterBuild;
  let numBytesAfterWarmup = tf.memory().numBytes;
  let afterTimed = afterBuild;
  let peak = 0;
  const hyper = { lr: 1e-4, wd: 0.04 };
  try {
    for (let i = 0; i < opts.warmup + opts.iters; i++) {
      if (i === opts.warmup) {
        afterWarmup = tf.memory().numTensors;
        numBytesAfterWarmup = tf.memory().numBytes;
      }
      for (const r of runs) {
        const t0 = performance.now();
        let masks: tf.Tensor4D[] | undefined;
        if (r.mode === 'visible') masks = [ones];
        else if (r.mode === 'dense') masks = [randomMask(c.batch, fmap, lenKeep, Rng.from(seed, 'mask', i, 0))];
        const res = await trainStepAsync(r.model, r.optimizer, [x], { seed, it: i, hyper, ...(masks ? { masks } : {}) });
        if (r.mode === 'dense') tf.dispose(masks!);
        const dt = performance.now() - t0;
        r.rss = Math.max(r.rss, process.memoryUsage().rss);
        (i < opts.warmup ? r.warmupMs : r.timesMs).push(dt);
        r.losses.push(res.loss);
        log(`  ${r.mode} ${i < opts.warmup ? 'warmup' : 'step'} ${i < opts.warmup ? i + 1 : i - opts.warmup + 1}: ${dt.toFixed(0)} ms, loss ${res.loss.toFixed(4)}, tensors ${tf.memory().numTensors}, load ${os.loadavg()[0]!.toFixed(1)}`);
      }
    }
    afterTimed = tf.memory().numTensors;
    peak = peakRssMiB();
    const it = opts.warmup + opts.iters;
    for (const r of runs) {
      const masks = r.mode === 'visible' ? [ones] : r.mode === 'dense' ? [randomMask(c.batch, fmap, lenKeep, Rng.from(seed, 'mask', it, 0))] : undefined;
      r.kernels = await countStepKernels(r.model, r.optimizer, x, { seed, it, hyper, ...(masks ? { masks } : {}) });
      if (r.mode === 'dense') tf.dispose(masks!);
    }
  } finally {
    for (const r of runs) {
      r.optimizer.dispose();
      r.model.dispose();
    }
    x.dispose();
    ones.dispose();
  }
  const afterDispose = tf.memory().numTensors;
  const load1 = os.loadavg()[0]!;
  return runs.map((r) => {
    const med = median(r.timesMs);
    return {
      mode: r.mode,
      timesMs: r.timesMs,
      medianMs: med,
      minMs: Math.min(...r.timesMs),
      maxMs: Math.max(...r.timesMs),
      imgPerSec: (1000 * c.batch) / med,
      gflops: stepFlops(c) / (med / 1000) / 1e9,
      warmupMs: r.warmupMs,
      losses: r.losses,
      numTensors: { beforeBuild, afterBuild, afterWarmup, afterTimed, afterDispose },
      numBytesAfterWarmup,
      rssMiB: r.rss / 2 ** 20,
      peakRssMiB: peak,
      kernelsPerStep: r.kernels.total,
      optimizerKernelsPerStep: r.kernels.optimizer,
      kernelsByName: r.kernels.byName,
      loadavg: [load0, load1] as [number, number],
    };
  });
}
