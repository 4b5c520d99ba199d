/**
 * `runFinetune`: fine-tuning of a pre-trained encoder with a classification head, the reference recipe of spec §7:
 * layer-wise lr decay, AdamW (ConvNeXt) or LAMB without bias correction (ResNets), constant weight decay, warmup +
 * cosine lr, RandomResizedCrop + flip + TrivialAugmentWide (AutoAugment 'v0' from 384 px) + RandomErasing (in the data
 * workers), repeated augmentation for ConvNeXt and a drop-last sampler otherwise (floor(N / batch) steps per epoch),
 * mixup/CutMix with label smoothing, and an EMA of the weights evaluated next to the plain model. Checkpoints
 * (encoder + head, optimizer moments, EMA, step, evaluation results) are written atomically every
 * `output.checkpoint_every` steps, at the end and when interrupted; `resumeDir` continues a run exactly, because every
 * random draw is a pure function of (seed, step).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { EncoderSpec, ExperimentConfig } from '../spec/types.js';
import { loadExperiment } from '../spec/index.js';
import { initBackend, runtimeBackendOptions } from '../backend/init.js';
import { buildEncoder, type Encoder } from '../models/spark.js';
import { describeEncoder } from '../models/registry.js';
import type { Loader } from '../data/index.js';
import { epochOfStep, type RunStatus } from '../train/events.js';
import { AdamW, Lamb, buildParamGroups, type SparkOptimizer } from '../train/optimizers.js';
import { makeSchedule } from '../train/schedule.js';
import { RunFolder, assignVariables, freshTrainState, loadCheckpoint, resumeCommandFor, resolveRunPath, loadCheckpointExtra, loadOptimizerState, tensorToSafe, type TrainState } from '../train/checkpoint.js';
import { WeightEma } from '../train/ema.js';
import { encodeSafetensors, type SafeTensor } from '../util/safetensors.js';
import { Rng } from '../util/rng.js';
import { UsageError } from '../util/errors.js';
import {
  applyMix,
  checkClasses,
  emitRunStart,
  labelledLoader,
  loadEncoderWeights,
  onePass,
  openSession,
  planMix,
  resolveInit,
  softTargetLoss,
  topkHits,
  withSuffix,
  type DownstreamOptions,
  type DownstreamResult,
} from './session.js';
import { finetuneSection, recipeFor, resolveAutoAugment, resolveInitPath } from './finetune-config.js';
import { layerDecay } from './layer-decay.js';
import { commandHint } from '../util/hint.js';

export interface FinetuneOptions extends Omit<DownstreamOptions, 'config'> {
  /** The resolved configuration; optional when resuming (read from the run folder's config.yaml). */
  config?: ExperimentConfig;
  /** Continue the fine-tuning run in this folder from its checkpoint (`spark finetune --resume`). */
  resumeDir?: string;
  /** Test hook: called after every completed step. */
  onStep?: (step: number, loss: number) => void | Promise<void>;
}

export interface Accuracy {
  top1: number;
  top5: number;
}

export interface FinetuneResult extends DownstreamResult {
  /** Last evaluation of the EMA model (null without EMA). */
  emaTop1: number | null;
  emaTop5: number | null;
  /** The reported accuracy (spec §7.4): the max top-1 over every evaluation of both the plain and the EMA model. */
  bestTop1: number;
  /** Top-5 of that evaluation, and which model it was. */
  bestTop5: number;
  bestModel: 'plain' | 'ema' | null;
  /** `spark finetune --resume <dir>` when the run was interrupted. */
  resumeCommand?: string;
}

/** Evaluation results carried in the checkpoint (`state.taskState`), so a resumed run reports the same maxima. */
interface FinetuneTaskState {
  last: Accuracy;
  lastEma: Accuracy | null;
  best: Accuracy & { model: 'plain' | 'ema' | null; step: number };
  evaluations: number;
}

/** What run.json records of a fine-tuning run (needed to resume it). */
interface FinetuneRunInfo {
  init: string | null;
  encoder: EncoderSpec;
  /**
   * The plain sampler drops the last partial batch (floor(N / batch) steps per epoch). Absent in runs started before
   * spark had the drop-last sampler: those resume with the wrap-around sampler they started with (ceil(N / batch)).
   */
  dropLast?: boolean;
}

const EMA_FILE = 'ema.safetensors';
const testDelayMs = () => Number(process.env['SPARK_TEST_STEP_DELAY_MS'] ?? 0) || 0;

