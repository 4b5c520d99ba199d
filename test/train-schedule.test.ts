import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lrAt, wdAt, makeSchedule, peakLr, type ScheduleParams } from '../src/train/schedule.js';
import type { TrainConfig } from '../src/spec/types.js';

function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected} (tol ${tol})`);
}

test('O10: 1600 epochs, warmup 40 (313 it/epoch, peak 3.2e-3)', () => {
  const s: ScheduleParams = { peakLr: 3.2e-3, warmupIters: 40 * 313, maxIters: 1600 * 313, wdStart: 0.04, wdEnd: 0.2 };
  assert.equal(s.warmupIters, 12520);
  assert.equal(s.maxIters, 500800);
  close(lrAt(0, s), 1.6e-5, 1e-6 * 1.6e-5 + 1e-12, 'lr(0)');
  close(lrAt(1, s), 1.625431e-5, 1e-11, 'lr(1)');
  close(lrAt(12519, s), 3.199746e-3, 1e-9, 'lr(12519)');
  close(lrAt(12520, s), 3.2e-3, 1e-12, 'lr(12520)');
  close(lrAt(250400, s), 1.665956e-3, 1e-9, 'lr(250400)');
  close(lrAt(500799, s), 3.2e-6, 1e-12, 'lr(500799)');
  close(wdAt(0, s), 0.04, 1e-12, 'wd(0)');
  close(wdAt(12519, s), 0.040247, 1e-6, 'wd(12519)');
  close(wdAt(250400, s), 0.12, 1e-6, 'wd(250400)');
  close(wdAt(500799, s), 0.2, 1e-12, 'wd(500799)');
});

test('O10: 800 epochs, warmup 20', () => {
  const s: ScheduleParams = { peakLr: 3.2e-3, warmupIters: 20 * 313, maxIters: 800 * 313, wdStart: 0.04, wdEnd: 0.2 };
  close(lrAt(1, s), 1.650863e-5, 1e-11, 'lr(1)');
  close(lrAt(6260, s), 3.2e-3, 1e-12, 'lr(6260)');
  close(lrAt(250399, s), 3.2e-6, 1e-12, 'lr(250399)');
});

test('schedule from a train config: peak lr scales with the batch per step (however it is split), warmup_steps wins', () => {
  const train: TrainConfig = {
    epochs: 1600, steps: null, batch_size: 4096, accumulate: 4, warmup_epochs: 40, warmup_steps: null,
    optimizer: { name: 'lamb', base_lr: 2e-4, base_batch_size: 256, betas: null, eps: 1e-6, weight_decay: 0.04, weight_decay_end: 0.2, clip_grad: 5 },
  };
  assert.ok(Math.abs(peakLr(train) - 3.2e-3) < 1e-15);
  const s = makeSchedule(train, 313);
  assert.equal(s.maxIters, 500800);
  assert.equal(s.warmupIters, 12520);
  assert.equal(s.effectiveBatch, 4096);
  assert.equal(makeSchedule({ ...train, accumulate: 'auto' }, 313).effectiveBatch, 4096);
  assert.equal(peakLr({ ...train, accumulate: 16 } as TrainConfig), peakLr(train), 'the split does not change the lr');
  close(s.at(1).lr, 1.625431e-5, 1e-11, 'lr(1)');
  const s2 = makeSchedule({ ...train, steps: 100, epochs: null, warmup_steps: 10 }, 313);
  assert.equal(s2.maxIters, 100);
  assert.equal(s2.warmupIters, 10);
  close(s2.at(10).lr, 3.2e-3, 1e-12, 'peak at end of warmup');
  close(s2.at(99).lr, 3.2e-6, 1e-12, 'final lr');
  close(s2.at(99).wd, 0.2, 1e-12, 'final wd');
  // lr rises monotonically during warmup and falls monotonically afterwards
  for (let i = 1; i < 100; i++) {
    if (i <= 10) assert.ok(s2.at(i).lr > s2.at(i - 1).lr, `warmup rises at ${i}`);
    else assert.ok(s2.at(i).lr < s2.at(i - 1).lr, `cosine falls at ${i}`);
  }
});
