// Placeholder: the module that owns `spark export` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function exportCmd(_argv: string[]): Promise<number> {
  throw new SparkError('spark export is not implemented yet');
}
