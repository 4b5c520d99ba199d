/**
 * The Ink views fit an 80×24 terminal: every line of the run view and of the sweep board at most 80 cells, the frame
 * at most 24 lines, the header on its own line(s) above the bars, in every state a run goes through (long names and
 * paths, a resumed run, a sweep trial, warnings, logs, tracking offline, the final frames).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import React from 'react';
import { Box } from 'ink';
import { render } from 'ink-testing-library';
import { RunView } from '../src/ui/RunView.js';
import { SweepView, type SweepSnapshot, type TrialRow } from '../src/ui/sweep.js';
import { createInkRunSubscriber } from '../src/ui/ink-run.js';
import { applyEvent, initialRunState, takeSnapshot, type RunSnapshot } from '../src/ui/store.js';
import { demoRunEvents } from '../src/ui/demo.js';
import { stripAnsi } from '../src/ui/format.js';
import type { RunEvent } from '../src/train/events.js';
import { FakeStdin, FakeStdout } from './helpers/ink.js';

const COLS = 80;
const ROWS = 24;
/** A frame as tall as the terminal makes Ink clear the screen on each redraw (and drop its last newline): one less. */
const FRAME_ROWS = ROWS - 1;

function snapshotOf(events: RunEvent[], now?: number): RunSnapshot {
  const s = initialRunState();
  for (const e of events) applyEvent(s, e);
  return takeSnapshot(s, now ?? events[events.length - 1]!.time);
}

/** Lines of a frame (ANSI removed, trailing blank lines dropped); width in terminal cells (one per code point here). */
function lines(frame: string): string[] {
  const ls = stripAnsi(frame).split('\n');
  while (ls.length && ls[ls.length - 1]!.trim() === '') ls.pop();
  return ls;
}

function assertFits(frame: string, what: string): string[] {
  const ls = lines(frame);
  for (const l of ls) assert.ok([...l].length <= COLS, `${what}: a line of ${[...l].length} cells:\n${l}\n---\n${ls.join('\n')}`);
  assert.ok(ls.length <= FRAME_ROWS, `${what}: ${ls.length} lines:\n${ls.join('\n')}`);
  return ls;
}

function renderAt80(el: React.JSX.Element): string {
  const r = render(<Box width={COLS}>{el}</Box>);
  const f = r.lastFrame() ?? '';
  r.unmount();
  return f;
}

/** A quickstart-like run with the long names spark really shows (experiment/name, run id, paths, encoder). */
function longRun(o: { resumedAt?: number; sweep?: boolean } = {}): RunEvent[] {
  const runDir = '/home/someone/projects/spark/runs/quickstart/20261204-204306-84f7';
  const ev = demoRunEvents({ name: 'quickstart', runId: '20261204-204306-84f7', totalEpochs: 1600, stepsPerEpoch: 312, runDir, ...(o.resumedAt ? { resumedAt: o.resumedAt } : {}) }).slice(0, 40);
  const start = ev[0] as Extract<RunEvent, { type: 'run-start' }>;
  ev[0] = {
    ...start,
    encoder: 'convnext(depths=[3,3,27,3],dims=[192,384,768,1536])',
    backend: 'tensorflow',
    config: { ...start.config, tracking: { ...start.config.tracking, experiment: 'spark-quickstart' } },
    ...(o.sweep ? { sweep: { sweepDir: '/tmp/sw', trial: 2, trialName: 'mask_ratio=0.75,encoder=convnext_mini', params: { 'model.mask_ratio': 0.75, 'model.encoder': 'convnext_mini' } } } : {}),
  };
  const t = ev[ev.length - 1]!.time;
  ev.push({ type: 'reconstruction', time: t, step: 30, epoch: 1, loss: 0.9959, path: `${runDir}/reconstructions/epoch-0001.png` } as RunEvent);
  ev.push({ type: 'metrics', time: t, step: 30, epoch: 1, metrics: { val_top1: 12.5, val_top5: 40.25, probe_top1: 33.3, probe_top5: 77.7, recon_loss: 0.99 } });
  ev.push({ type: 'checkpoint', time: t, step: 30, epoch: 1, path: `${runDir}/checkpoint` });
  for (let i = 0; i < 3; i++) ev.push({ type: 'log', time: t, level: 'warn', message: `data: /data/imagenet/train/n0144${i}/very_long_file_name_${i}.JPEG could not be decoded (Input buffer contains unsupported image format)` } as RunEvent);
  ev.push({ type: 'warning', time: t, code: 'tracking-offline', message: `MLflow server http://127.0.0.1:5000 unreachable when the run started (ECONNREFUSED); the run starts offline: its MLflow run is created and every call replayed from ${runDir}/mlflow-offline.jsonl when the server answers (retried on each flush), or by \`npx spark sync --run ${runDir}\`` });
  ev.push({ type: 'warning', time: t, code: 'memory', message: 'resident memory grew by 1.2 GiB over the last 100 steps; tensors may be leaking somewhere in a custom callback' } as RunEvent);
  return ev;
}

