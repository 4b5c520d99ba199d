import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeStdout, FakeStdin } from './helpers/ink.js';
import React from 'react';
import { render } from 'ink-testing-library';
import { RunApp, RunView } from '../src/ui/RunView.js';
import { createInkRunSubscriber } from '../src/ui/ink-run.js';
import { applyEvent, initialRunState, takeSnapshot, Throttle, type Clock, type RunSnapshot } from '../src/ui/store.js';
import { demoRunEvents, withDefaults, demoStart, demoStep } from '../src/ui/demo.js';
import { stripAnsi, sparkline, progressBar, formatDuration } from '../src/ui/format.js';
import type { RunEvent } from '../src/train/events.js';

/** A fake clock whose timers fire only when the test advances time. */
class FakeClock implements Clock {
  t = 1_767_225_600_000;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}


function snapshotAfter(events: RunEvent[], now?: number): RunSnapshot {
  const s = initialRunState();
  for (const e of events) applyEvent(s, e);
  return takeSnapshot(s, now ?? events[events.length - 1]!.time);
}

test('run view frame shows header, progress, loss, ETA, checkpoint, warnings and tracking', () => {
  const all = demoRunEvents({ totalEpochs: 3, stepsPerEpoch: 10, stepMs: 500 });
  // stop in the middle of epoch 2, after the epoch-1 checkpoint: step 15
  const cut = all.findIndex((e) => e.type === 'step' && e.step === 15);
  const events = all.slice(0, cut + 1);
  events.push({ type: 'metrics', time: all[cut]!.time, step: 10, epoch: 1, metrics: { val_top1: 12.5 } });
  events.push({ type: 'metrics', time: all[cut]!.time, step: 15, epoch: 1, metrics: { val_top5: 40.25 } });
  const snap = snapshotAfter(events, all[cut]!.time + 2000);
  const { lastFrame, unmount } = render(<RunView s={snap} />);
  const f = stripAnsi(lastFrame() ?? '');
  unmount();
  assert.match(f, /demo-exp\/quickstart/);
  assert.match(f, /run r20260101-abc123/);
  assert.match(f, /resnet_tiny/);
  assert.match(f, /backend cpu/);
  assert.match(f, /epoch 2\/3/);
  assert.match(f, / 5\/10/, 'epoch progress');
  assert.match(f, /15\/30 50\.0%/, 'run progress');
  const step15 = all[cut] as Extract<RunEvent, { type: 'step' }>;
  assert.ok(f.includes(step15.loss.toFixed(4)), 'current loss');
  assert.match(f, /ema \d\.\d{4}/);
  assert.match(f, new RegExp(`ETA ${formatDuration(step15.etaSec).replace(/:/g, ':')}`));
  assert.match(f, /step 10 \(epoch 1\), 4s ago/, 'checkpoint step and age (last checkpoint at step 10, 5 steps × 0.5 s + 2 s)');
  assert.match(f, /checkpoints\/step-10\.safetensors/);
  assert.match(f, /skipped-files: 2 unreadable images skipped/);
  assert.match(f, /tracking\s+offline: server unreachable/);
  assert.match(f, /grad-norm \d\.\d\d/);
  assert.match(f, /16\.0 img\/s/);
  assert.match(f, /1234 tensors \(56\.0 MiB\)\s+RSS 512\.0 MiB/);
  assert.match(f, /Ctrl-C stops gracefully/);
  assert.match(f, /^metrics +val_top1 12\.5 val_top5 40\.25  \(step 15, epoch 1\)$/m, 'latest value of each metric');
  assert.ok(f.includes(progressBar(0.5, 30)), 'run progress bar at 50%');
});

test('run view: a long checkpoint path wraps without eating the label column', () => {
  const ev = demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 4, runDir: 'runs/' + 'very-long-folder-name/'.repeat(6) + 'r1' });
  const f = stripAnsi(render(<RunView s={snapshotAfter(ev)} />).lastFrame() ?? '');
  assert.match(f, /^checkpoint +step 4 \(epoch 1\)/m);
  assert.match(f, /^last epoch +1: mean/m);
});

