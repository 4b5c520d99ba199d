// Placeholder: the module that owns `spark list` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function list(_argv: string[]): Promise<number> {
  throw new SparkError('spark list is not implemented yet');
}
