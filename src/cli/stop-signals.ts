/**
 * SIGINT / SIGTERM handling of the commands that train (`spark run`, `spark finetune`): the first signal aborts
 * (the run stops after the current step, writes a checkpoint and ends KILLED); a second SIGTERM exits at once (143).
 */
export async function withStopSignals<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<{ value: T; stoppedBy: NodeJS.Signals | null }> {
  const stop = new AbortController();
  let stoppedBy: NodeJS.Signals | null = null;
  const handlers: Array<[NodeJS.Signals, () => void]> = [];
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const h = () => {
      if (stoppedBy === sig && sig === 'SIGTERM') process.exit(143); // a second SIGTERM: leave now
      stoppedBy ??= sig;
      stop.abort();
    };
    handlers.push([sig, h]);
    process.on(sig, h);
  }
  try {
    const value = await fn(stop.signal);
    return { value, stoppedBy };
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
}

/** Exit status of a run that ended KILLED: 143 after SIGTERM, 130 otherwise (SIGINT / Ctrl-C in the UI). */
export function killedExitCode(stoppedBy: NodeJS.Signals | null): number {
  return stoppedBy === 'SIGTERM' ? 143 : 130;
}