/** Top-1 / top-5 (percent) of several models on one ordered pass over the validation loader (eval mode). */
async function evaluate(models: Encoder[], val: Loader): Promise<Accuracy[]> {
  const hits = models.map(() => ({ top1: 0, top5: 0 }));
  const n = await onePass(val, (x, labels, count) => {
    models.forEach((m, i) => {
      const logits = m.classify(x, { training: false });
      const h = topkHits(logits, labels, count);
      logits.dispose();
      hits[i]!.top1 += h.top1;
      hits[i]!.top5 += h.top5;
    });
  });
  return hits.map((h) => ({ top1: (100 * h.top1) / Math.max(1, n), top5: (100 * h.top5) / Math.max(1, n) }));
}

/** Fine-tune (or resume fine-tuning) one encoder; see the module comment. */
export async function runFinetune(opts: FinetuneOptions): Promise<FinetuneResult> {
  // ---- configuration, run folder, weights to start from
  let config: ExperimentConfig;
  let init: string | null;
  let specPath = opts.specPath;
  let resumeFolder: RunFolder | undefined;
  let resumeState: TrainState | null = null;
  let encSpec: EncoderSpec;
  let dropLast = true;
  let tensors: Map<string, SafeTensor> | null = null;
  let resolvedYaml = opts.resolvedYaml;
  if (opts.resumeDir) {
    resumeFolder = await RunFolder.open(opts.resumeDir);
    const info = resumeFolder.readRunInfo();
    const ftInfo = info?.['finetune'] as FinetuneRunInfo | undefined;
    if (info?.['task'] !== 'finetune' || !ftInfo) throw new UsageError(`${opts.resumeDir}: not a fine-tuning run folder (run.json has no fine-tuning record); a pre-training run resumes with \`${commandHint(['run', '--resume', { path: opts.resumeDir }])}\``);
    config = opts.config ?? (await loadExperiment(resumeFolder.path('config.yaml'))).config;
    resolvedYaml = readFileSync(resumeFolder.path('config.yaml'), 'utf8');
    specPath = info.specPath ?? null;
    init = ftInfo.init;
    encSpec = ftInfo.encoder;
    dropLast = ftInfo.dropLast === true;
    if (resumeFolder.hasCheckpoint()) resumeState = (await loadCheckpoint(resumeFolder.checkpointDir)).state;
  } else {
    if (!opts.config) throw new UsageError('runFinetune: a config is required for a new run');
    config = withSuffix(opts.config, opts.nameSuffix);
    const given = opts.init !== undefined ? opts.init : resolveInitPath(finetuneSection(config).init, opts.specPath);
    // a folder of runs → its newest run now, so the run records (and a resume reloads) exactly these weights
    init = given ? resolveRunPath(given) : given;
    encSpec = config.model.encoder;
  }
  const ft = finetuneSection(config);
  if (!config.data.val_root) throw new UsageError('fine-tuning needs data.val_root (a labelled validation folder)');
  const backend = await initBackend(config.runtime.backend, runtimeBackendOptions(config.runtime));
  if (!resumeState) ({ encoder: encSpec, tensors } = await resolveInit({ ...config, model: { ...config.model, encoder: encSpec } }, init));
  const recipe = recipeFor(encSpec, config.data.input_size);
  const info = describeEncoder(encSpec);
  const seed = config.runtime.seed;
  if (resumeState && resumeState.seed !== seed) throw new UsageError(`${opts.resumeDir}: checkpoint seed ${resumeState.seed} differs from config seed ${seed}`);
  const sess = await openSession({ ...opts, config, specPath, ...(resolvedYaml ? { resolvedYaml } : {}) }, config, resumeFolder);
  if (!resumeFolder) await sess.folder.updateRunInfo({ finetune: { init, encoder: encSpec, dropLast } satisfies FinetuneRunInfo });
  const folder = sess.folder;
  const warn = (code: string, message: string) => sess.bus.emit({ type: 'warning', time: Date.now(), code, message });
  const startStep = resumeState?.step ?? 0;

  let train: Loader | null = null;
  let val: Loader | null = null;
  let enc: Encoder | null = null;
  let emaEnc: Encoder | null = null;
  let opt: SparkOptimizer | null = null;
  let status: RunStatus = 'FINISHED';
  let error: string | undefined;
  let step = startStep;
  let spe = 1;
  let task: FinetuneTaskState | null = null;
  try {
    const repeats = ft.repeated_aug ?? recipe.repeatedAug;
    // epochs: RepeatAugSampler (repeats > 1) or the drop-last sampler, both floor(N / batch) steps (at least 1)
    train = await labelledLoader(config, null, { augment: 'finetune', batchSize: config.train.batch_size, ft, runDir: folder.dir, warn, repeats, startStep, dropLast });
    val = await labelledLoader(config, config.data.val_root, { augment: 'eval', batchSize: config.train.batch_size, ft });
    checkClasses(train, val, config);
    const numClasses = ft.num_classes ?? train.classes!.length;
    const dropPath = config.model.drop_path ?? recipe.dropPath;
    enc = buildEncoder(encSpec, { seed, dropPath, numClasses });
    if (tensors) loadEncoderWeights(enc, tensors, init!);
    const ld = layerDecay(encSpec, ft.layer_decay ?? recipe.layerDecay);
    const groups = buildParamGroups(enc.params, { lrScale: (n) => ld.scale(ld.layerId(n)) });
    const kind = ft.optimizer === 'auto' ? recipe.optimizer : ft.optimizer;
    const betas: [number, number] = config.train.optimizer.betas ?? [0.9, 0.999];
    opt = kind === 'adamw' ? new AdamW(groups, { betas, eps: 1e-8 }) : new Lamb(groups, { betas, eps: 1e-6, biasCorrection: false, alwaysAdapt: true, maxGradNorm: 0 });
    const lossKind: 'ce' | 'bce' = kind === 'lamb' ? 'bce' : 'ce';
    spe = train.stepsPerEpoch;
    if (resumeState && resumeState.stepsPerEpoch !== spe) {
      warn('steps-per-epoch-changed', `the checkpoint was written with ${resumeState.stepsPerEpoch} steps per epoch, the data now gives ${spe} (${train.numImages} images, batch ${config.train.batch_size}): the schedule and the epoch boundaries change from here on`);
    }
    const schedule = makeSchedule({ ...config.train, accumulate: 1, optimizer: { ...config.train.optimizer, weight_decay_end: config.train.optimizer.weight_decay } }, spe);
    const total = schedule.maxIters;
    const mix = { mixup: ft.mixup ?? recipe.mixup, cutmix: ft.cutmix, mix_prob: ft.mix_prob, switch_prob: ft.switch_prob };
    const emaDecay = ft.ema ?? recipe.emaDecay;
    // The EMA starts from the weights this run starts from (the reference creates it before loading the pre-trained
    // checkpoint, i.e. from the random init, spec §7.5); a resumed run restores it from the checkpoint below.
    let ema: WeightEma | null = null;
    if (emaDecay > 0) {
      emaEnc = buildEncoder(encSpec, { seed, dropPath: 0, numClasses });
      ema = new WeightEma(emaDecay, enc, emaEnc);
    }

    let state: TrainState;
    if (resumeState) {
      const ck = await loadCheckpoint(folder.checkpointDir);
      assignVariables(enc.params, ck.params, ck.file);
      assignVariables(enc.buffers, ck.buffers, ck.file);
      try {
        opt.setState({ groupSteps: resumeState.optimizer.groupSteps, tensors: await loadOptimizerState(folder.dir) });
      } catch (e) {
        throw new UsageError(`${folder.dir}: ${(e as Error).message}`);
      }
      if (ema) {
        const saved = await loadCheckpointExtra(folder.dir, EMA_FILE);
        if (saved) ema.load(saved, path.join(folder.checkpointDir, EMA_FILE));
        else {
          ema.copyFromSource();
          warn('ema-missing', `the checkpoint has no ${EMA_FILE}: the EMA restarts from the checkpoint's weights`);
        }
      }
      state = { ...resumeState, totalSteps: total, stepsPerEpoch: spe, backend: backend.name };
    } else {
      const task: FinetuneTaskState = { last: { top1: 0, top5: 0 }, lastEma: null, best: { top1: 0, top5: 0, model: null, step: 0 }, evaluations: 0 };
      state = freshTrainState({
        seed: config.runtime.seed,
        totalSteps: total,
        stepsPerEpoch: spe,
        optimizer: kind,
        backend: backend.name,
        encoder: info.name,
        taskState: task as unknown as Record<string, unknown>,
      });
    }
    task = state.taskState as unknown as FinetuneTaskState;

    emitRunStart(sess, config, specPath, info.name, backend.name, total, spe, startStep);
    const autoAugment = resolveAutoAugment(ft.auto_augment, config.data.input_size);
    const what = [
      `${kind}${kind === 'lamb' ? ' (no bias correction, trust ratio on all groups)' : ''}`,
      `layer decay ${ft.layer_decay ?? recipe.layerDecay}`,
      `mixup ${mix.mixup}, cutmix ${mix.cutmix}, label smoothing ${ft.label_smoothing}`,
      `${autoAugment ?? 'no auto-augment'}${ft.auto_augment === 'auto' && autoAugment ? ` (auto at ${config.data.input_size} px)` : ''}, random erasing ${ft.random_erasing}`,
      repeats > 1 ? `repeated augmentation ×${repeats}` : `${dropLast ? 'drop-last' : 'wrap-around'} sampler, ${spe} steps per epoch`,
      `EMA ${ema ? emaDecay : 'off'}`,
      `drop path ${dropPath}`,
      `${numClasses} classes`,
    ].join(', ');
    const from = resumeState ? `resumed at step ${startStep}` : `from ${init ?? 'random init'}`;
    sess.bus.emit({ type: 'log', time: Date.now(), level: 'info', message: `fine-tuning ${info.name} ${from}: ${what}` });

    const trainable = [...enc.params.values()];
    const names = [...enc.params.keys()];
    let lastCkptStep = resumeState ? startStep : -1;
    const segmentStart = Date.now();
    const secondsBefore = state.trainSeconds;
    const saveCheckpoint = async (): Promise<void> => {
      state.step = step;
      state.epoch = Math.floor(step / spe);
      state.dataPosition = { iteration: step, epoch: Math.floor(step / spe), indexInEpoch: step % spe };
      const os = opt!.getState();
      state.optimizer = { kind: opt!.kind, groupSteps: os.groupSteps };
      state.savedAt = new Date().toISOString();
      state.trainSeconds = secondsBefore + (Date.now() - segmentStart) / 1000;
      state.taskState = task as unknown as Record<string, unknown>;
      const extra = new Map<string, { tensors: Map<string, SafeTensor>; metadata?: Record<string, string> }>();
      if (ema) extra.set(EMA_FILE, { tensors: await ema.state(), metadata: { format: 'spark-ema/1', decay: String(ema.decay), step: String(step) } });
      const dir = await folder.writeCheckpoint({ params: enc!.params, buffers: enc!.buffers, optimizer: { tensors: os.tensors }, state, extra });
      lastCkptStep = step;
      sess.bus.emit({ type: 'checkpoint', time: Date.now(), step, epoch: epochOfStep(step, spe), path: dir });
    };

    let t0 = Date.now();
    let epochStart = Date.now();
    for (let it = startStep; it < total; it++) {
      if (sess.stop.signal.aborted) {
        status = 'KILLED';
        if (lastCkptStep !== step) await saveCheckpoint();
        break;
      }
      let b = await train.next();
      if (b.step !== it) {
        train.seek(it);
        b = await train.next();
      }
      const { lr, wd } = schedule.at(it);
      const plan = planMix(Rng.from(seed, 'mix', it), mix, b.size);
      const rng = Rng.from(seed, 'droppath', it);
      const e = enc;
      const o = opt;
      const { loss, gradNorm } = tf.tidy(() => {
        const x = tf.tensor4d(b.images, [b.batchSize, b.size, b.size, 3]);
        const mixed = applyMix(x, b.labels!, numClasses, ft.label_smoothing, plan);
        const { value, grads } = tf.variableGrads(() => softTargetLoss(e.classify(mixed.x, { training: true, rng }), mixed.y, lossKind), trainable);
        const gm = new Map<string, tf.Tensor>();
        for (let i = 0; i < names.length; i++) {
          const g = grads[trainable[i]!.name];
          if (g) gm.set(names[i]!, g);
        }
        const gradNorm = o.apply(gm, { lr, wd });
        return { loss: value.dataSync()[0]!, gradNorm };
      });
      if (!Number.isFinite(loss)) {
        status = 'FAILED';
        error = `training diverged at step ${it + 1}: loss is ${loss}${lastCkptStep >= 0 ? `; the last good checkpoint (step ${lastCkptStep}) is kept` : ''}`;
        break;
      }
      ema?.update();
      step = it + 1;
      state.step = step;
      state.lastLoss = loss;
      state.minLoss = state.minLoss === null ? loss : Math.min(state.minLoss, loss);
      state.epochLosses.push(loss);
      state.lossTail.push([step, loss]);
      if (state.lossTail.length > 200) state.lossTail.splice(0, state.lossTail.length - 200);
      const now = Date.now();
      {
        const secs = Math.max(1e-6, (now - t0) / 1000);
        const mem = tf.memory();
        sess.bus.emit({ type: 'step', time: now, step, epoch: Math.floor(it / spe) + 1, epochStep: (it % spe) + 1, loss, lr, wd, gradNorm, imgPerSec: b.batchSize / secs, etaSec: (total - step) * secs, memory: { numTensors: mem.numTensors, numBytes: mem.numBytes, rssBytes: process.memoryUsage().rss } });
      }
      t0 = now;
      if (step % spe === 0 || step === total) {
        const epoch = Math.ceil(step / spe);
        const losses = state.epochLosses;
        sess.bus.emit({ type: 'epoch', time: now, epoch, step, meanLoss: losses.reduce((a, c) => a + c, 0) / Math.max(1, losses.length), minLoss: Math.min(...losses), seconds: (now - epochStart) / 1000, steps: step % spe === 0 ? spe : step % spe, ...(step % spe !== 0 ? { partial: true } : {}) });
        state.epochLosses = [];
        epochStart = now;
        if (epoch % ft.eval_every === 0 || step === total) {
          const [plain, avg] = await evaluate(emaEnc ? [enc, emaEnc] : [enc], val);
          task.last = plain!;
          task.lastEma = avg ?? null;
          task.evaluations++;
          for (const [acc, model] of [[plain!, 'plain'], [avg, 'ema']] as const) {
            if (acc && (task.best.model === null || acc.top1 > task.best.top1)) task.best = { ...acc, model, step };
          }
          sess.bus.emit({
            type: 'metrics',
            time: Date.now(),
            step,
            epoch,
            metrics: { val_top1: plain!.top1, val_top5: plain!.top5, ...(avg ? { val_ema_top1: avg.top1, val_ema_top5: avg.top5 } : {}), val_best_top1: task.best.top1, val_best_top5: task.best.top5 },
          });
        }
      }
      if ((config.output.checkpoint_every > 0 && step % config.output.checkpoint_every === 0) || step === total) await saveCheckpoint();
      if (opts.onStep) await opts.onStep(step, loss);
      const delay = testDelayMs();
      await new Promise<void>((r) => (delay > 0 ? setTimeout(r, delay) : setImmediate(r)));
    }
    if (status === 'FINISHED' && lastCkptStep !== step) await saveCheckpoint(); // a run resumed at its end
    if (status === 'FINISHED') {
      // final weights: encoder + head (and the EMA), reference names, TF layouts
      const meta = { format: 'spark-classifier/1', encoder: info.name, num_classes: String(numClasses), buffers: JSON.stringify([...enc.buffers.keys()]), step: String(step) };
      for (const [file, m] of [['model.safetensors', enc], ['model-ema.safetensors', emaEnc]] as const) {
        if (!m) continue;
        const out = new Map<string, SafeTensor>();
        for (const vars of [m.params, m.buffers]) for (const [n, v] of vars) out.set(n, await tensorToSafe(v));
        await folder.writeFile(file, encodeSafetensors(out, { ...meta, ...(m === emaEnc ? { ema_decay: String(emaDecay) } : {}) }));
      }
    }
    await folder.writeJson('metrics.json', { task: 'finetune', status, init, encoder: info.name, steps: step, numClasses, last: task.last, lastEma: task.lastEma, best: task.best, evaluations: task.evaluations });
    const resumeCommand = status === 'KILLED' ? resumeCommandFor('finetune', folder.dir) : undefined;
    sess.bus.emit({ type: 'run-end', time: Date.now(), status, step, epoch: epochOfStep(step, spe), finalLoss: state.lastLoss, ...(error ? { error } : {}), ...(resumeCommand ? { resumeCommand } : {}) });
    return {
      status,
      runDir: folder.dir,
      task: 'finetune',
      init,
      encoder: info.name,
      numClasses,
      top1: task.last.top1,
      top5: task.last.top5,
      emaTop1: task.lastEma?.top1 ?? null,
      emaTop5: task.lastEma?.top5 ?? null,
      bestTop1: task.best.top1,
      bestTop5: task.best.top5,
      bestModel: task.best.model,
      trainTop1: null,
      steps: step,
      ...(sess.tracker?.runId ? { mlflowRunId: sess.tracker.runId } : {}),
      ...(error ? { error } : {}),
      ...(resumeCommand ? { resumeCommand } : {}),
    };
  } catch (e) {
    sess.bus.emit({ type: 'run-end', time: Date.now(), status: 'FAILED', step, epoch: epochOfStep(step, spe), finalLoss: null, error: (e as Error).message });
    throw e;
  } finally {
    await sess.close().catch(() => undefined);
    await train?.close().catch(() => undefined);
    await val?.close().catch(() => undefined);
    opt?.dispose();
    enc?.dispose();
    emaEnc?.dispose();
  }
}
