/**
 * Ctrl-C policy shared by the run view, the sweep board and the plain logger: the first Ctrl-C asks the trainer
 * to stop gracefully (`onInterrupt`: it finishes the step, writes a checkpoint and emits run-end KILLED); a second
 * one forces the process out (exit code 130) after restoring the terminal.
 *
 * Ctrl-C arrives as a keypress when Ink holds stdin in raw mode, and as SIGINT otherwise (plain mode, pipes,
 * `kill -INT`); both go through the same `Interrupter`.
 */
import type { InterruptController } from './RunView.js';

export interface InterrupterOptions {
  onInterrupt?: () => void;
  /** Called once on the first interrupt, before `onInterrupt` (the views mark themselves "stopping"). */
  onFirst?: () => void;
  /** Restore the terminal before a forced exit (unmount Ink). */
  cleanup?: () => void;
  /** The forced exit; default `process.exit(130)`. */
  forceExit?: () => void;
  /** Install a SIGINT handler while active (default true when `onInterrupt` is given). */
  handleSigint?: boolean;
}

export class Interrupter implements InterruptController {
  count = 0;
  private sigint: (() => void) | null = null;

  constructor(private readonly opts: InterrupterOptions) {
    const handle = opts.handleSigint ?? opts.onInterrupt != null;
    if (handle) {
      this.sigint = () => this.interrupt();
      process.on('SIGINT', this.sigint);
    }
  }

  interrupt(): void {
    this.count++;
    if (this.count === 1 && this.opts.onInterrupt) {
      this.opts.onFirst?.();
      try {
        this.opts.onInterrupt();
      } catch {
        this.force();
      }
      return;
    }
    this.force();
  }

  private force(): void {
    try {
      this.opts.cleanup?.();
    } finally {
      this.dispose();
      (this.opts.forceExit ?? (() => process.exit(130)))();
    }
  }

  /** Remove the SIGINT handler (on close). */
  dispose(): void {
    if (this.sigint) {
      process.off('SIGINT', this.sigint);
      this.sigint = null;
    }
  }
}
