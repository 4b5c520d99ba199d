import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EpochBatchSampler } from '../src/data/index.js';

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
