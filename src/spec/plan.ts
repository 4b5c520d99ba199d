/**
 * The dry run: everything a run would do, computed from the resolved config without touching tensors or writing
 * anything — model size, mask geometry, batch and learning-rate arithmetic, schedule lengths, where outputs go.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describeEncoder, resolveDensifyNorm, sparkParamBreakdown } from '../models/registry.js';
import { estimateStepMemory, gib, memoryBudget, planBatch, type MemoryBudget } from '../models/memory.js';
import { roundHalfEven } from '../util/rng.js';
import { configToYaml } from './load.js';
import type { ExperimentConfig } from './types.js';

/** File extensions counted as images in an image folder (what sharp decodes). */
export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff', '.avif', '.jfif']);

export interface RunPlan {
  name: string;
  task: ExperimentConfig['task'];
  description: string | null;
  /** The resolved config as YAML. */
  resolvedYaml: string;
  encoder: {
    name: string;
    family: 'resnet' | 'convnext';
    /** The preset name when the spec names one. */
    preset: string | null;
    stageChannels: number[];
    params: number;
  };
  /** Parameters of the whole SparK model: encoder, densify norms/projections, mask tokens, decoder. */
  sparkParams: number;
  decoderParams: number;
  decoderWidth: number;
  densifyNorm: 'bn' | 'ln' | 'none';
  dropPath: number;
  dropPathIsDefault: boolean;
  mask: {
    inputSize: number;
    /** Mask grid side: input / 32. */
    fmap: number;
    /** Cells per image: fmap². */
    cells: number;
    /** Visible cells per image: roundHalfEven(cells·(1 − ratio)). */
    lenKeep: number;
    masked: number;
    ratio: number;
    /** masked / cells. */
    effectiveRatio: number;
  };
  /**
   * size = images per optimizer step (train.batch_size) = `accumulate` micro-batches of `micro` images;
   * `mode` says whether accumulate was 'auto' (chosen here for this machine) or written.
   */
  batch: { size: number; accumulate: number; micro: number; mode: 'auto' | 'explicit'; effective: number };
  /** Estimated memory of a step at that micro-batch and the budget of the machine the plan was made on. */
  memory: { perImageBytes: number; inputBytes: number; peakBytes: number; limitBytes: number; budgetSource: string; fits: boolean };
  lr: { base: number; baseBatchSize: number; peak: number };
  optimizer: {
    name: 'lamb' | 'adamw';
    betas: [number, number];
    betasAreDefault: boolean;
    eps: number;
    weightDecay: number;
    weightDecayEnd: number;
    clipGrad: number;
  };
  dataset: {
    source: 'synthetic' | 'imagefolder';
    root: string | null;
    /** Images per epoch, or null when unknown (folder missing). */
    size: number | null;
  };
  schedule: {
    /** ceil(N / effective batch), null when N is unknown. */
    itersPerEpoch: number | null;
    /** Epochs of the run (fractional when the length is given in steps); null when unknown. */
    epochs: number | null;
    totalIters: number | null;
    warmupIters: number | null;
    lengthFrom: 'epochs' | 'steps';
    warmupFrom: 'epochs' | 'steps';
  };
  runtime: ExperimentConfig['runtime'];
  /** `<output.dir>/<name>/<run-id>`. */
  outputDir: string;
  runId: string;
  tracking: { enabled: boolean; uri: string; experiment: string; runName: string | null };
  /** Things that will run but probably not as intended. */
  warnings: string[];
}

export interface PlanOptions {
  /** Run id to show in the output folder (default the placeholder `<run-id>`). */
  runId?: string;
  /** Environment for the tracking URI default (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Memory budget to plan the micro-batch against (default: this machine's, models/memory.ts memoryBudget). */
  budget?: MemoryBudget;
}

