import { parseArgs } from 'node:util';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseDownstreamArgs } from './downstream-args.js';
import { runFinetune, type FinetuneOptions } from '../../downstream/finetune.js';
import { UsageError } from '../../util/errors.js';
import { withStopSignals, killedExitCode } from '../stop-signals.js';

export const summary = 'fine-tune a pre-trained encoder with a classification head (task: finetune); --resume continues a run';

const HELP = `usage: spark finetune <spec> [--init <run-dir|import-dir|encoder.safetensors> | --random] [--set a.b=c ...] [--plain] [--json]
       spark finetune --resume <run-dir> [--plain] [--json]

Trains a classification head on the encoder given by finetune.init (or --init; --random for the random-init
baseline) on data.root (one folder per class), evaluating top-1/top-5 of the model and of its EMA on data.val_root
every finetune.eval_every epochs. The reference recipe (spec §7) applies where the spec leaves a value null: AdamW for
ConvNeXt, LAMB without bias correction for ResNets, layer-wise lr decay, label smoothing 0.1, mixup/CutMix,
RandomResizedCrop 0.08–1 + flip + TrivialAugmentWide + RandomErasing 0.25, repeated augmentation ×3 for ConvNeXt,
EMA 0.9999. Checkpoints are written every output.checkpoint_every steps, at the end and on Ctrl-C / SIGTERM;
--resume continues an interrupted run exactly. Metrics go to MLflow like pre-training runs.

exit status: 0 finished, 1 failed, 2 bad input, 130 interrupted (SIGINT), 143 terminated (SIGTERM)
`;

interface Parsed {
  run: Omit<FinetuneOptions, 'signal'>;
  json: boolean;
}

async function parse(argv: string[]): Promise<Parsed | null> {
  if (!argv.some((a) => a === '--resume' || a.startsWith('--resume='))) {
    const a = await parseDownstreamArgs(argv, 'finetune', HELP);
    if (!a) return null;
    return { run: { config: a.loaded.config, specPath: a.loaded.specPath, resolvedYaml: a.loaded.resolvedYaml, init: a.init, plain: a.plain }, json: a.json };
  }
  let v;
  try {
    v = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { resume: { type: 'string' }, plain: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    throw new UsageError(`spark finetune: ${(e as Error).message} (--resume takes only the run folder, --plain and --json)`);
  }
  if (v.values.help) {
    process.stdout.write(HELP);
    return null;
  }
  if (v.positionals.length) throw new UsageError(`spark finetune --resume takes the run folder; do not also give a spec (${v.positionals.join(' ')})`);
  const dir = v.values.resume!;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${dir}: no such run folder`);
  if (!existsSync(path.join(dir, 'config.yaml'))) throw new UsageError(`${dir}: not a run folder (no config.yaml)`);
  const json = v.values.json ?? false;
  return { run: { specPath: null, resumeDir: dir, plain: (v.values.plain ?? false) || json }, json };
}

export default async function finetune(argv: string[]): Promise<number> {
  const p = await parse(argv);
  if (!p) return 0;
  const { value: r, stoppedBy } = await withStopSignals((signal) => runFinetune({ ...p.run, ...(p.json ? { logStream: process.stderr } : {}), signal }));
  if (p.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else {
    const ema = r.emaTop1 !== null ? `, EMA top-1 ${r.emaTop1.toFixed(2)}%` : '';
    process.stdout.write(`${r.status}: ${r.encoder} from ${r.init ?? 'random init'} — val top-1 ${r.top1.toFixed(2)}%, top-5 ${r.top5.toFixed(2)}%${ema}, best top-1 ${r.bestTop1.toFixed(2)}% after ${r.steps} steps (${r.runDir})\n`);
  }
  // the console view (Ink or plain) has printed the resume command with the run's end
  if (r.status === 'KILLED') return killedExitCode(stoppedBy);
  return r.status === 'FINISHED' ? 0 : 1;
}
