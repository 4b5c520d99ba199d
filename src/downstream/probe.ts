/**
 * The linear probe: frozen encoder, global-average-pooled features, a linear classifier trained with AdamW; its run
 * session, loaders and weights come from `session.ts` (shared with fine-tuning).
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, runtimeBackendOptions } from '../backend/init.js';
import { buildEncoder, type Encoder } from '../models/spark.js';
import { describeEncoder } from '../models/registry.js';
import type { Loader } from '../data/index.js';
import { AdamW, buildParamGroups } from '../train/optimizers.js';
import { resolveRunPath } from '../train/checkpoint.js';
import { Rng } from '../util/rng.js';
import { UsageError } from '../util/errors.js';
import { finetuneSection, resolveInitPath } from './finetune-config.js';
import {
  checkClasses, emitRunStart, labelledLoader, loadEncoderWeights, onePass, openSession, resolveInit, topkHits, withSuffix,
  type DownstreamOptions, type DownstreamResult,
} from './session.js';

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
  const backend = await initBackend(config.runtime.backend, runtimeBackendOptions(config.runtime));
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

