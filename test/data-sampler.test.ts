import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EpochBatchSampler, RepeatAugBatchSampler } from '../src/data/index.js';

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
