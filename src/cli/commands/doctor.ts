// Placeholder: the module that owns `spark doctor` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function doctor(_argv: string[]): Promise<number> {
  throw new SparkError('spark doctor is not implemented yet');
}