test('run view of a resumed run: header and checkpoint line say where it resumed', () => {
  const ev = demoRunEvents({ totalEpochs: 2, stepsPerEpoch: 10, resumedAt: 13 });
  const f = stripAnsi(render(<RunView s={snapshotAfter(ev.slice(0, 2))} />).lastFrame() ?? '');
  assert.match(f, /resumed at step 13/);
  assert.match(f, /^checkpoint +resumed from the checkpoint at step 13$/m);
  assert.match(f, /^epoch 2\/2 .* 3\/10$/m);
  assert.match(f, /13\/20 65\.0%/);
});

test('run view of a sweep trial: the header names the trial instead of the trial folder', () => {
  const ev = demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 4 });
  const start = ev[0] as Extract<RunEvent, { type: 'run-start' }>;
  ev[0] = { ...start, runId: 'run', sweep: { sweepDir: '/tmp/sw', trial: 2, trialName: 'mask_ratio=0.75', params: { 'model.mask_ratio': 0.75 }, trials: 3 } };
  const f = stripAnsi(render(<RunView s={snapshotAfter(ev.slice(0, 2))} />).lastFrame() ?? '');
  assert.match(f, /trial 3\/3 mask_ratio=0\.75/, 'the last of 3 trials (index 2) is trial 3/3 for people');
  assert.doesNotMatch(f, /run run/);
});

test('run view final frame: finished, failed and killed status lines', () => {
  const ev = demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 4 });
  const fin = stripAnsi(render(<RunView s={snapshotAfter(ev)} />).lastFrame() ?? '');
  assert.match(fin, /✔ finished at step 4 \(epoch 1\), final loss \d\.\d{4}/);
  const killed = ev.slice(0, -1).concat({
    type: 'run-end',
    time: ev[ev.length - 1]!.time,
    status: 'KILLED',
    step: 4,
    epoch: 1,
    finalLoss: 0.9,
    resumeCommand: 'spark run --resume runs/q/x',
  });
  const k = stripAnsi(render(<RunView s={snapshotAfter(killed)} />).lastFrame() ?? '');
  assert.match(k, /■ stopped at step 4 \(epoch 1\), final loss 0\.9000/);
  assert.match(k, /resume with: spark run --resume runs\/q\/x/);
  const failed = ev.slice(0, -1).concat({ type: 'run-end', time: 0, status: 'FAILED', step: 3, epoch: 1, finalLoss: null, error: 'NaN loss at step 3' });
  const fl = stripAnsi(render(<RunView s={snapshotAfter(failed)} />).lastFrame() ?? '');
  assert.match(fl, /✘ failed at step 3 \(epoch 1\)/);
  assert.match(fl, /NaN loss at step 3/);
});

test('sparkline and progress bar helpers', () => {
  assert.equal(sparkline([0, 1, 2, 3, 4, 5, 6, 7]), '▁▂▃▄▅▆▇█');
  assert.equal(sparkline([5, 5, 5]), '▄▄▄');
  assert.equal(sparkline([1, 2, 3], 2), '▁█');
  assert.equal(progressBar(0, 4), '░░░░');
  assert.equal(progressBar(1, 4), '████');
  assert.equal(progressBar(0.5, 4), '██░░');
  assert.equal(progressBar(0.5 + 1 / 32, 4), '██▏░');
  assert.equal(formatDuration(312), '0:05:12');
  assert.equal(formatDuration(3 * 3600 + 7), '3:00:07');
});

