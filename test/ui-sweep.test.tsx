import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeStdout, FakeStdin } from './helpers/ink.js';
import React from 'react';
import { render } from 'ink-testing-library';
import { createSweepConsole, SweepView, varyingParams, type SweepSnapshot, type TrialRow } from '../src/ui/sweep.js';
import { demoRunEvents } from '../src/ui/demo.js';
import { stripAnsi } from '../src/ui/format.js';
import type { RunEvent } from '../src/train/events.js';

class Sink {
  text = '';
  isTTY = false;
  write(s: string): boolean {
    this.text += s;
    return true;
  }
  get lines(): string[] {
    return this.text.split('\n').filter((l) => l !== '');
  }
}

const trials = [
  { index: 0, name: 'lr=0.001', params: { 'train.optimizer.base_lr': 0.001, 'train.batch_size': 8 } },
  { index: 1, name: 'lr=0.002', params: { 'train.optimizer.base_lr': 0.002, 'train.batch_size': 8 } },
  { index: 2, name: 'lr=0.004', params: { 'train.optimizer.base_lr': 0.004, 'train.batch_size': 8 } },
];

function withEnd(ev: RunEvent[], end: Partial<Extract<RunEvent, { type: 'run-end' }>>): RunEvent[] {
  const last = ev[ev.length - 1] as Extract<RunEvent, { type: 'run-end' }>;
  return ev.slice(0, -1).concat({ ...last, ...end });
}

test('varyingParams: only the parameters that differ (all when none do)', () => {
  assert.deepEqual(varyingParams(trials), ['train.optimizer.base_lr']);
  assert.deepEqual(varyingParams([{ params: { a: 1, b: [1, 2] } }, { params: { a: 1, b: [1, 3] } }]), ['b']);
  assert.deepEqual(varyingParams([{ params: { a: 1 } }, { params: { a: 1 } }]), ['a']);
});

test('SweepView: one row per trial with the varying params, status, loss, steps and a progress bar', () => {
  const row = (i: number, status: TrialRow['status'], loss: number | null, step: number, message = ''): TrialRow => ({
    ...trials[i]!,
    status,
    loss,
    step,
    totalSteps: 10,
    message,
    runId: '',
  });
  const s: SweepSnapshot = {
    now: 0,
    rows: [row(0, 'finished', 0.4321, 10), row(1, 'failed', null, 3, 'loss is NaN'), row(2, 'pending', null, 0)],
    varying: ['train.optimizer.base_lr'],
    detail: null,
    detailIndex: null,
    stopping: false,
    closed: false,
  };
  const f = stripAnsi(render(<SweepView s={s} />).lastFrame() ?? '');
  const lines = f.split('\n');
  assert.match(lines[0]!, /spark sweep 3 trials\s+1 finished · 1 failed · 1 pending/);
  assert.match(lines[1]!, /#\s+train\.optimizer\.base_lr\s+status\s+loss\s+steps/);
  assert.doesNotMatch(f, /batch_size/, 'constant parameters are not columns');
  assert.match(lines[2]!, /✔ 1\s+0\.001\s+finished\s+0\.4321\s+10\/10\s+█{16}/);
  assert.match(lines[3]!, /✘ 2\s+0\.002\s+failed\s+—\s+3\/10\s+█{4}[▏▎▍▌▋▊▉]░{11}\s+loss is NaN/);
  assert.match(lines[4]!, /· 3\s+0\.004\s+pending\s+—\s+0\/10\s+░{16}$/);
});

test('Ink sweep console: rows follow trial events and setStatus, the running trial is shown, close() unmounts', async () => {
  const stdout = new FakeStdout(50);
  const stdin = new FakeStdin();
  let interrupts = 0;
  const sc = createSweepConsole({
    trials,
    stream: stdout as unknown as NodeJS.WriteStream,
    stdin: stdin as unknown as NodeJS.ReadStream,
    mode: 'ink',
    debug: true,
    handleSigint: false,
    onInterrupt: () => interrupts++,
    forceExit: () => assert.fail('no forced exit expected'),
  });
  const last = (): string => stdout.frames.map(stripAnsi).filter((x) => x.trim() !== '').pop() ?? ''; // skip Ink's barrier / cursor writes
  // trial 0 runs to the end
  sc.setStatus(0, 'running');
  const sub0 = sc.trialSubscriber(0);
  assert.equal(stdout.frames.length, 0, 'Ink mounts at the first trial event (after the trial has initialised its backend)');
  for (const e of demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 4, name: 't0', runId: 'run-0' })) sub0.onEvent(e);
  await sub0.close?.();
  sc.setStatus(0, 'finished', { loss: 0.4321 });
  // trial 1 is mid-run
  sc.setStatus(1, 'running');
  const sub1 = sc.trialSubscriber(1);
  const ev1 = demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 8, name: 't1', runId: 'run-1' });
  for (const e of ev1.filter((e) => e.type !== 'step' || e.step <= 3).filter((e) => e.type !== 'run-end' && e.type !== 'epoch' && e.type !== 'checkpoint')) sub1.onEvent(e);
  await new Promise((r) => setTimeout(r, 150)); // let the trailing throttled frame fire
  const f = last();
  assert.match(f, /spark sweep 3 trials\s+1 finished · 1 running · 1 pending/);
  assert.match(f, /✔ 1\s+0\.001\s+finished\s+0\.4321\s+4\/4/); // trials counted from 1
  assert.match(f, /▶ 2\s+0\.002\s+running\s+\d\.\d{4}\s+3\/8/);
  assert.match(f, /· 3\s+0\.004\s+pending/);
  assert.match(f, /trial 2\/3\n/);
  assert.match(f, /spark demo-exp\/t1\s+run run-1/, 'the running trial detail is the run view');
  assert.match(f, /3\/8 37\.5%/);
  // Ctrl-C: the sweep's graceful stop
  stdin.press('\u0003');
  await new Promise((r) => setImmediate(r));
  assert.equal(interrupts, 1);
  assert.match(last(), /stopping the sweep/);
  sub1.onEvent({ type: 'run-end', time: 0, status: 'KILLED', step: 3, epoch: 1, finalLoss: 0.9 });
  sc.setStatus(1, 'killed', { loss: 0.9 });
  sc.setStatus(2, 'skipped', { message: 'sweep interrupted' });
  await sc.close();
  const fin = last();
  assert.match(fin, /■ 2\s+0\.002\s+killed\s+0\.9000\s+3\/8/);
  assert.match(fin, /– 3\s+0\.004\s+skipped\s+—.*sweep interrupted/);
  assert.doesNotMatch(fin, /stopping the sweep/, 'final frame has no pending-stop notice');
});

