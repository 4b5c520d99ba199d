// Placeholder: the module that owns `spark compare` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function compare(_argv: string[]): Promise<number> {
  throw new SparkError('spark compare is not implemented yet');
}
