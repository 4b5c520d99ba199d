import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PlainLogger } from '../src/ui/plain.js';
import { createConsoleSubscriber, useInkFor, inCI } from '../src/ui/index.js';
import { demoConfig, demoRunEvents } from '../src/ui/demo.js';
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

const start = (logEvery: number, over: Partial<Extract<RunEvent, { type: 'run-start' }>> = {}): RunEvent => ({
  type: 'run-start',
  time: 0,
  runId: 'r1',
  runDir: 'runs/quickstart/r1',
  name: 'quickstart',
  config: demoConfig('quickstart', logEvery),
  encoder: 'resnet50',
  backend: 'cpu',
  totalSteps: 400,
  stepsPerEpoch: 40,
  totalEpochs: 10,
  startStep: 0,
  resumed: false,
  specPath: null,
  ...over,
});

const step = (n: number, loss: number, o: Partial<Extract<RunEvent, { type: 'step' }>> = {}): RunEvent => ({
  type: 'step',
  time: n,
  step: n,
  epoch: Math.floor((n - 1) / 40) + 1,
  epochStep: ((n - 1) % 40) + 1,
  loss,
  lr: 1.2e-3,
  wd: 0.041,
  gradNorm: 0.53,
  imgPerSec: 12.4,
  etaSec: 312,
  ...o,
});

test('plain logger: exact lines for start, steps, epoch, checkpoint, reconstruction, warning, log and run-end', () => {
  const out = new Sink();
  const log = new PlainLogger({ stream: out, logEvery: 20 });
  log.onEvent(start(20, { resumed: true, startStep: 100 }));
  for (let n = 101; n <= 120; n++) log.onEvent(step(n, n === 120 ? 0.8123 : 0.9));
  log.onEvent({ type: 'epoch', time: 0, epoch: 3, step: 120, meanLoss: 0.85, minLoss: 0.8123, seconds: 12.34 });
  log.onEvent({ type: 'checkpoint', time: 0, step: 120, epoch: 3, path: 'runs/quickstart/r1/checkpoint' });
  log.onEvent({ type: 'reconstruction', time: 0, step: 120, epoch: 3, path: 'runs/quickstart/r1/reconstruction/epoch-3.png', loss: 0.7 });
  log.onEvent({ type: 'metrics', time: 0, step: 120, epoch: 3, metrics: { val_top1: 71.234567, val_loss: 0.00012345 } });
  log.onEvent({ type: 'warning', time: 0, code: 'skipped-files', message: '2 unreadable images skipped' });
  log.onEvent({ type: 'log', time: 0, level: 'debug', message: 'not shown' });
  log.onEvent({ type: 'log', time: 0, level: 'error', message: 'tracker: HTTP 503' });
  for (let n = 121; n <= 125; n++) log.onEvent(step(n, 0.75, { etaSec: 3725.4, lr: 3.2e-6, wd: 0.2, gradNorm: 0.004, imgPerSec: 1234.56 }));
  log.onEvent({ type: 'run-end', time: 0, status: 'KILLED', step: 125, epoch: 4, finalLoss: 0.75, resumeCommand: 'spark run --resume runs/quickstart/r1' });
  // EMA (β 0.9, bias-corrected) after 19 × 0.9 then 0.8123
  const b = 0.9;
  let raw = 0;
  for (let i = 0; i < 19; i++) raw = b * raw + (1 - b) * 0.9;
  raw = b * raw + (1 - b) * 0.8123;
  const ema20 = (raw / (1 - b ** 20)).toFixed(4);
  for (let i = 0; i < 5; i++) raw = b * raw + (1 - b) * 0.75;
  const ema25 = (raw / (1 - b ** 25)).toFixed(4);
  assert.deepEqual(out.lines, [
    'run quickstart (r1) encoder resnet50, backend cpu, 400 steps = 10 epochs × 40 steps, resumed at step 100',
    'run folder: runs/quickstart/r1',
    `[step 120/400 ep 3/10] loss 0.8123 (ema ${ema20}) lr 1.2e-3 wd 0.041 gn 0.53 12.4 img/s eta 0:05:12`,
    '[epoch 3/10] step 120 mean loss 0.8500 min 0.8123 (12.3 s)',
    '[checkpoint] step 120 epoch 3: runs/quickstart/r1/checkpoint',
    '[reconstruction] epoch 3 loss 0.7000: runs/quickstart/r1/reconstruction/epoch-3.png',
    '[metrics] step 120 epoch 3: val_top1 71.23 val_loss 1.23e-4',
    'warning (skipped-files): 2 unreadable images skipped',
    'error: tracker: HTTP 503',
    // the last step is printed at the end even off the log_every grid
    `[step 125/400 ep 4/10] loss 0.7500 (ema ${ema25}) lr 3.2e-6 wd 0.200 gn 4.0e-3 1234.6 img/s eta 1:02:05`,
    '[run-end] KILLED at step 125 (epoch 4), final loss 0.7500',
    'resume with: spark run --resume runs/quickstart/r1',
  ]);
  assert.equal(out.text.includes('\u001b'), false, 'no ANSI escape codes');
});

