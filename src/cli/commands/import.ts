// Placeholder: the module that owns `spark import` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function importCmd(_argv: string[]): Promise<number> {
  throw new SparkError('spark import is not implemented yet');
}
