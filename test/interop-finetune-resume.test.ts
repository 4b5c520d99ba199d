/**
 * Exact resume of fine-tuning runs: a `spark finetune` run stopped after a checkpoint (in-process abort, SIGTERM or
 * SIGKILL of a child `spark finetune`) and resumed with `--resume` ends with the same encoder + head, EMA, optimizer
 * moments and evaluation results as an uninterrupted run. The tiny ConvNeXt runs the whole recipe: TrivialAugmentWide,
 * RandomErasing, repeated augmentation ×3 (4 steps per epoch, so an evaluation falls before the cut), mixup/CutMix,
 * drop path and the EMA (decay 0.9 here).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { testBackend } from './helpers/backend.js';
import { tmpDir, spawnSpark, waitForCheckpoint, assertSameWeights } from './helpers/train.js';
import { tinyLabelledData, tinyFinetuneConfig, tinyFinetuneYaml, assertSameTensorFile } from './helpers/finetune.js';
import { runFinetune, type FinetuneResult } from '../src/downstream/finetune.js';
import type { RunEvent } from '../src/train/events.js';

const STEPS = 6;
/** EMA decay 0.9 instead of the reference's 0.9999, so that over 6 steps the EMA depends on its whole history. */
const EXTRA = 'ema: 0.9';

let dataDir: Promise<string> | null = null;
let reference: Promise<{ r: FinetuneResult; losses: number[] }> | null = null;

/** The uninterrupted run (once per file). */
function referenceRun(): Promise<{ r: FinetuneResult; losses: number[] }> {
  reference ??= (async () => {
    dataDir ??= tinyLabelledData();
    const out = tmpDir();
    const c = await tinyFinetuneConfig({ dataDir: await dataDir, outDir: out, name: 'ref', steps: STEPS, extra: EXTRA });
    const losses: number[] = [];
    const r = await runFinetune({ ...c, subscribers: [{ onEvent: (e: RunEvent) => void (e.type === 'step' && losses.push(e.loss)) }] });
    assert.equal(r.status, 'FINISHED');
    assert.equal(losses.length, STEPS);
    return { r, losses };
  })();
  return reference;
}

/** Same weights, EMA, optimizer state, final files and evaluation results as the reference run. */
async function assertSameAsReference(runDir: string, r: FinetuneResult): Promise<void> {
  const ref = await referenceRun();
  await assertSameWeights(path.join(ref.r.runDir, 'checkpoint'), path.join(runDir, 'checkpoint'), STEPS);
  for (const f of ['checkpoint/ema.safetensors', 'checkpoint/optimizer.safetensors', 'model.safetensors', 'model-ema.safetensors']) {
    assert.ok((await assertSameTensorFile(path.join(ref.r.runDir, f), path.join(runDir, f))) > 10, f);
  }
  for (const k of ['top1', 'top5', 'emaTop1', 'emaTop5', 'bestTop1', 'bestTop5', 'bestModel', 'steps'] as const) assert.equal(r[k], ref.r[k], k);
  const m = (d: string) => JSON.parse(readFileSync(path.join(d, 'metrics.json'), 'utf8')) as { best: unknown; last: unknown; lastEma: unknown; evaluations: number };
  const a = m(ref.r.runDir);
  const b = m(runDir);
  assert.deepEqual([b.best, b.last, b.lastEma, b.evaluations], [a.best, a.last, a.lastEma, a.evaluations]);
  assert.equal(a.evaluations, 2, 'evaluated after epoch 1 (step 4) and at the end');
}

