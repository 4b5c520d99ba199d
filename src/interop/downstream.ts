/**
 * Downstream use of a pre-trained encoder: the pieces fine-tuning (`finetune.ts`, spec §7) and the linear probe
 * (frozen encoder, global-average-pooled features, a linear classifier) share — run session, loaders, weights from
 * `init`, top-k — plus mixup/CutMix/label smoothing and the soft-target losses of fine-tuning, and the linear probe
 * itself. Both log to MLflow and show the console UI through the same event stream as pre-training.
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
import { loadEncoderState } from './export.js';
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

// ---------------------------------------------------------------------------------------------------------------
// linear probe

/** Global-average-pooled stride-32 features of every image of a loader (eval mode), with labels. */
export async function extractFeatures(enc: Encoder, loader: Loader): Promise<{ feats: Float32Array; labels: Int32Array; n: number; dim: number }> {
  const dim = enc.stageChannels[3];
  const feats = new Float32Array(loader.numImages * dim);
  const labels = new Int32Array(loader.numImages);
  let seen = 0;
  await onePass(loader, (x, lab, count) => {
    const f = tf.tidy(() => tf.mean(enc.encode(x, null, { training: false })[3]!, [1, 2]).dataSync());
    feats.set(f.subarray(0, count * dim), seen * dim);
    labels.set(lab.subarray(0, count), seen);
    seen += count;
  });
  return { feats: feats.subarray(0, seen * dim), labels: labels.subarray(0, seen), n: seen, dim };
}

export interface LinearProbeResult {
  trainTop1: number;
  top1: number;
  top5: number;
  losses: number[];
}

/**
 * Train a linear classifier on standardised features with AdamW (cosine lr to 1 %), softmax cross-entropy, seeded
 * mini-batches; returns train/val accuracy. Pure tensor work, no images.
 */
export function trainLinearProbe(
  train: { feats: Float32Array; labels: Int32Array; n: number; dim: number },
  val: { feats: Float32Array; labels: Int32Array; n: number },
  numClasses: number,
  p: { epochs: number; lr: number; weight_decay: number; batch_size: number },
  seed: number,
  /** After each epoch: its mean loss and the lr of its last step. */
  onEpoch?: (epoch: number, loss: number, lr: number) => void,
): LinearProbeResult {
  const { dim } = train;
  // standardise with the training features' statistics
  const mean = new Float32Array(dim);
  const std = new Float32Array(dim);
  for (let i = 0; i < train.n; i++) for (let d = 0; d < dim; d++) mean[d]! += train.feats[i * dim + d]! / train.n;
  for (let i = 0; i < train.n; i++) for (let d = 0; d < dim; d++) std[d]! += (train.feats[i * dim + d]! - mean[d]!) ** 2 / train.n;
  for (let d = 0; d < dim; d++) std[d] = Math.sqrt(std[d]!) + 1e-6;
  const norm = (f: Float32Array, n: number) => {
    const o = new Float32Array(n * dim);
    for (let i = 0; i < n; i++) for (let d = 0; d < dim; d++) o[i * dim + d] = (f[i * dim + d]! - mean[d]!) / std[d]!;
    return o;
  };
  const Xtr = norm(train.feats, train.n);
  const Xva = norm(val.feats, val.n);
  const init = Rng.from(seed, 'probe-init');
  const uid = `${seed}/${Date.now()}/${Math.floor(init.float() * 1e9)}`;
  const W = tf.tidy(() => tf.variable(tf.tensor2d(Float32Array.from({ length: dim * numClasses }, () => init.normal() * 0.01), [dim, numClasses]), true, `probe/W/${uid}`));
  const b = tf.tidy(() => tf.variable(tf.zeros([numClasses]), true, `probe/b/${uid}`));
  const groups = buildParamGroups(new Map([['head.weight', W], ['head.bias', b]]));
  const opt = new AdamW(groups, { betas: [0.9, 0.999], eps: 1e-8 });
  const bs = Math.min(p.batch_size, train.n);
  const stepsPerEpoch = Math.ceil(train.n / bs);
  const total = p.epochs * stepsPerEpoch;
  const losses: number[] = [];
  const Xt = tf.tensor2d(Xtr, [train.n, dim]);
  const Yt = tf.tensor1d(train.labels, 'int32');
  try {
    let it = 0;
    for (let e = 0; e < p.epochs; e++) {
      const perm = Rng.from(seed, 'probe-epoch', e).permutation(train.n);
      let sum = 0;
      let lastLr = p.lr;
      for (let s = 0; s < stepsPerEpoch; s++) {
        const idx = perm.slice(s * bs, Math.min(train.n, (s + 1) * bs));
        const lr = p.lr * (0.01 + 0.99 * 0.5 * (1 + Math.cos((Math.PI * it) / Math.max(1, total - 1))));
        lastLr = lr;
        const loss = tf.tidy(() => {
          const ix = tf.tensor1d(Int32Array.from(idx), 'int32');
          const x = tf.gather(Xt, ix);
          const y = tf.oneHot(tf.gather(Yt, ix), numClasses);
          const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, tf.add(tf.matMul(x, W), b)) as tf.Scalar, [W, b]);
          opt.apply(new Map([['head.weight', grads[W.name]!], ['head.bias', grads[b.name]!]]), { lr, wd: p.weight_decay });
          return value.dataSync()[0]!;
        });
        sum += loss * idx.length;
        it++;
      }
      losses.push(sum / train.n);
      onEpoch?.(e + 1, sum / train.n, lastLr);
    }
    const acc = (X: Float32Array, labels: Int32Array, n: number) =>
      tf.tidy(() => {
        const logits = tf.add(tf.matMul(tf.tensor2d(X, [n, dim]), W), b) as tf.Tensor2D;
        const h = topkHits(logits, labels, n);
        return { top1: (100 * h.top1) / n, top5: (100 * h.top5) / n };
      });
    const tr = acc(Xtr, train.labels, train.n);
    const va = acc(Xva, val.labels, val.n);
    return { trainTop1: tr.top1, top1: va.top1, top5: va.top5, losses };
  } finally {
    Xt.dispose();
    Yt.dispose();
    opt.dispose();
    W.dispose();
    b.dispose();
  }
}

