/** The memory model of `accumulate: auto` (models/memory.ts): selection logic against fake budgets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CALIBRATION,
  checkMeasuredMicro,
  describeBatchPlan,
  divisorsDesc,
  estimateStepMemory,
  estimatedPeak,
  isOutOfMemory,
  largestDivisorAtMost,
  memoryBudget,
  parseBytes,
  planBatch,
  stepDownAfterOom,
  type StepMemory,
} from '../src/models/memory.js';
import { activationElementsPerImage } from '../src/models/registry.js';
import { resolveConfig } from '../src/spec/index.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
/** 1 GiB fixed in all, 100 MiB per image. */
const mem: StepMemory = { perImageBytes: 100 * MiB, modelBytes: 512 * MiB, inputBytes: 256 * MiB, runtimeBytes: 256 * MiB };

test('divisors and the largest divisor at most a bound', () => {
  assert.deepEqual(divisorsDesc(12), [12, 6, 4, 3, 2, 1]);
  assert.equal(largestDivisorAtMost(64, 20), 16);
  assert.equal(largestDivisorAtMost(64, 64), 64);
  assert.equal(largestDivisorAtMost(64, 1000), 64);
  assert.equal(largestDivisorAtMost(97, 50), 1, 'a prime batch can only be split into single images');
  assert.equal(largestDivisorAtMost(100, 30), 25);
  assert.equal(largestDivisorAtMost(8, 0), 1, 'nothing fits: one image (and a warning)');
});

test('planBatch auto: the largest divisor whose estimated peak fits the budget', () => {
  // 1 GiB fixed + 100 MiB × m ≤ 2 GiB → m ≤ 10.24 → 8 for a batch of 64
  const p = planBatch(64, 'auto', mem, { limitBytes: 2 * GiB, source: 'test' });
  assert.equal(p.micro, 8);
  assert.equal(p.accumulate, 8);
  assert.equal(p.fits, true);
  assert.equal(p.estimatedPeakBytes, GiB + 8 * 100 * MiB);
  // plenty of memory: one micro-batch of the whole batch
  const q = planBatch(64, 'auto', mem, { limitBytes: 100 * GiB, source: 'test' });
  assert.equal(q.micro, 64);
  assert.equal(q.accumulate, 1);
  // a batch of 60: the divisors ≤ 10 are 10, 6, 5, ... → 10
  assert.equal(planBatch(60, 'auto', mem, { limitBytes: 2 * GiB, source: 'test' }).micro, 10);
  // not even one image fits
  const r = planBatch(64, 'auto', mem, { limitBytes: GiB, source: 'test' });
  assert.equal(r.micro, 1);
  assert.equal(r.fits, false);
  assert.match(describeBatchPlan(p), /^batch 64 = 8 micro-batches of 8 \(accumulate auto; estimated peak memory 1\.8 GiB of a 2\.0 GiB budget, test\)$/);
});

test('planBatch explicit: micro = batch / accumulate, fits says whether it does', () => {
  const p = planBatch(64, 4, mem, { limitBytes: 2 * GiB, source: 'test' });
  assert.equal(p.micro, 16);
  assert.equal(p.mode, 'explicit');
  assert.equal(p.fits, false, '1 GiB + 16 × 100 MiB > 2 GiB');
  assert.equal(planBatch(64, 8, mem, { limitBytes: 2 * GiB, source: 'test' }).fits, true);
});

test('first-step check: keeps a micro-batch whose measured projection fits, else steps down by the measured growth', () => {
  const base = { batch: 64, micro: 16, extraBytes: 100 * MiB, limitBytes: 4 * GiB };
  // measured: 16 images grew RSS by 1.6 GiB from 1 GiB: 2.6 + 0.1 ≤ 4 → keep
  assert.equal(checkMeasuredMicro({ ...base, rssBefore: GiB, peakAfter: GiB + 1.6 * GiB }), 16);
  // measured: 16 images grew it by 4 GiB (0.25 GiB per image): room (4 − 1 − 0.1) GiB → 11 images → divisor 8
  assert.equal(checkMeasuredMicro({ ...base, rssBefore: GiB, peakAfter: 5 * GiB }), 8);
  // the step-down is always to a smaller micro-batch, even when the growth per image looks tiny
  assert.ok(checkMeasuredMicro({ ...base, rssBefore: 3.95 * GiB, peakAfter: 4.1 * GiB }) < 16);
});

