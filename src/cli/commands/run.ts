// Placeholder: the module that owns `spark run` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function run(_argv: string[]): Promise<number> {
  throw new SparkError('spark run is not implemented yet');
}