test('plain logger: one step line per log_every (from the run config when not given) and none in between', () => {
  const out = new Sink();
  const log = new PlainLogger({ stream: out });
  log.onEvent(start(7));
  for (let n = 1; n <= 30; n++) log.onEvent(step(n, 1));
  const steps = out.lines.filter((l) => l.startsWith('[step')).map((l) => Number(/^\[step (\d+)/.exec(l)![1]));
  assert.deepEqual(steps, [7, 14, 21, 28]);
  log.onEvent({ type: 'run-end', time: 0, status: 'FINISHED', step: 30, epoch: 1, finalLoss: 1 });
  assert.match(out.lines[out.lines.length - 2]!, /^\[step 30\/400 /);
  assert.equal(out.lines[out.lines.length - 1], '[run-end] FINISHED at step 30 (epoch 1), final loss 1.0000');
});

test('plain logger: FAILED run prints the error; the prefix goes on every line', () => {
  const out = new Sink();
  const log = new PlainLogger({ stream: out, prefix: '[trial 2/4] ' });
  for (const e of demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 3, logEvery: 100 }).slice(0, -1)) log.onEvent(e);
  log.onEvent({ type: 'run-end', time: 0, status: 'FAILED', step: 3, epoch: 1, finalLoss: null, error: 'loss is NaN at step 3' });
  assert.ok(out.lines.every((l) => l.startsWith('[trial 2/4] ')), out.text);
  assert.equal(out.lines[out.lines.length - 2], '[trial 2/4] [run-end] FAILED at step 3 (epoch 1)');
  assert.equal(out.lines[out.lines.length - 1], '[trial 2/4] error: loss is NaN at step 3');
});

test('console chooser: Ink only on a TTY, outside CI, not TERM=dumb, not --plain', () => {
  assert.equal(useInkFor({ stream: { isTTY: true } }, {}), true);
  assert.equal(useInkFor({ stream: { isTTY: false } }, {}), false);
  assert.equal(useInkFor({ stream: {} }, {}), false);
  assert.equal(useInkFor({ stream: { isTTY: true }, plain: true }, {}), false);
  assert.equal(useInkFor({ stream: { isTTY: true } }, { CI: 'true' }), false);
  assert.equal(useInkFor({ stream: { isTTY: true } }, { CI: '1' }), false);
  assert.equal(useInkFor({ stream: { isTTY: true } }, { CI: 'false' }), true);
  assert.equal(useInkFor({ stream: { isTTY: true } }, { CI: '0' }), true);
  assert.equal(useInkFor({ stream: { isTTY: true } }, { TERM: 'dumb' }), false);
  assert.equal(inCI({ CONTINUOUS_INTEGRATION: 'yes' }), true);
});

test('createConsoleSubscriber on a non-TTY stream is the plain logger (clean lines)', async () => {
  const out = new Sink();
  const sub = createConsoleSubscriber({ stream: out as unknown as NodeJS.WriteStream, logEvery: 5 });
  for (const e of demoRunEvents({ totalEpochs: 1, stepsPerEpoch: 10 })) sub.onEvent(e);
  await sub.close?.();
  assert.match(out.lines[0]!, /^run quickstart \(r20260101-abc123\) encoder resnet_tiny, backend cpu, 10 steps = 1 epoch × 10 steps$/);
  assert.deepEqual(
    out.lines.filter((l) => l.startsWith('[step')).map((l) => /^\[step (\d+)\/10 ep 1\/1\]/.exec(l)?.[1]),
    ['5', '10'],
  );
  assert.match(out.lines[out.lines.length - 1]!, /^\[run-end\] FINISHED at step 10 \(epoch 1\), final loss \d\.\d{4}$/);
  assert.equal(out.text.includes('\u001b'), false);
});

test('plain console: first SIGINT calls onInterrupt, close() removes the handler', async () => {
  const out = new Sink();
  let n = 0;
  const before = process.listenerCount('SIGINT');
  const sub = createConsoleSubscriber({ stream: out as unknown as NodeJS.WriteStream, onInterrupt: () => n++ });
  assert.equal(process.listenerCount('SIGINT'), before + 1);
  process.emit('SIGINT');
  assert.equal(n, 1);
  assert.match(out.text, /interrupt: stopping after this step and writing a checkpoint/);
  await sub.close?.();
  assert.equal(process.listenerCount('SIGINT'), before);
});