test('run view at 80 columns: every line fits, the header stays above the bars, the bars and sparkline shrink', () => {
  for (const [what, ev] of [
    ['running', longRun()],
    ['resumed', longRun({ resumedAt: 13 })],
    ['sweep trial', longRun({ sweep: true })],
    ['starting', longRun().slice(0, 1)],
  ] as const) {
    const ls = assertFits(renderAt80(<RunView s={snapshotOf([...ev])} width={COLS} height={FRAME_ROWS} />), what);
    assert.match(ls[0]!, /^spark spark-quickstart\/quickstart  /, `${what}: the header starts the frame`);
    const firstBar = ls.findIndex((l) => /^epoch \d+\/1600 /.test(l));
    assert.ok(firstBar >= 1 && firstBar <= 3, `${what}: the epoch bar follows the header:\n${ls.join('\n')}`);
    for (const l of ls.slice(0, firstBar)) assert.doesNotMatch(l, /[░█]/, `${what}: no bar inside the header`);
    assert.match(ls[firstBar + 1]!, /^run +[░█▏▎▍▌▋▊▉]+ \d+\/499200 /, `${what}: the run bar on one line`);
    if (ev.length > 1) {
      assert.match(ls.join('\n'), /ETA /);
      assert.ok(ls.some((l) => /^loss +\d\.\d{4}  ema \d\.\d{4}  min \d\.\d{4}  [▁▂▃▄▅▆▇█]+$/.test(l)), `${what}: the loss line keeps a sparkline`);
      assert.ok(ls.some((l) => /^checkpoint +step 30 \(epoch 1\), .*…/.test(l)), `${what}: a long path is cut in the middle:\n${ls.join('\n')}`);
    }
  }
  // the two header lines say what and which run
  const ls = lines(renderAt80(<RunView s={snapshotOf(longRun({ resumedAt: 13 }))} width={COLS} height={FRAME_ROWS} />));
  assert.match(ls[1]!, /^run 20261204-204306-84f7  resumed at step 13$/);
});

test('run view at 80 columns: the tracking notice is cut to one line while the run goes, shown whole in the final frame when it fits', () => {
  const ev = longRun().filter((e) => e.type !== 'log' && !(e.type === 'warning' && e.code === 'memory'));
  const t = ev[ev.length - 1]!.time;
  const live = assertFits(renderAt80(<RunView s={snapshotOf(ev)} width={COLS} height={FRAME_ROWS} />), 'live');
  const offline = live.filter((l) => /^tracking +offline: MLflow server/.test(l));
  assert.equal(offline.length, 1, live.join('\n'));
  assert.ok(offline[0]!.endsWith('…'), offline[0]);
  assert.doesNotMatch(live.join('\n'), /sync --run/);
  const fin = assertFits(renderAt80(<RunView s={snapshotOf([...ev, { type: 'run-end', time: t, status: 'FINISHED', step: 36, epoch: 1, finalLoss: 0.9 }])} width={COLS} height={FRAME_ROWS} />), 'final');
  assert.match(fin.join(' '), /npx spark sync --run/, fin.join('\n'));
  assert.ok(fin.some((l) => l.trimEnd().endsWith('20261204-204306-84f7`')), 'the notice is whole, to its end');
});