/** Count image files under a folder (recursive, hidden entries skipped); null when it does not exist. */
export function countImages(root: string): number | null {
  try {
    if (!statSync(root).isDirectory()) return null;
  } catch {
    return null;
  }
  let n = 0;
  const stack = [root];
  while (stack.length) {
    const dir = stack.pop()!;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      if (e.isDirectory()) stack.push(path.join(dir, e.name));
      else if ((e.isFile() || e.isSymbolicLink()) && IMAGE_EXTENSIONS.has(path.extname(e.name).toLowerCase())) n++;
    }
  }
  return n;
}

/** The dry-run plan of a resolved config. Reads the image folder (to count images) but writes nothing. */
export function planRun(config: ExperimentConfig, opts: PlanOptions = {}): RunPlan {
  const warnings: string[] = [];
  const info = describeEncoder(config.model.encoder);
  const inputSize = config.data.input_size;
  const breakdown = sparkParamBreakdown(config.model, inputSize);

  const fmap = Math.floor(inputSize / 32);
  const cells = fmap * fmap;
  const ratio = config.model.mask_ratio;
  const lenKeep = roundHalfEven(cells * (1 - ratio));
  const masked = cells - lenKeep;

  const t = config.train;
  const effective = t.batch_size;
  const backendName = config.runtime.backend === 'auto' ? 'tensorflow' : config.runtime.backend;
  const mem = estimateStepMemory(config, backendName);
  const budget = opts.budget ?? memoryBudget(opts.env ?? process.env, process.memoryUsage().rss, backendName);
  const bp = planBatch(t.batch_size, t.accumulate, mem, budget);
  if (!bp.fits) {
    if (bp.mode === 'explicit') {
      const auto = planBatch(t.batch_size, 'auto', mem, budget);
      warnings.push(
        `train.accumulate ${t.accumulate} (micro-batches of ${bp.micro}) will not fit: estimated peak ${gib(bp.estimatedPeakBytes)} > ${gib(budget.limitBytes)} ` +
          `(${budget.source}); accumulate: auto would use micro-batches of ${auto.micro}${auto.fits ? '' : ' (and still not fit)'}`,
      );
    } else {
      warnings.push(`even a micro-batch of 1 image will not fit: estimated peak ${gib(bp.estimatedPeakBytes)} > ${gib(budget.limitBytes)} (${budget.source}); use a smaller input size or model`);
    }
  }
  const o = t.optimizer;
  const peak = (o.base_lr * effective) / o.base_batch_size;

  let size: number | null;
  if (config.data.source === 'synthetic') size = config.data.synthetic_size;
  else {
    size = config.data.root ? countImages(config.data.root) : null;
    if (size === null) warnings.push(`data.root '${config.data.root}' does not exist (yet): the data set size is unknown`);
    else if (size === 0) warnings.push(`no images found under data.root '${config.data.root}'`);
  }
  const known = size !== null && size > 0;
  const itersPerEpoch = known ? Math.ceil(size! / effective) : null;
  let totalIters: number | null;
  let epochs: number | null;
  if (t.steps != null) {
    totalIters = t.steps;
    epochs = itersPerEpoch ? t.steps / itersPerEpoch : null;
  } else {
    epochs = t.epochs;
    totalIters = itersPerEpoch && t.epochs != null ? t.epochs * itersPerEpoch : null;
  }
  const warmupIters = t.warmup_steps != null ? t.warmup_steps : itersPerEpoch ? Math.round(t.warmup_epochs * itersPerEpoch) : null;
  if (warmupIters != null && totalIters != null && warmupIters >= totalIters) {
    warnings.push(`warm-up (${warmupIters} iterations) is not shorter than the run (${totalIters}): set train.warmup_steps`);
  }
  if (known && size! < effective) {
    warnings.push(`the effective batch (${effective}) is larger than the data set (${size} images): batches repeat images`);
  }

  const dropPathIsDefault = config.model.drop_path == null;
  const betasAreDefault = o.betas == null;
  const betas: [number, number] = o.betas ? [o.betas[0], o.betas[1]] : [0.9, info.defaultBeta2];
  const runId = opts.runId ?? '<run-id>';
  const env = opts.env ?? process.env;
  const preset = typeof config.model.encoder === 'string' ? config.model.encoder : null;
  return {
    name: config.name,
    task: config.task,
    description: config.description,
    resolvedYaml: configToYaml(config),
    encoder: { name: info.name, family: info.family, preset, stageChannels: [...info.stageChannels], params: info.encoderParams },
    sparkParams: breakdown.total,
    decoderParams: breakdown.decoder,
    decoderWidth: config.model.decoder.width,
    densifyNorm: resolveDensifyNorm(info.family, config.model.densify_norm),
    dropPath: dropPathIsDefault ? info.defaultDropPath : config.model.drop_path!,
    dropPathIsDefault,
    mask: { inputSize, fmap, cells, lenKeep, masked, ratio, effectiveRatio: masked / cells },
    batch: { size: t.batch_size, accumulate: bp.accumulate, micro: bp.micro, mode: bp.mode, effective },
    memory: { perImageBytes: mem.perImageBytes, inputBytes: mem.inputBytes, peakBytes: bp.estimatedPeakBytes, limitBytes: budget.limitBytes, budgetSource: budget.source, fits: bp.fits },
    lr: { base: o.base_lr, baseBatchSize: o.base_batch_size, peak },
    optimizer: {
      name: o.name,
      betas,
      betasAreDefault,
      eps: o.eps ?? (o.name === 'lamb' ? 1e-6 : 1e-8),
      weightDecay: o.weight_decay,
      weightDecayEnd: o.weight_decay_end,
      clipGrad: o.clip_grad,
    },
    dataset: { source: config.data.source, root: config.data.root, size },
    schedule: {
      itersPerEpoch,
      epochs,
      totalIters,
      warmupIters,
      lengthFrom: t.steps != null ? 'steps' : 'epochs',
      warmupFrom: t.warmup_steps != null ? 'steps' : 'epochs',
    },
    runtime: { ...config.runtime },
    outputDir: path.join(config.output.dir, config.name, runId),
    runId,
    tracking: {
      enabled: config.tracking.enabled,
      uri: config.tracking.uri ?? env['MLFLOW_TRACKING_URI'] ?? './mlruns',
      experiment: config.tracking.experiment,
      runName: config.tracking.run_name,
    },
    warnings,
  };
}

