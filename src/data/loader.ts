/**
 * The data loader: a sampler (pure function of (seed, step)) + decoding on a worker pool (or the main thread) +
 * a bounded prefetch window of batches. Unreadable files are skipped deterministically (the slot takes the next
 * readable image of the epoch order, with the slot's own augmentation draw), reported once through `onWarning`
 * and listed in `<runDir>/skipped-files.txt`.
 */
import os from 'node:os';
import path from 'node:path';
import type { DataConfig } from '../spec/types.js';
import { DataError } from '../util/errors.js';
import { atomicWriteFile } from '../util/atomic.js';
import { scanImageFolder } from './imagefolder.js';
import { EpochBatchSampler, type BatchSampler } from './sampler.js';
import { RepeatAugBatchSampler } from './repeat-sampler.js';
import { DecodePool } from './pool.js';
import { runTask, type DecodeTask, type TaskResult } from './tasks.js';
import { SYNTHETIC_MAX_CLASSES, syntheticLabel } from './synthetic.js';
import type { AutoAugment } from './augment.js';

export type AugmentMode = 'pretrain' | 'finetune' | 'eval';

export interface LoaderOptions {
  batchSize: number;
  /** runtime.seed: drives the epoch permutations, the augmentations and the synthetic images. */
  seed: number;
  /** 'pretrain': RandomResizedCrop(data.crop_scale, data.crop_ratio, bicubic) + flip; 'finetune': the same with
   * scale (0.08, 1); 'eval': resize shorter side + center crop, no flip, no shuffle. */
  augment: AugmentMode;
  /** First global step `next()` returns (resume). Default 0. */
  startStep?: number;
  /** Run folder: `skipped-files.txt` is written there. */
  runDir?: string;
  /** Called once per batch that found new unreadable files (code 'skipped-files'). */
  onWarning?: (code: string, message: string) => void;
  /** Return class labels (ImageNet layout, or the labelled synthetic variant). */
  withLabels?: boolean;
  /** Folder to read instead of `cfg.root` (e.g. `cfg.val_root`). */
  root?: string;
  /** Shuffle each epoch; default true, false for 'eval'. */
  shuffle?: boolean;
  /** 'finetune' crop scale range; default [0.08, 1]. */
  cropScale?: [number, number];
  /** 'eval' resize: shorter side = floor(size / cropPct) (default 1) with this resampling (default 'bilinear'). */
  cropPct?: number;
  interpolation?: 'bilinear' | 'bicubic';
  /** Classes of the labelled synthetic variant (withLabels with source 'synthetic'); default 10. */
  syntheticClasses?: number;
  /** Train modes: TrivialAugmentWide or AutoAugment 'v0' after crop and flip (the fine-tuning recipe, spec §7.4); default none. */
  autoAugment?: AutoAugment;
  /** Train modes: RandomErasing probability after normalisation (timm mode 'pixel', one box); default 0. */
  randomErasing?: number;
  /**
   * Repeated augmentation (timm RepeatAugSampler, see repeat-sampler.ts): each selected image appears this many times
   * per epoch with independent augmentations, and an epoch is floor(N / batch) full batches. 0 or 1 = the plain
   * sampler (every image at most once per epoch, see `dropLast`).
   */
  repeats?: number;
  /**
   * The plain sampler drops the last partial batch: an epoch is max(1, floor(N / batch)) full batches of the epoch's
   * permutation (the ResNet fine-tuning recipe, `DistributedSampler(drop_last=True)`, spec §7.4); when N < batch the
   * one batch wraps around. false = ceil(N / batch) steps, the last batch filled by wrapping around (pre-training,
   * spec §6.1). Default: true for 'finetune', false otherwise (eval always false).
   */
  dropLast?: boolean;
}

