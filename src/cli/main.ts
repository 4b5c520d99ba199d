#!/usr/bin/env node
/**
 * `spark` entry point: dispatches to one module per command under ./commands/. Each command module exports
 * `summary` (one line for `spark --help`) and a default `async (argv: string[]) => number` returning the exit
 * code. Errors are printed here, in one place: SpecError as `file:line:col: message` + excerpt, other
 * SparkErrors as `spark: message`, each with its own exit code.
 */
import { SparkError, SpecError } from '../util/errors.js';

export interface CommandModule {
  summary: string;
  default: (argv: string[]) => Promise<number>;
}

/** Command name → lazy module import (keeps `spark validate` from loading TensorFlow). */
export const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  run: () => import('./commands/run.js'),
  validate: () => import('./commands/validate.js'),
  doctor: () => import('./commands/doctor.js'),
  list: () => import('./commands/list.js'),
  reconstruct: () => import('./commands/reconstruct.js'),
  compare: () => import('./commands/compare.js'),
  sync: () => import('./commands/sync.js'),
  sweep: () => import('./commands/sweep.js'),
  import: () => import('./commands/import.js'),
  export: () => import('./commands/export.js'),
  finetune: () => import('./commands/finetune.js'),
  probe: () => import('./commands/probe.js'),
  dataset: () => import('./commands/dataset.js'),
};

async function help(): Promise<void> {
  const lines = ['usage: spark <command> [options]', '', 'commands:'];
  for (const [name, load] of Object.entries(COMMANDS)) {
    let summary = '';
    try {
      summary = (await load()).summary;
    } catch {
      summary = '(not available in this build)';
    }
    lines.push(`  ${name.padEnd(12)} ${summary}`);
  }
  lines.push('', 'Run `spark <command> --help` for the options of a command.');
  process.stdout.write(lines.join('\n') + '\n');
}

/** Print an error the way every command reports it; returns the exit code. */
export function reportError(err: unknown): number {
  if (err instanceof SpecError) {
    process.stderr.write(err.format() + '\n');
    return err.exitCode;
  }
  if (err instanceof SparkError) {
    process.stderr.write(`spark: ${err.message}\n`);
    return err.exitCode;
  }
  const e = err as Error;
  process.stderr.write(`spark: internal error: ${e?.stack ?? String(err)}\n`);
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  // image decoding (sharp/libvips, also inside the loader's worker threads) runs on libuv's pool: 4 threads by default
  process.env['UV_THREADPOOL_SIZE'] ??= String(Math.max(4, (await import('node:os')).availableParallelism()));
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    await help();
    return cmd ? 0 : 2;
  }
  if (cmd === '--version' || cmd === '-V') {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`spark ${pkg.version}\n`);
    return 0;
  }
  const load = COMMANDS[cmd];
  if (!load) {
    process.stderr.write(`spark: unknown command '${cmd}' (see \`spark --help\`)\n`);
    return 2;
  }
  try {
    const mod = await load();
    return await mod.default(rest);
  } catch (err) {
    return reportError(err);
  }
}

const isEntry = process.argv[1] && import.meta.url === new URL(`file://${(await import('node:fs')).realpathSync(process.argv[1])}`).href;
if (isEntry) {
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
}
