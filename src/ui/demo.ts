/**
 * A scripted, model-free event stream for the console views: used by the UI tests and by the terminal check
 * (`npx tsx src/ui/demo.ts [--plain] [--stuck] [--steps N] [--epochs E] [--ms M]` drives the real console subscriber with timed fake
 * steps; Ctrl-C stops it the way the trainer does: a checkpoint event, then run-end KILLED).
 */
import type { ExperimentConfig } from '../spec/types.js';
import type { RunEvent, RunSubscriber } from '../train/events.js';
import { commandHint } from '../util/hint.js';

export interface DemoOptions {
  name?: string;
  runId?: string;
  totalEpochs?: number;
  stepsPerEpoch?: number;
  batchSize?: number;
  /** Time of run-start (ms since epoch). */
  t0?: number;
  /** Simulated time per step (ms). */
  stepMs?: number;
  logEvery?: number;
  resumedAt?: number;
  runDir?: string;
}

/** Minimal config for run-start events (only the fields the views read are meaningful). */
export function demoConfig(name: string, logEvery: number): ExperimentConfig {
  return {
    name,
    description: null,
    task: 'pretrain',
    model: { encoder: 'resnet_tiny', decoder: { type: 'light', width: 64 }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' },
    data: {
      source: 'synthetic',
      root: null,
      val_root: null,
      input_size: 64,
      crop_scale: [0.67, 1],
      crop_ratio: [0.75, 1.3333],
      hflip: 0.5,
      workers: 0,
      prefetch: 2,
      synthetic_size: 64,
    },
    train: {
      epochs: 3,
      steps: null,
      batch_size: 8,
      accumulate: 1,
      optimizer: {
        name: 'lamb',
        base_lr: 2e-4,
        base_batch_size: 256,
        betas: null,
        eps: 1e-6,
        weight_decay: 0.04,
        weight_decay_end: 0.2,
        clip_grad: 5,
      },
      warmup_epochs: 1,
      warmup_steps: null,
    },
    runtime: { backend: 'cpu', seed: 0, threads: null },
    output: { dir: 'runs', checkpoint_every: 0, log_every: logEvery, reconstruct_every: 0, reconstruct_images: 4 },
    tracking: { enabled: true, uri: null, experiment: 'demo-exp', run_name: null, tags: {}, close_timeout: 5 },
    sweep: null,
    finetune: null,
  };
}

/** The loss the demo reports at a step (a noisy decaying curve, deterministic). */
export function demoLoss(step: number): number {
  return 0.3 + 0.7 * Math.exp(-step / 40) + 0.02 * Math.sin(step * 1.7);
}

/** One `step` event of the demo. */
export function demoStep(o: Required<Omit<DemoOptions, 'resumedAt'>>, step: number, time: number): RunEvent {
  const total = o.totalEpochs * o.stepsPerEpoch;
  return {
    type: 'step',
    time,
    step,
    epoch: Math.floor((step - 1) / o.stepsPerEpoch) + 1,
    epochStep: ((step - 1) % o.stepsPerEpoch) + 1,
    loss: demoLoss(step),
    lr: 1.2e-3 * Math.min(1, step / o.stepsPerEpoch),
    wd: 0.04 + (0.16 * step) / total,
    gradNorm: 0.5 + 0.1 * Math.cos(step),
    imgPerSec: (o.batchSize * 1000) / o.stepMs,
    etaSec: ((total - step) * o.stepMs) / 1000,
    memory: { numTensors: 1234, numBytes: 56 * 1024 * 1024, rssBytes: 512 * 1024 * 1024 },
  };
}

export function withDefaults(opts: DemoOptions = {}): Required<Omit<DemoOptions, 'resumedAt'>> {
  return {
    name: opts.name ?? 'quickstart',
    runId: opts.runId ?? 'r20260101-abc123',
    totalEpochs: opts.totalEpochs ?? 3,
    stepsPerEpoch: opts.stepsPerEpoch ?? 10,
    batchSize: opts.batchSize ?? 8,
    t0: opts.t0 ?? 1_767_225_600_000,
    stepMs: opts.stepMs ?? 500,
    logEvery: opts.logEvery ?? 5,
    runDir: opts.runDir ?? 'runs/quickstart/r20260101-abc123',
  };
}

export function demoStart(o: Required<Omit<DemoOptions, 'resumedAt'>>, startStep = 0): RunEvent {
  return {
    type: 'run-start',
    time: o.t0,
    runId: o.runId,
    runDir: o.runDir,
    name: o.name,
    config: demoConfig(o.name, o.logEvery),
    encoder: 'resnet_tiny',
    backend: 'cpu',
    totalSteps: o.totalEpochs * o.stepsPerEpoch,
    stepsPerEpoch: o.stepsPerEpoch,
    totalEpochs: o.totalEpochs,
    startStep,
    resumed: startStep > 0,
    specPath: 'experiments/quickstart.yaml',
  };
}

/** A complete scripted run: start, steps, epochs with checkpoints, a skipped-files warning, tracking offline and back. */
export function demoRunEvents(opts: DemoOptions = {}): RunEvent[] {
  const o = withDefaults(opts);
  const start = opts.resumedAt ?? 0;
  const total = o.totalEpochs * o.stepsPerEpoch;
  const ev: RunEvent[] = [demoStart(o, start)];
  let t = o.t0;
  ev.push({ type: 'warning', time: t, code: 'skipped-files', message: '2 unreadable images skipped' });
  let epochLosses: number[] = [];
  for (let step = start + 1; step <= total; step++) {
    t += o.stepMs;
    const e = demoStep(o, step, t);
    ev.push(e);
    if (e.type === 'step') epochLosses.push(e.loss);
    if (step === start + 3) ev.push({ type: 'warning', time: t, code: 'tracking-offline', message: 'server unreachable, buffering to disk' });
    if (step % o.stepsPerEpoch === 0) {
      const epoch = step / o.stepsPerEpoch;
      ev.push({
        type: 'epoch',
        time: t,
        epoch,
        step,
        meanLoss: epochLosses.reduce((a, b) => a + b, 0) / epochLosses.length,
        minLoss: Math.min(...epochLosses),
        seconds: (epochLosses.length * o.stepMs) / 1000,
      });
      epochLosses = [];
      ev.push({ type: 'checkpoint', time: t, step, epoch, path: `${o.runDir}/checkpoints/step-${step}.safetensors` });
    }
  }
  ev.push({ type: 'run-end', time: t, status: 'FINISHED', step: total, epoch: o.totalEpochs, finalLoss: demoLoss(total) });
  return ev;
}

/** Drive a subscriber live (real time): used by the terminal check. Resolves with the exit code. */
export async function driveLive(sub: RunSubscriber, o: Required<Omit<DemoOptions, 'resumedAt'>>, ctl: { stop: boolean }): Promise<number> {
  const total = o.totalEpochs * o.stepsPerEpoch;
  sub.onEvent({ ...demoStart(o), time: Date.now() } as RunEvent);
  sub.onEvent({ type: 'warning', time: Date.now(), code: 'skipped-files', message: '2 unreadable images skipped' });
  let step = 0;
  while (step < total && !ctl.stop) {
    await new Promise((r) => setTimeout(r, o.stepMs));
    step++;
    sub.onEvent(demoStep(o, step, Date.now()));
    if (step % o.stepsPerEpoch === 0) {
      sub.onEvent({ type: 'checkpoint', time: Date.now(), step, epoch: step / o.stepsPerEpoch, path: `${o.runDir}/checkpoints/step-${step}.safetensors` });
    }
  }
  const epoch = Math.max(1, Math.ceil(step / o.stepsPerEpoch));
  if (ctl.stop) {
    // what the trainer does on a graceful stop: finish the step, write a checkpoint, end as KILLED
    sub.onEvent({ type: 'checkpoint', time: Date.now(), step, epoch, path: `${o.runDir}/checkpoints/step-${step}.safetensors` });
    sub.onEvent({
      type: 'run-end',
      time: Date.now(),
      status: 'KILLED',
      step,
      epoch,
      finalLoss: demoLoss(step),
      resumeCommand: commandHint(['run', '--resume', { path: o.runDir }]),
    });
  } else {
    sub.onEvent({ type: 'run-end', time: Date.now(), status: 'FINISHED', step, epoch, finalLoss: demoLoss(step) });
  }
  await sub.close?.();
  return ctl.stop ? 130 : 0;
}

const isMain = process.argv[1] != null && import.meta.url === new URL(`file://${(await import('node:fs')).realpathSync(process.argv[1])}`).href;
if (isMain) {
  const { parseArgs } = await import('node:util');
  const { values } = parseArgs({
    options: { plain: { type: 'boolean' }, stuck: { type: 'boolean' }, steps: { type: 'string' }, ms: { type: 'string' }, epochs: { type: 'string' } },
  });
  const { createConsoleSubscriber } = await import('./index.js');
  const ctl = { stop: false };
  const o = withDefaults({
    stepsPerEpoch: values.steps ? Number(values.steps) : 20,
    totalEpochs: values.epochs ? Number(values.epochs) : 5,
    stepMs: values.ms ? Number(values.ms) : 200,
  });
  const sub = createConsoleSubscriber({
    plain: values.plain,
    onInterrupt: () => {
      // --stuck simulates a trainer that does not stop (to exercise the forced exit on a second Ctrl-C)
      if (!values.stuck) ctl.stop = true;
    },
  });
  const code = await driveLive(sub, o, ctl);
  process.stdout.write(`demo: exit ${code}\n`);
  process.exitCode = code;
}