/** 1234567 → "1,234,567". */
function int(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Compact number: 0.0032 → "3.2e-3", 0.5 → "0.5". */
export function num(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e-2 && a < 1e5) return String(+x.toPrecision(6));
  const [m, e] = x.toExponential(6).split('e');
  return `${+Number(m).toPrecision(6)}e${Number(e)}`;
}

function params(n: number): string {
  return n >= 1e6 ? `${int(n)} (${(n / 1e6).toFixed(1)}M)` : int(n);
}

/** The plan as text (what `spark run --dry-run` prints); `opts.backend`: what the backend request would get on this
 * machine (the CLI fills it from `previewBackend`). */
export function formatPlan(plan: RunPlan, opts: { backend?: string } = {}): string {
  const rows: Array<[string, string] | string> = [];
  const row = (k: string, v: string) => rows.push([k, v]);
  const head = (s: string) => rows.push(s);
  const e = plan.encoder;
  const s = plan.schedule;

  head('model');
  row('encoder', `${e.name} (${e.family}; stage channels ${e.stageChannels.join('/')})`);
  row('parameters', `encoder ${params(e.params)}; SparK total ${params(plan.sparkParams)}`);
  row('decoder', `light, width ${plan.decoderWidth}, ${params(plan.decoderParams)} parameters`);
  row('densify norm', plan.densifyNorm);
  row('drop path', `${num(plan.dropPath)}${plan.dropPathIsDefault ? ' (model default)' : ''}`);

  head('masking');
  const m = plan.mask;
  row('input', `${m.inputSize}×${m.inputSize} px → mask grid ${m.fmap}×${m.fmap} = ${m.cells} cells of 32×32 px`);
  row(
    'per image',
    `${m.lenKeep} visible, ${m.masked} masked of ${m.cells} (mask ratio ${num(m.ratio)}, effective ${(100 * m.effectiveRatio).toFixed(2)} %)`,
  );

  head('data');
  const d = plan.dataset;
  const sizeText = d.size === null ? 'unknown size' : `${int(d.size)} images`;
  row('source', d.source === 'synthetic' ? `synthetic (${sizeText} per epoch)` : `imagefolder ${d.root} (${sizeText})`);

  head('optimisation');
  const b = plan.batch;
  const split = b.accumulate === 1 ? `one micro-batch` : `${int(b.accumulate)} micro-batches of ${int(b.micro)} (gradients averaged)`;
  row('batch', `${int(b.size)} per step = ${split}${b.mode === 'auto' ? ', accumulate auto: the largest micro-batch that fits here' : ''}`);
  const mm = plan.memory;
  row(
    'memory',
    `estimated peak ${gib(mm.peakBytes)} at micro-batch ${int(b.micro)} (${gib(mm.perImageBytes)} per image, the loader's batches ${gib(mm.inputBytes)}) ` +
      `of a ${gib(mm.limitBytes)} budget (${mm.budgetSource})${mm.fits ? '' : ' — does not fit'}`,
  );
  row('learning rate', `peak ${num(plan.lr.peak)} = ${num(plan.lr.base)} × ${int(b.effective)} / ${int(plan.lr.baseBatchSize)}`);
  const o = plan.optimizer;
  row(
    'optimizer',
    `${o.name}, betas (${num(o.betas[0])}, ${num(o.betas[1])})${o.betasAreDefault ? ' (family default)' : ''}, eps ${num(o.eps)}, ` +
      `weight decay ${num(o.weightDecay)} → ${num(o.weightDecayEnd)}, clip ${o.clipGrad > 0 ? num(o.clipGrad) : 'off'}`,
  );

  head('schedule');
  row('iterations/epoch', s.itersPerEpoch === null ? 'unknown' : int(s.itersPerEpoch));
  const epochsText =
    s.epochs === null ? 'unknown epochs' : s.lengthFrom === 'steps' ? `≈ ${num(+s.epochs.toFixed(3))} epoch${s.epochs === 1 ? '' : 's'}` : `${int(s.epochs)} epoch${s.epochs === 1 ? '' : 's'}`;
  const itersText = s.totalIters === null ? 'unknown iterations' : `${int(s.totalIters)} iteration${s.totalIters === 1 ? '' : 's'}`;
  row('length', s.lengthFrom === 'steps' ? `${itersText} (${epochsText})` : `${epochsText} = ${itersText}`);
  row('warm-up', s.warmupIters === null ? 'unknown iterations' : `${int(s.warmupIters)} iteration${s.warmupIters === 1 ? '' : 's'}`);

  head('runtime');
  const r = plan.runtime;
  row('backend', `${r.backend}, device ${r.device ?? 'auto'}${r.tf32 === false ? ', TF32 off' : ''}, seed ${r.seed}, threads ${r.threads ?? 'all cores'}`);
  if (opts.backend) row('would use', opts.backend);

  head('output');
  row('run folder', plan.outputDir);
  const tr = plan.tracking;
  row('tracking', tr.enabled ? `MLflow ${tr.uri}, experiment '${tr.experiment}'${tr.runName ? `, run '${tr.runName}'` : ''}` : 'off');

  const width = Math.max(...rows.filter((x): x is [string, string] => Array.isArray(x)).map(([k]) => k.length));
  const lines = [`dry run: ${plan.name} (${plan.task})${plan.description ? ` — ${plan.description}` : ''}; nothing is written`, ''];
  for (const x of rows) lines.push(Array.isArray(x) ? `  ${x[0].padEnd(width)}  ${x[1]}` : x);
  if (plan.warnings.length) {
    lines.push('', 'warnings');
    for (const w of plan.warnings) lines.push(`  - ${w}`);
  }
  lines.push('', 'resolved config', ...plan.resolvedYaml.trimEnd().split('\n').map((l) => `  ${l}`));
  return lines.join('\n') + '\n';
}
