/** Shared argument handling of `spark finetune` and `spark probe`. */
import { parseCommandArgs } from '../args.js';
import { loadExperiment, type LoadedExperiment } from '../../spec/index.js';
import { UsageError } from '../../util/errors.js';

export interface DownstreamArgs {
  loaded: LoadedExperiment;
  init: string | null | undefined;
  plain: boolean;
  json: boolean;
  compareRandom: boolean;
  /** `spark probe --sweep <sweep-dir>`: probe every finished trial. */
  sweep: string | null;
}

export async function parseDownstreamArgs(argv: string[], task: 'finetune' | 'probe', help: string): Promise<DownstreamArgs | null> {
  const { values, positionals } = parseCommandArgs(task, {
    args: argv,
    allowPositionals: true,
    options: {
      set: { type: 'string', multiple: true, default: [] },
      init: { type: 'string' },
      random: { type: 'boolean', default: false },
      'compare-random': { type: 'boolean', default: false },
      sweep: { type: 'string' },
      plain: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    return null;
  }
  if (positionals.length !== 1) throw new UsageError(`spark ${task}: expected one spec file (see --help)`);
  if (values.random && values.init) throw new UsageError(`spark ${task}: --init and --random exclude each other`);
  if (values.sweep !== undefined && task !== 'probe') throw new UsageError(`spark ${task}: --sweep is an option of spark probe`);
  if (values.sweep !== undefined && (values.init || values.random)) throw new UsageError(`spark ${task}: --sweep probes the sweep's trials; it excludes --init and --random`);
  const loaded = await loadExperiment(positionals[0]!, { set: [`task=${task}`, ...(values.set ?? [])] });
  return {
    loaded,
    init: values.random ? null : values.init,
    plain: values.plain || values.json,
    json: values.json,
    compareRandom: values['compare-random'],
    sweep: values.sweep ?? null,
  };
}