export async function runProbe(opts: DownstreamOptions): Promise<DownstreamResult> {
  const config = withSuffix(opts.config, opts.nameSuffix);
  const ft = finetuneSection(config);
  if (!config.data.val_root) throw new UsageError('the linear probe needs data.val_root (a labelled validation folder)');
  const given = opts.init !== undefined ? opts.init : resolveInitPath(ft.init, opts.specPath);
  const init = given ? resolveRunPath(given) : given;
  const backend = await initBackend(config.runtime.backend, { threads: config.runtime.threads });
  const { encoder: encSpec, tensors } = await resolveInit(config, init);
  const info = describeEncoder(encSpec);
  const seed = config.runtime.seed;
  const sess = await openSession(opts, config);
  let train: Loader | null = null;
  let val: Loader | null = null;
  let enc: Encoder | null = null;
  try {
    const batch = Math.max(1, config.train.batch_size);
    train = await labelledLoader(config, null, { augment: 'eval', batchSize: batch, ft, runDir: sess.folder.dir, warn: (code, message) => sess.bus.emit({ type: 'warning', time: Date.now(), code, message }) });
    val = await labelledLoader(config, config.data.val_root, { augment: 'eval', batchSize: batch, ft });
    checkClasses(train, val, config);
    const numClasses = ft.num_classes ?? train.classes!.length;
    enc = buildEncoder(encSpec, { seed, dropPath: 0 });
    if (tensors) loadEncoderWeights(enc, tensors, init!);
    const total = ft.probe.epochs;
    emitRunStart(sess, config, opts.specPath, info.name, backend.name, total, 1);
    sess.bus.emit({ type: 'log', time: Date.now(), level: 'info', message: `linear probe of ${info.name} (${init ?? 'random init'}): extracting features of ${train.numImages} training and ${val.numImages} validation images` });
    const ftr = await extractFeatures(enc, train);
    const fva = await extractFeatures(enc, val);
    let t0 = Date.now();
    const res = trainLinearProbe(ftr, fva, numClasses, ft.probe, seed, (epoch, loss, lr) => {
      const now = Date.now();
      if (epoch % Math.max(1, Math.floor(total / 20)) === 0 || epoch === total || epoch === 1) {
        sess.bus.emit({ type: 'step', time: now, step: epoch, epoch, epochStep: 1, loss, lr, wd: ft.probe.weight_decay, gradNorm: 0, imgPerSec: ftr.n / Math.max(1e-6, (now - t0) / 1000), etaSec: 0 });
      }
      t0 = now;
    });
    sess.bus.emit({ type: 'metrics', time: Date.now(), step: total, epoch: total, metrics: { probe_top1: res.top1, probe_top5: res.top5, probe_train_top1: res.trainTop1 } });
    await sess.folder.writeJson('metrics.json', { task: 'probe', init, encoder: info.name, numClasses, featureDim: ftr.dim, trainImages: ftr.n, valImages: fva.n, ...res, losses: undefined });
    sess.bus.emit({ type: 'run-end', time: Date.now(), status: 'FINISHED', step: total, epoch: total, finalLoss: res.losses[res.losses.length - 1] ?? null });
    return { status: 'FINISHED', runDir: sess.folder.dir, task: 'probe', init, encoder: info.name, numClasses, top1: res.top1, top5: res.top5, trainTop1: res.trainTop1, steps: total, ...(sess.tracker?.runId ? { mlflowRunId: sess.tracker.runId } : {}) };
  } catch (e) {
    sess.bus.emit({ type: 'run-end', time: Date.now(), status: 'FAILED', step: 0, epoch: 0, finalLoss: null, error: (e as Error).message });
    throw e;
  } finally {
    await sess.close().catch(() => undefined);
    await train?.close().catch(() => undefined);
    await val?.close().catch(() => undefined);
    enc?.dispose();
  }
}

