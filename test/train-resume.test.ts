/**
 * Exact resume: a run stopped after a checkpoint (in-process abort, SIGTERM to a child `spark run`, SIGKILL of a child
 * after a checkpoint) and resumed ends with the same weights as an uninterrupted run with the same seed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { testBackend } from './helpers/backend.js';
import { tinyConfig, tmpDir, assertSameWeights, referenceRun } from './helpers/train.js';
import { runExperiment } from '../src/train/run.js';
import type { RunEvent } from '../src/train/events.js';

const STEPS = 6;


test('in-process abort after step 3, then resume: same losses and weights as an uninterrupted run', async () => {
  await testBackend();
  const ref = await referenceRun(STEPS);
  assert.ok(existsSync(path.join(ref.runDir, 'encoder.safetensors')), 'encoder export written at the end');

  const out = tmpDir();
  const c = await tinyConfig({ outDir: out, name: 'cut', steps: STEPS, checkpointEvery: 100 });
  const stop = new AbortController();
  const events: RunEvent[] = [];
  const first = await runExperiment({
    ...c,
    subscribers: [{ onEvent: (e: RunEvent) => void events.push(e) }],
    signal: stop.signal,
    onStep: (step) => {
      if (step === 3) stop.abort();
    },
  });
  assert.equal(first.status, 'KILLED');
  assert.equal(first.step, 3);
  assert.match(first.resumeCommand ?? '', /^npx spark run --resume /);
  const end = events.at(-1)!;
  assert.equal(end.type, 'run-end');
  assert.equal(end.type === 'run-end' && end.status, 'KILLED');
  assert.ok(events.some((e) => e.type === 'checkpoint' && e.step === 3), 'interrupt wrote a checkpoint');
  assert.equal(existsSync(path.join(first.runDir, 'encoder.safetensors')), false, 'no encoder export for an unfinished run');
  const st = JSON.parse(readFileSync(path.join(first.runDir, 'checkpoint', 'state.json'), 'utf8'));
  assert.equal(st.step, 3);
  assert.deepEqual(Object.values(st.optimizer.groupSteps), [3, 3]);

  const losses: number[] = [];
  const second = await runExperiment({ resumeDir: first.runDir, subscribers: [{ onEvent: (e: RunEvent) => void (e.type === 'step' && losses.push(e.loss)) }] });
  assert.equal(second.status, 'FINISHED');
  assert.equal(second.runDir, first.runDir);
  assert.equal(losses.length, 3);
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(losses[i]! - ref.losses[i + 3]!) <= 1e-6, `loss of step ${i + 4}: ${losses[i]} vs ${ref.losses[i + 3]}`);
  await assertSameWeights(ref.runDir, second.runDir, STEPS);
});

