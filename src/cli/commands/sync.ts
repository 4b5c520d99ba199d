// Placeholder: the module that owns `spark sync` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function sync(_argv: string[]): Promise<number> {
  throw new SparkError('spark sync is not implemented yet');
}