export interface Batch {
  /** Global step (0-based) this batch is for. */
  step: number;
  /** Epoch (0-based) = floor(step / stepsPerEpoch). */
  epoch: number;
  /** B·H·W·3 normalised NHWC. */
  images: Float32Array;
  batchSize: number;
  /** H = W = input size. */
  size: number;
  /** Dataset index of each image (after skipped-file replacement). */
  indices: number[];
  labels: Int32Array | null;
  /** Leading entries that are first visits of the epoch; the rest are wrap-around fill (a last or only batch). */
  fresh: number;
}

export interface SkippedFile {
  /** Absolute path of the unreadable file. */
  path: string;
  /** Dataset index. */
  index: number;
  reason: string;
}

export interface Loader {
  numImages: number;
  stepsPerEpoch: number;
  classes: string[] | null;
  batchSize: number;
  inputSize: number;
  /** The batch for the current step; then advances one step. */
  next(): Promise<Batch>;
  /** Make the next `next()` return the batch of global step `step` (drops prefetched work). */
  seek(step: number): void;
  /** Terminate workers; later `next()` calls reject. */
  close(): Promise<void>;
  /** Files skipped so far, sorted by dataset index. */
  skipped(): SkippedFile[];
}

interface Executor {
  run(task: DecodeTask, front?: boolean): Promise<TaskResult>;
  close(): Promise<void>;
}

/** Main-thread decoding (data.workers = 0): sharp still runs on libuv threads, a few images at a time. */
class InlineExecutor implements Executor {
  private active = 0;
  private queue: Array<() => void> = [];
  private closed = false;
  constructor(private readonly concurrency: number) {}
  run(task: DecodeTask, front = false): Promise<TaskResult> {
    if (this.closed) return Promise.reject(new Error('data loader is closed'));
    return new Promise<TaskResult>((resolve, reject) => {
      const go = () => {
        if (this.closed) return reject(new Error('data loader is closed'));
        this.active++;
        runTask(task)
          .then(resolve, reject)
          .finally(() => {
            this.active--;
            const nxt = this.queue.shift();
            if (nxt) nxt();
          });
      };
      if (this.active < this.concurrency) go();
      else if (front) this.queue.unshift(go);
      else this.queue.push(go);
    });
  }
  async close(): Promise<void> {
    this.closed = true;
    const q = this.queue;
    this.queue = [];
    for (const go of q) go(); // each rejects: closed
  }
}

interface Dataset {
  n: number;
  classes: string[] | null;
  label(index: number): number;
  hasLabels: boolean;
  task(index: number, epoch: number, position: number): DecodeTask;
  describe(index: number): string;
  rootLabel: string;
}

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new DataError(`${name} must be an integer ≥ ${min}, got ${v}`);
}

