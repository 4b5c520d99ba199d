/**
 * `spark validate <spec…> [--set a.b=c …] [--print]`: check specs (with their `extends:` chain and overrides)
 * without running anything. Prints `ok <file>` per valid spec and the located error otherwise; exit 0 when all are
 * valid, 2 when any is not. A base file (named `_…`, or extended by another of the given specs) that is not a full
 * spec is checked as far as it can be alone (spec/base.ts) and reported as `ok <file> (base file, not a full spec…)`.
 * Imports only the spec loader, so TensorFlow is never loaded.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadExperiment } from '../../spec/load.js';
import { checkBaseSpec, extendedBy, isBaseName } from '../../spec/base.js';
import { SpecError, UsageError } from '../../util/errors.js';

export const summary = 'check experiment specs (extends, --set overrides, schema) without running them';

const USAGE = `usage: spark validate <spec.yaml…> [--set key=value …] [--print]

Checks each spec: YAML syntax, extends chain, --set overrides, schema (types, ranges, unknown keys)
and cross-field rules. Prints "ok <file>" for a valid spec, the error located as file:line:col otherwise.
A base file (its name starts with '_', or another given spec extends it) that is not a full spec alone
is checked for everything but required fields and cross-field rules: "ok <file> (base file, not a full spec …)".

options:
  -s, --set key=value   override a field after extends merging (repeatable), e.g. --set model.mask_ratio=0.75
  -p, --print           print the resolved config (defaults filled in) of each valid spec as YAML
  -h, --help            show this help

exit status: 0 all valid, 2 some spec invalid or bad usage`;

export default async function validate(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        set: { type: 'string', short: 's', multiple: true },
        print: { type: 'boolean', short: 'p' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`);
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const files = parsed.positionals;
  if (files.length === 0) throw new UsageError(`give at least one spec file\n${USAGE}`);
  const set = parsed.values.set ?? [];
  let failed = 0;
  let bases: Map<string, string[]> | null = null; // base file → the given specs that extend it (computed when needed)
  for (const file of files) {
    try {
      const loaded = await loadExperiment(file, { set });
      process.stdout.write(`ok ${file}\n`);
      if (parsed.values.print) process.stdout.write(loaded.resolvedYaml.replace(/^/gm, '  ').trimEnd() + '\n');
    } catch (err) {
      if (!(err instanceof SpecError)) throw err;
      bases ??= extendedBy(files);
      const users = bases.get(path.resolve(file)) ?? [];
      if (isBaseName(file) || users.length) {
        try {
          checkBaseSpec(file, { set });
          const by = users.length ? `; extended by ${users.length === 1 ? users[0] : `${users.length} of the given specs`}` : '';
          process.stdout.write(`ok ${file} (base file, not a full spec${by})\n`);
          continue;
        } catch (e) {
          if (!(e instanceof SpecError)) throw e;
          process.stderr.write(e.format() + '\n');
          failed++;
          continue;
        }
      }
      process.stderr.write(err.format() + '\n');
      failed++;
    }
  }
  return failed ? 2 : 0;
}