test('run view at 80 columns: the final frames fit, and the resume command is printed whole', () => {
  const ev = longRun().filter((e) => e.type !== 'warning' && e.type !== 'log');
  const t = ev[ev.length - 1]!.time;
  const resume = 'npx spark run --resume runs/quickstart/20261204-204306-84f7';
  const killed = assertFits(renderAt80(<RunView s={snapshotOf([...ev, { type: 'run-end', time: t, status: 'KILLED', step: 36, epoch: 1, finalLoss: 0.9, resumeCommand: resume }])} width={COLS} height={FRAME_ROWS} />), 'killed');
  assert.ok(killed.includes(`  resume with: ${resume}`), killed.join('\n'));
  const error = 'NaN loss at step 36: the loss became NaN after the optimizer step; lower train.optimizer.base_lr or check the data for broken images';
  const failed = assertFits(renderAt80(<RunView s={snapshotOf([...ev, { type: 'run-end', time: t, status: 'FAILED', step: 36, epoch: 1, finalLoss: null, error }])} width={COLS} height={FRAME_ROWS} />), 'failed');
  assert.match(failed.join('\n'), /✘ failed at step 36/);
  const stopping = snapshotOf(ev);
  const st = assertFits(renderAt80(<RunView s={{ ...stopping, stopping: true }} width={COLS} height={FRAME_ROWS} />), 'stopping');
  assert.match(st[st.length - 1]!, /^stopping… finishing the step and writing a checkpoint/);
});

function trialRows(n: number): TrialRow[] {
  return Array.from({ length: n }, (_, i) => ({
    index: i,
    name: `trial-${i}`,
    params: { 'model.mask_ratio': [0.4, 0.6, 0.75][i % 3], 'train.optimizer.base_lr': [1e-3, 2e-3][i % 2], 'model.encoder': i % 2 ? 'convnext_mini' : 'resnet_mini' },
    status: i < 2 ? 'finished' : i === 2 ? 'running' : i === 3 ? 'failed' : 'pending',
    loss: i < 3 ? 0.9 - i / 100 : null,
    step: i < 2 ? 500 : i === 2 ? 120 : 0,
    totalSteps: 500,
    message: i === 3 ? 'out of memory: the micro-batch of 64 images at 224 px needs 21.3 GiB, the device has 16 GiB' : '',
    runId: `r${i}`,
  }));
}

test('sweep board at 80×24: trial rows and the running trial fit; many trials are shown as a window', () => {
  for (const n of [3, 6, 20]) {
    const rows = trialRows(n);
    const s: SweepSnapshot = {
      now: 0,
      rows,
      varying: ['model.mask_ratio', 'train.optimizer.base_lr', 'model.encoder'],
      detail: snapshotOf(longRun({ sweep: true }).filter((e) => e.type !== 'log' && e.type !== 'warning')),
      detailIndex: 2,
      stopping: false,
      closed: false,
    };
    const ls = assertFits(renderAt80(<SweepView s={s} width={COLS} height={FRAME_ROWS} />), `${n} trials`);
    assert.match(ls[0]!, /^spark sweep /);
    assert.ok(ls.some((l) => /^▶ 3 /.test(l)), `${n} trials: the running trial is on the board:\n${ls.join('\n')}`);
    if (n === 20) assert.ok(ls.some((l) => /more trials/.test(l)), `the board says trials are not shown:\n${ls.join('\n')}`);
  }
});

test('the Ink subscriber on an 80×24 terminal: every frame it writes fits', async () => {
  const stdout = new FakeStdout(ROWS, COLS);
  const sub = createInkRunSubscriber({
    stream: stdout as unknown as NodeJS.WriteStream,
    stdin: new FakeStdin() as unknown as NodeJS.ReadStream,
    handleSigint: false,
    patchConsole: false,
    debug: true,
    intervalMs: 0,
  });
  const ev = longRun();
  for (const e of ev) sub.onEvent(e);
  const t = ev[ev.length - 1]!.time;
  sub.onEvent({ type: 'run-end', time: t, status: 'KILLED', step: 36, epoch: 1, finalLoss: 0.9, resumeCommand: 'npx spark run --resume runs/quickstart/20261204-204306-84f7' });
  await sub.close();
  const resume = 'resume with: npx spark run --resume runs/quickstart/20261204-204306-84f7\n';
  // the resume command comes once, after the view, as a plain line (Ink would break a long one with a newline)
  assert.equal(stdout.frames[stdout.frames.length - 1], resume);
  assert.equal(stripAnsi(stdout.frames.join('')).split('resume with:').length, 2, 'printed once');
  const frames = stdout.frames.slice(0, -1).filter((f) => stripAnsi(f).includes('spark '));
  assert.ok(frames.length >= 2, `${frames.length} frames`);
  for (const f of frames) assertFits(f, 'frame');
  assert.match(stripAnsi(frames[frames.length - 1]!), /■ stopped at step 36/);
});
