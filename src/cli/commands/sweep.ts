// Placeholder: the module that owns `spark sweep` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function sweep(_argv: string[]): Promise<number> {
  throw new SparkError('spark sweep is not implemented yet');
}
