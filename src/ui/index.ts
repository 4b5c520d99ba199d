/**
 * Console subscribers for runs and sweeps: the Ink run view / sweep board on an interactive terminal, plain
 * lines otherwise (pipes, CI, `--plain`). The reconstruction grid lives in `./reconstruction.js` (it loads tfjs
 * and sharp, so it is not re-exported here).
 */
import type { RunSubscriber } from '../train/events.js';
import { createInkRunSubscriber } from './ink-run.js';
import { Interrupter } from './interrupt.js';
import { PlainLogger } from './plain.js';
import { useInkFor } from './tty.js';

export { PlainLogger, createPlainLogger, formatStepLine } from './plain.js';
export { createInkRunSubscriber } from './ink-run.js';
export { inCI, useInkFor } from './tty.js';
export { createSweepConsole, type SweepConsole, type SweepConsoleOptions, type TrialStatus, type TrialInfo } from './sweep.js';

export interface ConsoleOptions {
  /** Force the plain logger. */
  plain?: boolean;
  /** Output stream (default process.stdout); its `isTTY` decides Ink vs plain. */
  stream?: NodeJS.WriteStream;
  /** The trainer's graceful stop, called on the first Ctrl-C (a second one exits with 130). */
  onInterrupt?: () => void;
  /** Plain mode: a step line every N steps (default: the run's output.log_every). */
  logEvery?: number;
}

/** A console subscriber for one run: the Ink view on an interactive terminal, the plain logger otherwise. */
export function createConsoleSubscriber(opts: ConsoleOptions = {}): RunSubscriber {
  if (useInkFor(opts)) {
    return createInkRunSubscriber({ stream: opts.stream, onInterrupt: opts.onInterrupt });
  }
  const logger = new PlainLogger({ stream: opts.stream, logEvery: opts.logEvery });
  const stream = opts.stream ?? process.stdout;
  const interrupter = opts.onInterrupt
    ? new Interrupter({
        onInterrupt: opts.onInterrupt,
        onFirst: () => stream.write('interrupt: stopping after this step and writing a checkpoint (Ctrl-C again to quit now)\n'),
      })
    : null;
  return {
    onEvent: (e) => logger.onEvent(e),
    close: async () => {
      interrupter?.dispose();
      await logger.close();
    },
  };
}