function makeDataset(cfg: DataConfig, opts: LoaderOptions): Dataset {
  const size = cfg.input_size;
  const mode = opts.augment;
  const autoAugment: AutoAugment = mode === 'eval' ? null : (opts.autoAugment ?? null);
  const randomErasing = mode === 'eval' ? 0 : (opts.randomErasing ?? 0);
  const scale: [number, number] = mode === 'finetune' ? (opts.cropScale ?? [0.08, 1]) : [cfg.crop_scale[0], cfg.crop_scale[1]];
  const ratio: [number, number] = [cfg.crop_ratio[0], cfg.crop_ratio[1]];
  if (cfg.source === 'synthetic') {
    const n = cfg.synthetic_size;
    checkInt('data.synthetic_size', n, 1);
    const numClasses = opts.withLabels ? (opts.syntheticClasses ?? 10) : 0;
    if (opts.withLabels && !(Number.isInteger(numClasses) && numClasses >= 1 && numClasses <= SYNTHETIC_MAX_CLASSES)) {
      throw new DataError(`synthetic labelled data supports 1..${SYNTHETIC_MAX_CLASSES} classes, got ${numClasses}`);
    }
    return {
      n,
      classes: numClasses > 0 ? Array.from({ length: numClasses }, (_, c) => `class_${String(c).padStart(2, '0')}`) : null,
      hasLabels: numClasses > 0,
      label: (i) => syntheticLabel(i, numClasses),
      task: (index, epoch, position) => ({
        kind: 'synthetic',
        seed: opts.seed,
        index,
        size,
        numClasses,
        hflip: mode === 'eval' ? 0 : cfg.hflip,
        autoAugment,
        randomErasing,
        augSeed: opts.seed,
        epoch,
        position,
      }),
      describe: (i) => `synthetic image ${i}`,
      rootLabel: 'synthetic',
    };
  }
  const root = opts.root ?? cfg.root;
  if (!root) throw new DataError(`data.root is required when data.source is 'imagefolder'`);
  const folder = scanImageFolder(root);
  if (opts.withLabels && !folder.labels) {
    throw new DataError(`data.root '${root}' is a flat folder of images, but labels were requested (use root/<class>/<image> folders)`);
  }
  const abs = folder.files.map((f) => path.join(folder.root, f));
  const labels = folder.labels;
  return {
    n: abs.length,
    classes: folder.classes,
    hasLabels: !!labels,
    label: (i) => (labels ? labels[i]! : -1),
    task: (index, epoch, position) =>
      mode === 'eval'
        ? { kind: 'eval', path: abs[index]!, size, cropPct: opts.cropPct ?? 1, interpolation: opts.interpolation ?? 'bilinear' }
        : { kind: 'train', path: abs[index]!, size, scale, ratio, hflip: cfg.hflip, autoAugment, randomErasing, seed: opts.seed, epoch, position },
    describe: (i) => abs[i]!,
    rootLabel: root,
  };
}

class DataLoader implements Loader {
  readonly numImages: number;
  readonly stepsPerEpoch: number;
  readonly classes: string[] | null;
  readonly batchSize: number;
  readonly inputSize: number;
  private cursor: number;
  private pending = new Map<number, Promise<Batch>>();
  private bad = new Map<number, string>();
  private reportChain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly ds: Dataset,
    private readonly sampler: BatchSampler,
    private readonly exec: Executor,
    private readonly prefetch: number,
    private readonly opts: LoaderOptions,
    inputSize: number,
  ) {
    this.numImages = ds.n;
    this.stepsPerEpoch = sampler.stepsPerEpoch;
    this.classes = ds.classes;
    this.batchSize = sampler.batchSize;
    this.inputSize = inputSize;
    this.cursor = opts.startStep ?? 0;
    this.fill();
  }

  next(): Promise<Batch> {
    if (this.closed) return Promise.reject(new Error('data loader is closed'));
    const s = this.cursor;
    this.fill();
    const p = this.pending.get(s)!;
    this.pending.delete(s);
    this.cursor = s + 1;
    this.fill();
    return p;
  }

  seek(step: number): void {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`seek: step must be a non-negative integer, got ${step}`);
    this.pending.clear(); // in-flight work finishes and is dropped
    this.cursor = step;
    if (!this.closed) this.fill();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pending.clear();
    await this.exec.close();
    await this.reportChain;
  }

  skipped(): SkippedFile[] {
    return [...this.bad.entries()].sort((a, b) => a[0] - b[0]).map(([index, reason]) => ({ path: this.ds.describe(index), index, reason }));
  }

  /** Start the batches of [cursor, cursor + prefetch]. */
  private fill(): void {
    for (let s = this.cursor; s <= this.cursor + this.prefetch; s++) {
      if (!this.pending.has(s)) {
        const p = this.build(s);
        p.catch(() => {}); // a dropped prefetch must not become an unhandled rejection
        this.pending.set(s, p);
      }
    }
  }

  private allFailed(): DataError {
    const [i, reason] = this.bad.entries().next().value ?? [0, 'unknown'];
    return new DataError(
      `all ${this.ds.n} images under data.root '${this.ds.rootLabel}' are unreadable (e.g. '${this.ds.describe(i)}': ${reason})`,
    );
  }

  private async build(step: number): Promise<Batch> {
    const sl = this.sampler.slots(step);
    const size = this.inputSize;
    const per = size * size * 3;
    const B = this.batchSize;
    const images = new Float32Array(B * per);
    const indices = new Array<number>(B);
    const found: number[] = [];
    const n = this.ds.n;
    await Promise.all(
      sl.positions.map(async (pos, k) => {
        for (let t = 0; ; t++) {
          if (t >= this.sampler.cycle || this.bad.size >= n) throw this.allFailed();
          const idx = this.sampler.indexAt(sl.epoch, pos + t);
          if (this.bad.has(idx)) continue;
          const r = await this.exec.run(this.ds.task(idx, sl.epoch, pos), t > 0);
          if (r.ok) {
            if (r.data.length !== per) throw new Error(`internal: decoded ${r.data.length} values, expected ${per}`);
            images.set(r.data, k * per);
            indices[k] = idx;
            return;
          }
          if (!this.bad.has(idx)) {
            this.bad.set(idx, r.error);
            found.push(idx);
          }
        }
      }),
    );
    if (found.length > 0) await this.report(found);
    let labels: Int32Array | null = null;
    if (this.opts.withLabels && this.ds.hasLabels) labels = Int32Array.from(indices, (i) => this.ds.label(i));
    return { step, epoch: sl.epoch, images, batchSize: B, size, indices, labels, fresh: sl.fresh };
  }

  private report(found: number[]): Promise<void> {
    const task = async () => {
      found.sort((a, b) => a - b);
      const list = this.skipped();
      let where = '';
      if (this.opts.runDir) {
        const file = path.join(this.opts.runDir, 'skipped-files.txt');
        try {
          await atomicWriteFile(file, list.map((f) => `${f.path}\t${f.reason}`).join('\n') + '\n');
          where = `, listed in ${file}`;
        } catch (e) {
          where = ` (could not write ${file}: ${(e as Error).message})`;
        }
      }
      const shown = found.slice(0, 5).map((i) => `'${this.ds.describe(i)}' (${this.bad.get(i)})`);
      const more = found.length > 5 ? ` and ${found.length - 5} more` : '';
      const msg = `skipped ${found.length} unreadable image file${found.length === 1 ? '' : 's'}: ${shown.join(', ')}${more}; ${list.length} skipped so far${where}`;
      if (this.closed) return; // a dropped prefetch after close: the list above is still complete
      try {
        this.opts.onWarning?.('skipped-files', msg);
      } catch {
        // a failing listener must not stop the data pipeline
      }
    };
    this.reportChain = this.reportChain.then(task, task);
    return this.reportChain;
  }
}

