/**
 * Downstream use of a pre-trained encoder: the pieces fine-tuning (`finetune.ts`, spec §7) and the linear probe
 * (frozen encoder, global-average-pooled features, a linear classifier) share — run session, loaders, weights from
 * `init`, top-k — plus mixup/CutMix/label smoothing and the soft-target losses of fine-tuning, and the linear probe
 * itself (`probe.ts`). Both log to MLflow and show the console UI through the same event stream as pre-training.
 */
import * as tf from '@tensorflow/tfjs';
import type { EncoderSpec, ExperimentConfig } from '../spec/types.js';
import { configToYaml } from '../spec/index.js';
import { initBackend } from '../backend/init.js';
import { buildEncoder, type Encoder } from '../models/spark.js';
import { describeEncoder } from '../models/registry.js';
import { createLoader, type Loader } from '../data/index.js';
import { EventBus, type RunStatus, type RunSubscriber } from '../train/events.js';
import { AdamW, buildParamGroups } from '../train/optimizers.js';
import { RunFolder, resolveRunPath, safeToTensor } from '../train/checkpoint.js';
import { createRunTracker, type RunTracker } from '../track/index.js';
import type { SafeTensor } from '../util/safetensors.js';
import { Rng } from '../util/rng.js';
import { DataError, UsageError } from '../util/errors.js';
import { loadEncoderState } from '../formats/export.js';
import { finetuneSection, resolveAutoAugment, resolveInitPath, type FinetuneConfig } from './finetune-config.js';

export interface DownstreamOptions {
  config: ExperimentConfig;
  specPath: string | null;
  resolvedYaml?: string;
  /** Override `finetune.init` (a run / import folder or encoder file); `null` forces random init. */
  init?: string | null;
  plain?: boolean;
  subscribers?: RunSubscriber[];
  /** Add the console subscriber; default true unless `subscribers` is given. */
  console?: boolean;
  signal?: AbortSignal;
  /** Suffix for the run name (e.g. '-random' for a baseline). */
  nameSuffix?: string;
  /** Where the console view writes (default stdout; `--json` sends it to stderr). */
  logStream?: NodeJS.WriteStream;
  /** Extra MLflow tags of the run (e.g. which sweep trial a probe reads). */
  tags?: Record<string, string>;
}

