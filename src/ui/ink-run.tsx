/**
 * The Ink run subscriber: events fold into a plain `RunState`; a throttle publishes snapshots to React at most
 * every `intervalMs` (default 125 ms, i.e. ≤ 8 Hz), plus a 1 Hz heartbeat so ages and elapsed time move while the
 * loop is busy elsewhere. On run-end the final frame is rendered synchronously and Ink unmounts; `close()` resolves
 * once the unmount has completed.
 */
import React from 'react';
import { render, type Instance } from 'ink';
import type { RunEvent, RunSubscriber } from '../train/events.js';
import { RunApp } from './RunView.js';
import { Interrupter } from './interrupt.js';
import { applyEvent, initialRunState, realClock, takeSnapshot, Throttle, type Clock } from './store.js';

export interface InkRunOptions {
  stream?: NodeJS.WriteStream;
  stdin?: NodeJS.ReadStream;
  stderr?: NodeJS.WriteStream;
  onInterrupt?: () => void;
  /** Minimum time between two frames (ms). */
  intervalMs?: number;
  clock?: Clock;
  /** Install a SIGINT handler (default: when onInterrupt is given). */
  handleSigint?: boolean;
  /** Forced exit on the second Ctrl-C (default process.exit(130)). */
  forceExit?: () => void;
  /** Ink's console patching (default true: stray console output is printed above the frame). */
  patchConsole?: boolean;
  /** Ink debug mode (every frame appended; tests). */
  debug?: boolean;
}

export interface InkRunSubscriber extends RunSubscriber {
  /** Number of re-renders requested so far (for tests and diagnostics). */
  readonly frames: number;
  close(): Promise<void>;
}

export function createInkRunSubscriber(opts: InkRunOptions = {}): InkRunSubscriber {
  const clock = opts.clock ?? realClock;
  const state = initialRunState();
  let instance: Instance | null = null;
  let frames = 0;
  let finished = false;
  let exited: Promise<unknown> = Promise.resolve();
  let resumeLine: string | null = null;

  const interrupter = new Interrupter({
    onInterrupt: opts.onInterrupt,
    handleSigint: opts.handleSigint,
    forceExit: opts.forceExit,
    onFirst: () => {
      state.stopping = true;
      publish();
    },
    cleanup: () => finish(),
  });

  const tree = (): React.JSX.Element => <RunApp s={takeSnapshot(state, clock.now())} controller={interrupter} />;
  /** One frame: a synchronous re-render with a fresh snapshot. */
  const publish = (): void => {
    if (!instance) return;
    frames++;
    instance.rerender(tree());
  };
  const throttle = new Throttle(publish, opts.intervalMs ?? 125, clock);
  instance = render(tree(), {
    stdout: opts.stream ?? process.stdout,
    stdin: opts.stdin ?? process.stdin,
    stderr: opts.stderr ?? process.stderr,
    exitOnCtrlC: false,
    patchConsole: opts.patchConsole ?? true,
    maxFps: 10,
    debug: opts.debug ?? false,
  });
  exited = instance.waitUntilExit().catch(() => undefined);

  const heartbeat = setInterval(() => throttle.poke(), 1000);
  heartbeat.unref();

  function finish(): void {
    if (finished) return;
    finished = true;
    clearInterval(heartbeat);
    throttle.stop();
    publish();
    instance?.unmount();
  }

  return {
    get frames() {
      return frames;
    },
    onEvent(e: RunEvent): void {
      if (finished) return;
      applyEvent(state, e);
      if (e.type === 'run-end') {
        if (e.resumeCommand && e.status !== 'FINISHED') resumeLine = `resume with: ${e.resumeCommand}\n`;
        finish();
      } else throttle.poke();
    },
    async close(): Promise<void> {
      finish();
      await exited;
      interrupter.dispose();
      // below the final frame, as a plain line: the terminal wraps it softly, so it pastes as one command
      if (resumeLine) (opts.stream ?? process.stdout).write(resumeLine);
      resumeLine = null;
    },
  };
}