test('plain sweep console: prefixed run lines, one line per status change, a summary table on close', async () => {
  const out = new Sink();
  const sc = createSweepConsole({ trials, stream: out as unknown as NodeJS.WriteStream, plain: true, logEvery: 100 });
  sc.setStatus(0, 'running');
  const sub = sc.trialSubscriber(0);
  for (const e of withEnd(demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 2, name: 't0' }), { finalLoss: 0.5 })) sub.onEvent(e);
  sc.setStatus(0, 'finished', { loss: 0.5 });
  sc.setStatus(1, 'failed', { message: 'out of memory' });
  sc.setStatus(2, 'skipped', { loss: 0.3, message: 'finished earlier' });
  await sc.close();
  const L = out.lines;
  // trials are counted from 1 for people: [trial 1/3] .. [trial 3/3]
  assert.equal(L[0], '[sweep] trial 1/3 lr=0.001 (train.optimizer.base_lr=0.001) running');
  assert.ok(L.slice(1, -8).every((l) => l.startsWith('[trial 1/3] ')), out.text);
  assert.ok(L.includes('[trial 1/3] [run-end] FINISHED at step 2 (epoch 1), final loss 0.5000'));
  assert.deepEqual(L.slice(-8), [
    '[sweep] trial 1/3 lr=0.001 (train.optimizer.base_lr=0.001) finished loss 0.5000',
    '[sweep] trial 2/3 lr=0.002 (train.optimizer.base_lr=0.002) failed: out of memory',
    '[sweep] trial 3/3 lr=0.004 (train.optimizer.base_lr=0.004) skipped loss 0.3000: finished earlier',
    '[sweep] summary',
    '  #  train.optimizer.base_lr  status    loss    steps',
    '  1  0.001                    finished  0.5000  2/2',
    '  2  0.002                    failed    —',
    '  3  0.004                    skipped   0.3000',
  ]);
  assert.equal(out.text.includes('\u001b'), false);
});

test('Ink sweep console: a board that saw no trial event still renders its final state on close', async () => {
  const stdout = new FakeStdout(50);
  const sc = createSweepConsole({ trials, stream: stdout as unknown as NodeJS.WriteStream, stdin: new FakeStdin() as unknown as NodeJS.ReadStream, mode: 'ink', debug: true, patchConsole: false });
  for (const t of trials) sc.setStatus(t.index, 'skipped', { loss: 0.5, message: 'finished earlier' });
  assert.equal(stdout.frames.length, 0);
  await sc.close();
  const f = stdout.frames.map(stripAnsi).filter((x) => x.trim() !== '').pop() ?? '';
  assert.match(f, /spark sweep 3 trials\s+3 skipped/);
  assert.equal((f.match(/skipped\s+0\.5000/g) ?? []).length, 3);
});
