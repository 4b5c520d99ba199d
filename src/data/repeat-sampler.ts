/**
 * Repeated augmentation (spec §7.4, ConvNeXt fine-tuning): a single-process version of timm's `RepeatAugSampler`.
 *
 * timm, per epoch: a permutation of the N images (seeded by the epoch), each index repeated `num_repeats` times in a
 * row ([a, a, a, b, b, b, …]), dealt round-robin to the ranks, and each rank keeps its first
 * floor(N / 256)·256 / world samples. So an "epoch" is about N samples in total but only about N / num_repeats
 * distinct images, each seen num_repeats times with independent augmentations.
 *
 * Here there is one rank, and the rounding unit is the batch size instead of timm's fixed 256 (so small datasets
 * have at least one step): an epoch has max(1, floor(N / B)) steps of B samples, taken in order from the epoch's
 * repeated list (the epoch permutation of `EpochBatchSampler`, `Rng.from(seed, 'epoch', e)`). Every slot has its own
 * augmentation draw (`Rng.from(seed, 'aug', epoch, position)`), so the copies of an image differ. The copies of one
 * image sit next to each other and mostly share a batch (with several ranks, timm spreads them over the ranks'
 * batches of the same step, so in both cases they are in the same global batch).
 */
import { EpochOrders, type BatchSampler, type StepSlots } from './sampler.js';

export class RepeatAugBatchSampler implements BatchSampler {
  readonly stepsPerEpoch: number;
  private readonly orders: EpochOrders;

  constructor(
    readonly numItems: number,
    readonly batchSize: number,
    readonly seed: number,
    readonly repeats: number,
    readonly shuffle = true,
  ) {
    if (!Number.isInteger(numItems) || numItems < 1) throw new RangeError(`sampler: need at least one item, got ${numItems}`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`sampler: batch size must be a positive integer, got ${batchSize}`);
    if (!Number.isInteger(repeats) || repeats < 1) throw new RangeError(`sampler: repeats must be a positive integer, got ${repeats}`);
    this.stepsPerEpoch = Math.max(1, Math.floor(numItems / batchSize));
    this.orders = new EpochOrders(numItems, seed, shuffle);
  }

  /** N · repeats: the repeated list's length (positions beyond it wrap to its start). */
  get cycle(): number {
    return this.numItems * this.repeats;
  }

  /** The epoch's permutation of 0..N-1 (the same as `EpochBatchSampler.order`). */
  order(epoch: number): Int32Array {
    return this.orders.get(epoch);
  }

  /** Dataset index at `position` of the epoch's repeated list: order[floor(position / repeats)], wrapping. */
  indexAt(epoch: number, position: number): number {
    return this.order(epoch)[Math.floor((position % this.cycle) / this.repeats)]!;
  }

  slots(step: number): StepSlots {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`sampler: step must be a non-negative integer, got ${step}`);
    const epoch = Math.floor(step / this.stepsPerEpoch);
    const first = (step - epoch * this.stepsPerEpoch) * this.batchSize;
    const positions: number[] = [];
    const indices: number[] = [];
    for (let k = 0; k < this.batchSize; k++) {
      positions.push(first + k);
      indices.push(this.indexAt(epoch, first + k));
    }
    return { step, epoch, positions, indices, fresh: this.batchSize };
  }
}
