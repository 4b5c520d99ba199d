// Placeholder: the module that owns `spark probe` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function probe(_argv: string[]): Promise<number> {
  throw new SparkError('spark probe is not implemented yet');
}
