/** The Ink-or-plain decision, shared by the run console and the sweep console. */

/** True when `CI` / `CONTINUOUS_INTEGRATION` is set to anything but '' / '0' / 'false'. */
export function inCI(env: NodeJS.ProcessEnv = process.env): boolean {
  const on = (k: string): boolean => k in env && env[k] !== '' && env[k] !== '0' && env[k] !== 'false';
  return on('CI') || on('CONTINUOUS_INTEGRATION');
}

/** Ink when the stream is a TTY, not in CI, not TERM=dumb and not `plain`. */
export function useInkFor(opts: { plain?: boolean; stream?: { isTTY?: boolean } }, env: NodeJS.ProcessEnv = process.env): boolean {
  const stream = opts.stream ?? process.stdout;
  return !opts.plain && stream.isTTY === true && !inCI(env) && env['TERM'] !== 'dumb';
}
