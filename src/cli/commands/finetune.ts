// Placeholder: the module that owns `spark finetune` replaces this file.
import { SparkError } from '../../util/errors.js';

export const summary = '(not implemented yet)';

export default async function finetune(_argv: string[]): Promise<number> {
  throw new SparkError('spark finetune is not implemented yet');
}