test('spark finetune aborted in-process after step 5, then resumed: same losses, weights, EMA, optimizer and best accuracy', async () => {
  await testBackend();
  const ref = await referenceRun();
  const out = tmpDir();
  const c = await tinyFinetuneConfig({ dataDir: await dataDir!, outDir: out, name: 'cut', steps: STEPS, extra: EXTRA });
  const before = tf.memory().numTensors;
  const stop = new AbortController();
  const events: RunEvent[] = [];
  const first = await runFinetune({ ...c, subscribers: [{ onEvent: (e: RunEvent) => void events.push(e) }], signal: stop.signal, onStep: (s) => void (s === 5 && stop.abort()) });
  assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
  assert.equal(first.status, 'KILLED');
  assert.equal(first.steps, 5);
  assert.match(first.resumeCommand ?? '', /^npx spark finetune --resume /);
  assert.ok(events.some((e) => e.type === 'checkpoint' && e.step === 5), 'the interrupt wrote a checkpoint');
  const end = events.at(-1)!;
  assert.ok(end.type === 'run-end' && end.status === 'KILLED' && /--resume/.test(end.resumeCommand ?? ''));
  const st = JSON.parse(readFileSync(path.join(first.runDir, 'checkpoint', 'state.json'), 'utf8')) as { step: number; taskState: { evaluations: number } };
  assert.equal(st.step, 5);
  assert.equal(st.taskState.evaluations, 1, 'the epoch-1 evaluation is part of the checkpoint');
  assert.ok(existsSync(path.join(first.runDir, 'checkpoint', 'ema.safetensors')));
  assert.equal(existsSync(path.join(first.runDir, 'model.safetensors')), false, 'no final weights for an unfinished run');
  for (let i = 0; i < 5; i++) {
    const e = events.filter((x) => x.type === 'step')[i]!;
    assert.ok(e.type === 'step' && Math.abs(e.loss - ref.losses[i]!) <= 1e-6, `loss of step ${i + 1}`);
  }

  const losses: number[] = [];
  const starts: RunEvent[] = [];
  const second = await runFinetune({ specPath: null, resumeDir: first.runDir, subscribers: [{ onEvent: (e: RunEvent) => void (e.type === 'step' ? losses.push(e.loss) : e.type === 'run-start' && starts.push(e)) }] });
  assert.equal(tf.memory().numTensors, before, 'no tensors left behind after the resume');
  assert.equal(second.status, 'FINISHED');
  assert.equal(second.runDir, first.runDir);
  assert.ok(starts[0]?.type === 'run-start' && starts[0].resumed && starts[0].startStep === 5);
  assert.equal(losses.length, 1);
  assert.ok(Math.abs(losses[0]! - ref.losses[5]!) <= 1e-6, `loss of step 6: ${losses[0]} vs ${ref.losses[5]}`);
  await assertSameAsReference(second.runDir, second);
  // resuming a finished run does nothing more and reports the same
  const third = await runFinetune({ specPath: null, resumeDir: first.runDir, subscribers: [] });
  assert.equal(third.status, 'FINISHED');
  assert.equal(third.bestTop1, second.bestTop1);
  await assertSameAsReference(third.runDir, third);
  // a pre-training run folder is refused
  await assert.rejects(runFinetune({ specPath: null, resumeDir: tmpDir(), subscribers: [] }), /not a run folder/);
});

for (const mode of ['SIGKILL', 'SIGTERM'] as const) {
  test(`spark finetune killed by ${mode} after a checkpoint, then \`spark finetune --resume\`: same final weights as an uninterrupted run`, async () => {
    await testBackend();
    await referenceRun();
    const out = tmpDir();
    const name = mode.toLowerCase();
    const spec = path.join(out, `${name}.yaml`);
    writeFileSync(spec, tinyFinetuneYaml({ dataDir: await dataDir!, outDir: out, name, steps: STEPS, checkpointEvery: 1, extra: EXTRA }));
    const { child, done } = spawnSpark('finetune', [spec], { SPARK_TEST_STEP_DELAY_MS: '300' });
    const runDir = await waitForCheckpoint(out, name, 2);
    child.kill(mode);
    const r = await done;
    if (mode === 'SIGTERM') {
      assert.equal(r.code, 143, `exit code (stderr: ${r.stderr.slice(-500)})`);
      // printed once, with the run's end (the console view on stdout)
      assert.equal((r.stdout + r.stderr).match(/resume with: npx spark finetune --resume \S+/g)?.length, 1, r.stdout + r.stderr);
    } else {
      assert.equal(r.signal, 'SIGKILL');
    }
    const st = JSON.parse(readFileSync(path.join(runDir, 'checkpoint', 'state.json'), 'utf8')) as { step: number };
    assert.ok(st.step >= 2 && st.step < STEPS, `interrupted mid-run (checkpoint at step ${st.step})`);
    const again = spawnSpark('finetune', ['--resume', runDir, '--json']);
    const r2 = await again.done;
    assert.equal(r2.code, 0, `resume exit code (stderr: ${r2.stderr.slice(-800)})`);
    const res = JSON.parse(r2.stdout) as FinetuneResult;
    assert.equal(res.runDir, runDir);
    await assertSameAsReference(runDir, res);
  });
}
