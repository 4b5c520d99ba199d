import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EpochBatchSampler, RepeatAugBatchSampler, epochSteps } from '../src/data/index.js';

test('sampler: ceil(N/B) steps per epoch, full batches, wrap fill from the same epoch order', () => {
  const s = new EpochBatchSampler(10, 4, 123);
  assert.equal(s.stepsPerEpoch, 3);
  const order = [...s.order(0)];
  assert.deepEqual([...order].sort((a, b) => a - b), [...Array(10).keys()]);
  const got = [0, 1, 2].map((k) => s.slots(k));
  assert.deepEqual(got.flatMap((x) => x.indices), [...order, order[0], order[1]]);
  assert.deepEqual(got.map((x) => x.fresh), [4, 4, 2]);
  assert.deepEqual(got[2]!.positions, [8, 9, 10, 11]);
  assert.equal(s.slots(3).epoch, 1);
  assert.deepEqual(s.slots(3).indices, [...s.order(1)].slice(0, 4));
  assert.notDeepEqual([...s.order(1)], order);
});

test('sampler: pure function of (seed, step), independent of the order of queries; shuffle off = identity', () => {
  const a = new EpochBatchSampler(1000, 64, 7);
  const b = new EpochBatchSampler(1000, 64, 7);
  const late = b.slots(50);
  for (let k = 0; k < 51; k++) a.slots(k);
  assert.deepEqual(a.slots(50), late);
  assert.notDeepEqual(new EpochBatchSampler(1000, 64, 8).slots(0).indices, a.slots(0).indices);
  const id = new EpochBatchSampler(5, 2, 7, false);
  assert.deepEqual([0, 1, 2, 3].map((k) => id.slots(k).indices), [[0, 1], [2, 3], [4, 0], [0, 1]]);
  // batch larger than the dataset still fills by wrapping
  assert.deepEqual(new EpochBatchSampler(3, 7, 1, false).slots(0).indices, [0, 1, 2, 0, 1, 2, 0]);
  assert.throws(() => new EpochBatchSampler(0, 4, 1), RangeError);
});

test('repeated augmentation sampler (timm RepeatAugSampler, one rank): floor(N/B) steps, each index repeated in a row', () => {
  const plain = new EpochBatchSampler(10, 4, 123);
  const s = new RepeatAugBatchSampler(10, 4, 123, 3);
  assert.equal(s.stepsPerEpoch, 2, 'floor(10 / 4)');
  assert.equal(s.cycle, 30);
  for (const epoch of [0, 1, 5]) {
    const order = [...plain.order(epoch)];
    assert.deepEqual([...s.order(epoch)], order, 'the same epoch permutation as the plain sampler');
    const got = [0, 1].map((k) => s.slots(epoch * 2 + k));
    for (const g of got) {
      assert.equal(g.epoch, epoch);
      assert.equal(g.fresh, 4);
    }
    // [a, a, a, b, b, b, c, c]: 8 samples, 3 distinct images, the last cut short
    const o = order;
    assert.deepEqual(got.flatMap((x) => x.indices), [o[0], o[0], o[0], o[1], o[1], o[1], o[2], o[2]]);
    assert.deepEqual(got.flatMap((x) => x.positions), [0, 1, 2, 3, 4, 5, 6, 7], 'each copy has its own slot (its own augmentation draw)');
  }
  // 12 images, batch 6, 3 repeats: 2 steps, 4 distinct images each seen exactly 3 times
  const t = new RepeatAugBatchSampler(12, 6, 9, 3);
  const all = [0, 1].flatMap((k) => t.slots(k).indices);
  const counts = new Map<number, number>();
  for (const i of all) counts.set(i, (counts.get(i) ?? 0) + 1);
  assert.equal(counts.size, 4);
  assert.ok([...counts.values()].every((c) => c === 3));
  // fewer images than a batch: one step, wrapping around the repeated list
  const u = new RepeatAugBatchSampler(3, 8, 1, 3);
  assert.equal(u.stepsPerEpoch, 1);
  const uo = [...u.order(0)];
  assert.deepEqual(u.slots(0).indices, [uo[0], uo[0], uo[0], uo[1], uo[1], uo[1], uo[2], uo[2]]);
  assert.equal(u.indexAt(0, 9), uo[0], 'positions past N·repeats wrap');
  // pure function of (seed, step)
  const v = new RepeatAugBatchSampler(10, 4, 123, 3);
  assert.deepEqual(v.slots(7), s.slots(7));
  assert.throws(() => new RepeatAugBatchSampler(10, 4, 1, 0), RangeError);
});

test('drop-last sampler (fine-tuning, DistributedSampler(drop_last=True)): floor(N/B) full batches of each epoch permutation, the rest dropped', () => {
  const plain = new EpochBatchSampler(10, 4, 123);
  const s = new EpochBatchSampler(10, 4, 123, true, { dropLast: true });
  assert.equal(s.stepsPerEpoch, 2, 'floor(10 / 4)');
  assert.equal(epochSteps(10, 4, true), 2);
  assert.equal(epochSteps(10, 4, false), 3);
  for (const epoch of [0, 1, 7]) {
    const order = [...plain.order(epoch)];
    assert.deepEqual([...s.order(epoch)], order, 'the same epoch permutations as the pre-training sampler');
    const got = [0, 1].map((k) => s.slots(epoch * 2 + k));
    for (const g of got) {
      assert.equal(g.epoch, epoch);
      assert.equal(g.fresh, 4, 'every slot is a first visit');
    }
    assert.deepEqual(got.flatMap((g) => g.indices), order.slice(0, 8), 'the first floor(N/B)·B of the permutation; the last 2 sit the epoch out');
    assert.deepEqual(got.flatMap((g) => g.positions), [0, 1, 2, 3, 4, 5, 6, 7]);
  }
  assert.notDeepEqual(s.slots(2).indices, s.slots(0).indices, 'a fresh permutation each epoch');
  // over many epochs every image is seen about equally often
  const seen = new Array<number>(10).fill(0);
  for (let k = 0; k < 2000; k++) for (const i of s.slots(k).indices) seen[i]!++;
  for (const n of seen) assert.ok(Math.abs(n / 800 - 1) < 0.1, `seen ${n} times in 1000 epochs, expected ~800`);
  // N divisible by B: the same batches as the pre-training sampler
  const a = new EpochBatchSampler(12, 4, 5);
  const b = new EpochBatchSampler(12, 4, 5, true, { dropLast: true });
  assert.equal(b.stepsPerEpoch, 3);
  for (let k = 0; k < 9; k++) assert.deepEqual(b.slots(k), a.slots(k));
  // fewer images than a batch: one step per epoch (not zero), filled by wrapping around the permutation
  const u = new EpochBatchSampler(3, 7, 1, true, { dropLast: true });
  assert.equal(u.stepsPerEpoch, 1);
  assert.equal(epochSteps(3, 7, true), 1);
  const uo = [...u.order(0)];
  assert.deepEqual(u.slots(0).indices, [...uo, ...uo, uo[0]]);
  assert.equal(u.slots(0).fresh, 3);
  assert.equal(u.slots(1).epoch, 1);
  // pure function of (seed, step); shuffle off = the identity order
  assert.deepEqual(new EpochBatchSampler(10, 4, 123, true, { dropLast: true }).slots(5), s.slots(5));
  const id = new EpochBatchSampler(5, 2, 7, false, { dropLast: true });
  assert.deepEqual([0, 1, 2, 3].map((k) => id.slots(k).indices), [[0, 1], [2, 3], [0, 1], [2, 3]]);
});
