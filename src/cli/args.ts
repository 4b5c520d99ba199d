import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../util/errors.js';

/**
 * `parseArgs` for a command: an unknown option, a missing value and the like become a one-line UsageError (exit 2)
 * that points at `spark <command> --help`, instead of node's TypeError (which would report an internal error).
 */
export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    throw new UsageError(`${(err as Error).message} (see \`spark ${command} --help\`)`);
  }
}