test('throttle: 10,000 events in 10 s of fake time give at most one frame per interval, and the last state is shown', () => {
  const clock = new FakeClock();
  const state = initialRunState();
  let renders = 0;
  const Counting = ({ s }: { s: RunSnapshot }): React.JSX.Element => {
    renders++;
    return <RunApp s={s} />;
  };
  const inst = render(<Counting s={takeSnapshot(state, clock.now())} />);
  let publishes = 0;
  const throttle = new Throttle(
    () => {
      publishes++;
      inst.rerender(<Counting s={takeSnapshot(state, clock.now())} />);
    },
    125,
    clock,
  );
  const o = withDefaults({ totalEpochs: 100, stepsPerEpoch: 100, stepMs: 1 });
  const renders0 = renders;
  applyEvent(state, demoStart(o));
  throttle.poke();
  for (let step = 1; step <= 10_000; step++) {
    clock.advance(1);
    applyEvent(state, demoStep(o, step, clock.now()));
    throttle.poke();
  }
  const beforeTrailing = stripAnsi(inst.lastFrame() ?? '');
  clock.advance(1000); // the trailing frame
  const bound = 10_000 / 125 + 3;
  assert.ok(publishes >= 70 && publishes <= bound, `frames ${publishes} within [70, ${bound}]`);
  assert.equal(renders - renders0, publishes, 'one React render per frame, none per event');
  assert.equal(throttle.calls, publishes);
  assert.doesNotMatch(beforeTrailing, /10000\/10000/, 'the last events were not rendered synchronously');
  assert.match(stripAnsi(inst.lastFrame() ?? ''), /10000\/10000 100\.0%/, 'the trailing frame shows the last step');
  inst.unmount();
});

/** An Ink run subscriber on fake terminal streams (stderr too when `stderrToo`), counting interrupts and forced exits. */
function inkSubscriber(stderrToo: boolean) {
  const stdout = new FakeStdout();
  const stdin = new FakeStdin();
  const counts = { interrupts: 0, forced: 0 };
  const sub = createInkRunSubscriber({
    stream: stdout as unknown as NodeJS.WriteStream,
    stdin: stdin as unknown as NodeJS.ReadStream,
    ...(stderrToo ? { stderr: stdout as unknown as NodeJS.WriteStream } : {}),
    onInterrupt: () => counts.interrupts++,
    forceExit: () => counts.forced++,
    handleSigint: false,
    patchConsole: false,
    debug: true,
  });
  return { stdout, stdin, sub, counts };
}

test('Ink subscriber: renders frames, Ctrl-C calls onInterrupt once, then run-end unmounts and close() resolves', async () => {
  const { stdout, stdin, sub, counts } = inkSubscriber(true);
  const ev = demoRunEvents({ totalEpochs: 2, stepsPerEpoch: 5 });
  for (const e of ev.slice(0, 6)) sub.onEvent(e);
  await new Promise((r) => setImmediate(r));
  stdin.press('\u0003'); // Ctrl-C in raw mode
  await new Promise((r) => setImmediate(r));
  assert.equal(counts.interrupts, 1, 'first Ctrl-C → graceful stop');
  assert.equal(counts.forced, 0);
  const stoppingFrame = stripAnsi(stdout.frames[stdout.frames.length - 1] ?? '');
  assert.match(stoppingFrame, /stopping… finishing the step and writing a checkpoint/);
  // the trainer then writes a checkpoint and ends the run as KILLED
  sub.onEvent({ type: 'checkpoint', time: ev[5]!.time, step: 4, epoch: 1, path: 'runs/x/checkpoints/step-4.safetensors' });
  sub.onEvent({ type: 'run-end', time: ev[5]!.time, status: 'KILLED', step: 4, epoch: 1, finalLoss: 0.8, resumeCommand: 'spark run --resume runs/x' });
  await sub.close();
  const all = stripAnsi(stdout.frames.join(''));
  assert.match(all, /■ stopped at step 4 \(epoch 1\), final loss 0\.8000/);
  assert.match(all, /resume with: spark run --resume runs\/x/);
  assert.match(all, /step-4\.safetensors/);
  const n = stdout.frames.length;
  sub.onEvent(ev[7]!); // events after the end are ignored (unmounted)
  assert.equal(stdout.frames.length, n);
});

test('Ink subscriber: a second Ctrl-C forces the exit after unmounting', async () => {
  const { stdin, sub, counts } = inkSubscriber(false);
  for (const e of demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 5 }).slice(0, 3)) sub.onEvent(e);
  await new Promise((r) => setImmediate(r));
  stdin.press('\u0003');
  await new Promise((r) => setImmediate(r));
  stdin.press('\u0003');
  await new Promise((r) => setImmediate(r));
  assert.equal(counts.interrupts, 1);
  assert.equal(counts.forced, 1);
  await sub.close(); // already unmounted: resolves
});
