// Placeholder: the module that owns `spark reconstruct` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function reconstruct(_argv: string[]): Promise<number> {
  throw new SparkError('spark reconstruct is not implemented yet');
}
