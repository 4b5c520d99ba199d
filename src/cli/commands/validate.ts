// Placeholder: the module that owns `spark validate` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function validate(_argv: string[]): Promise<number> {
  throw new SparkError('spark validate is not implemented yet');
}