/** Create the loader of one run (see `Loader`); validates the dataset (DataError) before any decoding. */
export async function createLoader(cfg: DataConfig, opts: LoaderOptions): Promise<Loader> {
  checkInt('batch size', opts.batchSize, 1);
  checkInt('data.input_size', cfg.input_size, 1);
  checkInt('data.workers', cfg.workers, 0);
  checkInt('data.prefetch', cfg.prefetch, 0);
  if (opts.startStep !== undefined) checkInt('startStep', opts.startStep, 0);
  const ds = makeDataset(cfg, opts);
  if (opts.repeats !== undefined) checkInt('repeats', opts.repeats, 0);
  const shuffle = opts.shuffle ?? opts.augment !== 'eval';
  const repeats = opts.augment === 'eval' ? 1 : (opts.repeats ?? 1);
  const dropLast = opts.augment === 'eval' ? false : (opts.dropLast ?? opts.augment === 'finetune');
  const sampler: BatchSampler =
    repeats > 1 ? new RepeatAugBatchSampler(ds.n, opts.batchSize, opts.seed, repeats, shuffle) : new EpochBatchSampler(ds.n, opts.batchSize, opts.seed, shuffle, { dropLast });
  const exec: Executor =
    cfg.workers > 0 ? new DecodePool(cfg.workers) : new InlineExecutor(Math.max(2, Math.min(8, os.availableParallelism())));
  return new DataLoader(ds, sampler, exec, cfg.prefetch, opts, cfg.input_size);
}