export interface DownstreamResult {
  status: RunStatus;
  runDir: string;
  task: 'finetune' | 'probe';
  init: string | null;
  encoder: string;
  numClasses: number;
  top1: number;
  top5: number;
  trainTop1: number | null;
  steps: number;
  mlflowRunId?: string;
  error?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// shared pieces

/** Encoder spec and weights for `init` (or the spec's encoder, randomly initialised, when init is null). */
export async function resolveInit(config: ExperimentConfig, init: string | null): Promise<{ encoder: EncoderSpec; tensors: Map<string, SafeTensor> | null }> {
  if (!init) return { encoder: config.model.encoder, tensors: null };
  const st = await loadEncoderState(init);
  return { encoder: st.encoder, tensors: st.tensors };
}

/** Copy encoder weights (TF layouts, encoder keys) into an encoder; the head is left as initialised. */
export function loadEncoderWeights(enc: Encoder, tensors: Map<string, SafeTensor>, what: string): number {
  let n = 0;
  const missing: string[] = [];
  for (const m of [enc.params, enc.buffers]) {
    for (const [name, v] of m) {
      if (name.startsWith('fc.') || name.startsWith('head.') || name.startsWith('norm.')) continue;
      const t = tensors.get(name);
      if (!t) {
        missing.push(name);
        continue;
      }
      if (t.shape.length !== v.shape.length || t.shape.some((d, i) => d !== v.shape[i])) {
        throw new UsageError(`${what}: ${name} has shape ${JSON.stringify(t.shape)}, the encoder expects ${JSON.stringify(v.shape)}`);
      }
      tf.tidy(() => {
        let x = safeToTensor(t);
        if (x.dtype !== v.dtype) x = tf.cast(x, v.dtype);
        v.assign(x);
      });
      n++;
    }
  }
  if (missing.length) throw new UsageError(`${what}: ${missing.length} encoder tensors are missing (${missing.slice(0, 4).join(', ')}…)`);
  return n;
}

/** Top-1 / top-5 hits of logits [B, K] against labels. */
export function topkHits(logits: tf.Tensor2D, labels: Int32Array, count: number): { top1: number; top5: number } {
  return tf.tidy(() => {
    const k = Math.min(5, logits.shape[1]);
    const idx = tf.topk(logits, k).indices.arraySync() as number[][];
    let top1 = 0;
    let top5 = 0;
    for (let i = 0; i < count; i++) {
      const row = idx[i]!;
      if (row[0] === labels[i]) top1++;
      if (row.includes(labels[i]!)) top5++;
    }
    return { top1, top5 };
  });
}

export interface Session {
  folder: RunFolder;
  bus: EventBus;
  tracker: RunTracker | null;
  stop: AbortController;
  close(): Promise<void>;
}

/**
 * The run folder, event bus, console view and MLflow tracker of a downstream run. `resume` continues an existing run
 * folder (its config.yaml and run.json stay; the tracker continues the same MLflow run).
 */
export async function openSession(opts: DownstreamOptions, config: ExperimentConfig, resume?: RunFolder): Promise<Session> {
  const folder = resume ?? (await RunFolder.create(config.output.dir, config.name));
  if (!resume) {
    await folder.writeConfig(opts.resolvedYaml ?? configToYaml(config));
    await folder.updateRunInfo({ runId: folder.runId, name: config.name, specPath: opts.specPath, createdAt: new Date().toISOString(), task: config.task });
  }
  const bus = new EventBus();
  const stop = new AbortController();
  if (opts.signal) {
    if (opts.signal.aborted) stop.abort();
    else opts.signal.addEventListener('abort', () => stop.abort(), { once: true });
  }
  const useConsole = opts.console ?? opts.subscribers === undefined;
  if (useConsole) {
    try {
      const ui = await import('../ui/index.js');
      bus.subscribe(ui.createConsoleSubscriber({ plain: opts.plain, onInterrupt: () => stop.abort(), logEvery: config.output.log_every, ...(opts.logStream ? { stream: opts.logStream } : {}) }));
    } catch {
      /* no console UI available */
    }
  }
  for (const s of opts.subscribers ?? []) bus.subscribe(s);
  const tracker = await createRunTracker({
    config,
    runDir: folder.dir,
    specPath: opts.specPath,
    resolvedYaml: opts.resolvedYaml ?? configToYaml(config),
    resume: resume !== undefined,
    extraTags: { 'spark.task': config.task, ...(opts.tags ?? {}) },
    emit: (e) => bus.emit(e),
  });
  bus.subscribe(tracker);
  if (tracker.runId) await folder.updateRunInfo({ mlflowRunId: tracker.runId, mlflowExperimentId: tracker.experimentId });
  return { folder, bus, tracker, stop, close: () => bus.close() };
}

/** The run-start event of a downstream run (fine-tuning: `total` steps of `spe` per epoch; probe: epochs). */
export function emitRunStart(sess: Session, config: ExperimentConfig, specPath: string | null, encoder: string, backend: string, total: number, spe: number, startStep = 0): void {
  sess.bus.emit({
    type: 'run-start',
    time: Date.now(),
    runId: sess.folder.runId,
    runDir: sess.folder.dir,
    name: config.name,
    config,
    encoder,
    backend,
    totalSteps: total,
    stepsPerEpoch: spe,
    totalEpochs: Math.ceil(total / spe),
    startStep,
    resumed: startStep > 0,
    specPath,
  });
}

export function withSuffix(config: ExperimentConfig, suffix: string | undefined): ExperimentConfig {
  if (!suffix) return config;
  return { ...config, name: `${config.name}${suffix}`, tracking: { ...config.tracking, run_name: config.tracking.run_name ? `${config.tracking.run_name}${suffix}` : null } };
}

export async function labelledLoader(
  config: ExperimentConfig,
  root: string | null,
  opts: { augment: 'finetune' | 'eval'; batchSize: number; ft: FinetuneConfig; runDir?: string; warn?: (c: string, m: string) => void; repeats?: number; startStep?: number; dropLast?: boolean },
): Promise<Loader> {
  const loader = await createLoader(config.data, {
    batchSize: opts.batchSize,
    seed: config.runtime.seed,
    augment: opts.augment,
    withLabels: true,
    ...(root ? { root } : {}),
    ...(opts.augment === 'eval' ? { shuffle: false, cropPct: opts.ft.eval_crop_pct, interpolation: 'bicubic' as const } : { cropScale: opts.ft.crop_scale, autoAugment: resolveAutoAugment(opts.ft.auto_augment, config.data.input_size), randomErasing: opts.ft.random_erasing }),
    ...(opts.runDir ? { runDir: opts.runDir } : {}),
    ...(opts.warn ? { onWarning: opts.warn } : {}),
    ...(opts.repeats !== undefined ? { repeats: opts.repeats } : {}),
    ...(opts.dropLast !== undefined ? { dropLast: opts.dropLast } : {}),
    ...(opts.startStep ? { startStep: opts.startStep } : {}),
  });
  return loader;
}

/** One ordered pass over a loader (eval mode): calls `fn` with each batch's fresh images only. */
export async function onePass(loader: Loader, fn: (x: tf.Tensor4D, labels: Int32Array, count: number) => void): Promise<number> {
  loader.seek(0);
  let seen = 0;
  for (let s = 0; s < loader.stepsPerEpoch; s++) {
    const b = await loader.next();
    const count = Math.min(b.fresh, loader.numImages - seen);
    if (count <= 0) continue;
    const x = tf.tensor4d(b.images, [b.batchSize, b.size, b.size, 3]);
    try {
      fn(x, b.labels!, count);
    } finally {
      x.dispose();
    }
    seen += count;
  }
  return seen;
}

export function checkClasses(train: Loader, val: Loader, config: ExperimentConfig): void {
  if (!train.classes) throw new DataError(`data.root '${config.data.root}' is a flat folder: fine-tuning and probing need one sub-folder per class`);
  if (val.classes && JSON.stringify(val.classes) !== JSON.stringify(train.classes)) {
    throw new DataError(`data.val_root '${config.data.val_root}' has classes [${val.classes.slice(0, 5).join(', ')}…] but data.root has [${train.classes.slice(0, 5).join(', ')}…]`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// mixup / cutmix / label smoothing (spec §7.4, batch mode)

/** Gamma(k, 1) by Marsaglia–Tsang (k ≥ 1; k < 1 via the boost). */
function gamma(rng: Rng, k: number): number {
  if (k < 1) return gamma(rng, k + 1) * Math.pow(Math.max(rng.float(), 1e-300), 1 / k);
  const d = k - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rng.float();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

export function sampleBeta(rng: Rng, a: number): number {
  const x = gamma(rng, a);
  const y = gamma(rng, a);
  return x / (x + y);
}

export interface MixPlan {
  kind: 'none' | 'mixup' | 'cutmix';
  lam: number;
  /** CutMix box in pixels [y0, y1) × [x0, x1). */
  box?: [number, number, number, number];
}

/** timm's BatchMixup decision for one batch (deterministic from rng). */
export function planMix(rng: Rng, ft: { mixup: number; cutmix: number; mix_prob: number; switch_prob: number }, size: number): MixPlan {
  if (!(rng.float() < ft.mix_prob)) return { kind: 'none', lam: 1 };
  const useCutmix = ft.cutmix > 0 && (ft.mixup <= 0 || rng.float() < ft.switch_prob);
  if (!useCutmix) {
    if (ft.mixup <= 0) return { kind: 'none', lam: 1 };
    return { kind: 'mixup', lam: sampleBeta(rng, ft.mixup) };
  }
  const lam = sampleBeta(rng, ft.cutmix);
  const cut = Math.sqrt(1 - lam);
  const ch = Math.floor(size * cut);
  const cw = Math.floor(size * cut);
  const cy = rng.int(size);
  const cx = rng.int(size);
  const y0 = Math.max(0, cy - Math.floor(ch / 2));
  const y1 = Math.min(size, cy + Math.floor(ch / 2));
  const x0 = Math.max(0, cx - Math.floor(cw / 2));
  const x1 = Math.min(size, cx + Math.floor(cw / 2));
  const lamAdj = 1 - ((y1 - y0) * (x1 - x0)) / (size * size);
  return { kind: 'cutmix', lam: lamAdj, box: [y0, y1, x0, x1] };
}

/** Apply a mix plan to images [B,H,W,3] and one-hot labels: returns mixed images and soft targets [B,K]. */
export function applyMix(x: tf.Tensor4D, labels: Int32Array, numClasses: number, smoothing: number, plan: MixPlan): { x: tf.Tensor4D; y: tf.Tensor2D } {
  return tf.tidy(() => {
    const off = smoothing / numClasses;
    const on = 1 - smoothing + off;
    const y1 = tf.oneHot(tf.tensor1d(labels, 'int32'), numClasses).mul(on - off).add(off) as tf.Tensor2D;
    if (plan.kind === 'none') return { x: x.clone(), y: y1 };
    const xf = tf.reverse(x, 0);
    const y2 = tf.reverse(y1, 0);
    const y = y1.mul(plan.lam).add(y2.mul(1 - plan.lam)) as tf.Tensor2D;
    if (plan.kind === 'mixup') return { x: x.mul(plan.lam).add(xf.mul(1 - plan.lam)) as tf.Tensor4D, y };
    const [, H, W] = x.shape;
    const [y0, y1b, x0, x1] = plan.box!;
    const m = new Float32Array(H * W);
    for (let i = y0; i < y1b; i++) for (let j = x0; j < x1; j++) m[i * W + j] = 1;
    const box = tf.tensor4d(m, [1, H, W, 1]);
    return { x: x.mul(tf.sub(1, box)).add(xf.mul(box)) as tf.Tensor4D, y };
  });
}

/** Soft-target cross-entropy (ConvNeXt recipe) or BCE-with-logits (ResNet/LAMB recipe), mean over the batch. */
export function softTargetLoss(logits: tf.Tensor2D, y: tf.Tensor2D, kind: 'ce' | 'bce'): tf.Scalar {
  return tf.tidy(() => {
    if (kind === 'ce') return tf.neg(tf.mean(tf.sum(tf.mul(y, tf.logSoftmax(logits)), 1))) as tf.Scalar;
    // max(z, 0) − z·y + log(1 + exp(−|z|)), mean over all elements (timm BinaryCrossEntropy)
    const z = logits;
    return tf.mean(tf.add(tf.sub(tf.relu(z), tf.mul(z, y)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))))) as tf.Scalar;
  });
}