test('out-of-memory errors are recognised and step down by at least half', () => {
  assert.equal(isOutOfMemory(new Error('OOM when allocating tensor with shape[64,256,56,56]')), true);
  assert.equal(isOutOfMemory(new Error('std::bad_alloc')), true);
  assert.equal(isOutOfMemory(new RangeError('Array buffer allocation failed')), true);
  assert.equal(isOutOfMemory(new Error('shapes do not match')), false);
  assert.equal(stepDownAfterOom(64, 16), 8);
  assert.equal(stepDownAfterOom(60, 15), 6);
  assert.equal(stepDownAfterOom(64, 1), null);
});

test('budget: $SPARK_MEMORY_BUDGET wins; otherwise rss + 75 % of what the system has left', () => {
  assert.equal(parseBytes('20G'), 20 * GiB);
  assert.equal(parseBytes('512MiB'), 512 * MiB);
  assert.equal(parseBytes('1.5g'), 1.5 * GiB);
  assert.equal(parseBytes('123'), 123);
  assert.equal(parseBytes('lots'), null);
  assert.deepEqual(memoryBudget({ SPARK_MEMORY_BUDGET: '3G' }, 10), { limitBytes: 3 * GiB, source: '$SPARK_MEMORY_BUDGET' });
  const b = memoryBudget({}, 1000);
  assert.ok(b.limitBytes > 1000 && Number.isFinite(b.limitBytes), `${b.limitBytes}`);
  // the wasm backend is also bounded by its 4 GiB heap (when the machine has more)
  const w = memoryBudget({}, 1000, 'wasm');
  assert.ok(w.limitBytes <= 1000 + 0.75 * 4 * GiB && w.limitBytes <= b.limitBytes, `${w.limitBytes}`);
});

test('the estimate: activation elements from the model definitions, times the calibrated bytes per element', () => {
  // ResNet-50 at 224: stem 112²·64 + maxpool 56²·64 + the bottleneck conv outputs; decoder 5 up-sampling blocks
  const m = { encoder: 'resnet50', decoder: { type: 'light' as const, width: 768 }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' as const };
  const a = activationElementsPerImage(m, 224);
  assert.equal(a.encoder, 11_314_688);
  assert.equal(a.decoder, 11_816_448);
  // activations scale with the pixel count
  assert.equal(activationElementsPerImage(m, 448).total, 4 * a.total);
  const cfg = resolveConfig({ name: 'x', model: m, data: { source: 'synthetic', prefetch: 2 }, train: { batch_size: 64, steps: 1 } }, { file: 'x.yaml' });
  const est = estimateStepMemory(cfg, 'tensorflow');
  assert.equal(est.perImageBytes, a.total * CALIBRATION.resnet);
  assert.equal(CALIBRATION.resnet, 16, 'the measured factor (src/models/memory.ts; it was 80 before the lean backward pass)');
  assert.equal(est.inputBytes, 64 * 224 * 224 * 3 * 4 * 4);
  assert.ok(estimatedPeak(est, 8) > estimatedPeak(est, 4));
  // on a 24 GB machine with ~20 GB free a batch of 64 goes in micro-batches of 32 (~1.9 GB fixed + 32 × 370 MB;
  // measured: 269 MiB per image over 1.2 GiB at batch 4 and 8, bench/README.md)
  assert.equal(planBatch(64, 'auto', est, { limitBytes: 0.75 * 20 * 1e9, source: 'test' }).micro, 32);
});
