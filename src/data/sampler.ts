/**
 * Single-process `DistInfiniteBatchSampler` (spec §6.1, SparK `pretrain/sampler.py`): each epoch is a shuffled
 * permutation of the N images; an epoch has ceil(N / B) iterations, and the permutation is extended with its own
 * beginning ("filling" by wrapping around) so every batch is full. Epoch e's permutation comes from
 * `Rng.from(seed, 'epoch', e)`, so the batch of global step s is a pure function of (seed, s) and resume is exact.
 *
 * With `dropLast` it is instead the fine-tuning sampler of the ResNet recipe (spec §7.4: a plain
 * `DistributedSampler(drop_last=True)` under a DataLoader that drops the last partial batch, in one process): an epoch
 * is floor(N / B) full batches taken in order from the epoch's permutation, the N mod B images left over are not
 * seen that epoch (the next epoch is a fresh permutation). When N < B the epoch is one batch, filled by wrapping
 * around the permutation as above (so every image is seen and some twice) rather than no batch at all.
 */
import { Rng } from '../util/rng.js';

export interface StepSlots {
  /** Global step (0-based). */
  step: number;
  /** Epoch (0-based) = floor(step / stepsPerEpoch). */
  epoch: number;
  /** Positions in the epoch's extended order, [stepInEpoch·B, stepInEpoch·B + B). */
  positions: number[];
  /** Dataset index at each position (order[position mod N]). */
  indices: number[];
  /** How many leading entries are first visits in this epoch (the rest are wrap-around fill). */
  fresh: number;
}

/** What the loader needs of a sampler: the slots of a step and the index at any position of an epoch's order. */
export interface BatchSampler {
  readonly stepsPerEpoch: number;
  readonly batchSize: number;
  /** Positions after which an epoch's extended order repeats (skipped files look this far ahead at most). */
  readonly cycle: number;
  slots(step: number): StepSlots;
  indexAt(epoch: number, position: number): number;
}

export interface EpochSamplerOptions {
  /** floor(N / B) steps per epoch (at least 1), the remainder dropped; default false = ceil(N / B) with wrap fill. */
  dropLast?: boolean;
}

/** Steps per epoch of the plain sampler: ceil(N / B), or max(1, floor(N / B)) when the last partial batch is dropped. */
export function epochSteps(numItems: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.max(1, Math.floor(numItems / batchSize)) : Math.ceil(numItems / batchSize);
}

/**
 * The epoch permutations of N items, `Rng.from(seed, 'epoch', e)` (identity when shuffle is off), cached for the
 * epochs around the last one asked for (prefetch crosses epoch boundaries).
 */
export class EpochOrders {
  private cache = new Map<number, Int32Array>();

  constructor(
    readonly numItems: number,
    readonly seed: number,
    readonly shuffle: boolean,
  ) {}

  get(epoch: number): Int32Array {
    let o = this.cache.get(epoch);
    if (!o) {
      o = this.shuffle ? Int32Array.from(Rng.from(this.seed, 'epoch', epoch).permutation(this.numItems)) : Int32Array.from({ length: this.numItems }, (_, i) => i);
      this.cache.set(epoch, o);
      for (const k of this.cache.keys()) if (k < epoch - 1 || k > epoch + 1) this.cache.delete(k);
    }
    return o;
  }
}

export class EpochBatchSampler implements BatchSampler {
  readonly stepsPerEpoch: number;
  readonly dropLast: boolean;
  private readonly orders: EpochOrders;

  constructor(
    readonly numItems: number,
    readonly batchSize: number,
    readonly seed: number,
    readonly shuffle = true,
    opts: EpochSamplerOptions = {},
  ) {
    if (!Number.isInteger(numItems) || numItems < 1) throw new RangeError(`sampler: need at least one item, got ${numItems}`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`sampler: batch size must be a positive integer, got ${batchSize}`);
    this.dropLast = opts.dropLast ?? false;
    this.orders = new EpochOrders(numItems, seed, shuffle);
    this.stepsPerEpoch = epochSteps(numItems, batchSize, this.dropLast);
  }

  get cycle(): number {
    return this.numItems;
  }

  /** The epoch's order of dataset indices (a permutation of 0..N-1; identity when shuffle is off). */
  order(epoch: number): Int32Array {
    return this.orders.get(epoch);
  }

  /** Dataset index at `position` of the epoch's extended order (positions ≥ N wrap to the start). */
  indexAt(epoch: number, position: number): number {
    return this.order(epoch)[position % this.numItems]!;
  }

  slots(step: number): StepSlots {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`sampler: step must be a non-negative integer, got ${step}`);
    const epoch = Math.floor(step / this.stepsPerEpoch);
    const first = (step - epoch * this.stepsPerEpoch) * this.batchSize;
    const order = this.order(epoch);
    const positions: number[] = [];
    const indices: number[] = [];
    for (let k = 0; k < this.batchSize; k++) {
      positions.push(first + k);
      indices.push(order[(first + k) % this.numItems]!);
    }
    const fresh = Math.max(0, Math.min(this.batchSize, this.numItems - first));
    return { step, epoch, positions, indices, fresh };
  }
}
