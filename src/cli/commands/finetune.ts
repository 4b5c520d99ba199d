import { parseDownstreamArgs } from './downstream-args.js';
import { runFinetune } from '../../interop/downstream.js';

export const summary = 'fine-tune a pre-trained encoder with a classification head (task: finetune)';

const HELP = `usage: spark finetune <spec> [--init <run-dir|import-dir|encoder.safetensors> | --random] [--set a.b=c ...] [--plain] [--json]

Trains a classification head on the encoder given by finetune.init (or --init; --random for the random-init
baseline) on data.root (one folder per class), evaluating top-1/top-5 on data.val_root every finetune.eval_every
epochs. The reference recipe (spec §7) applies where the spec leaves a value null: AdamW for ConvNeXt, LAMB without
bias correction for ResNets, layer-wise lr decay, label smoothing 0.1, mixup/CutMix, RandomResizedCrop 0.08–1.
Metrics go to MLflow like pre-training runs.
`;

export default async function finetune(argv: string[]): Promise<number> {
  const a = await parseDownstreamArgs(argv, 'finetune', HELP);
  if (!a) return 0;
  const ac = new AbortController();
  const onSig = () => ac.abort();
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  try {
    const r = await runFinetune({ config: a.loaded.config, specPath: a.loaded.specPath, resolvedYaml: a.loaded.resolvedYaml, init: a.init, plain: a.plain, ...(a.json ? { logStream: process.stderr } : {}), signal: ac.signal });
    if (a.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    else process.stdout.write(`${r.status}: ${r.encoder} from ${r.init ?? 'random init'} — val top-1 ${r.top1.toFixed(2)}%, top-5 ${r.top5.toFixed(2)}% after ${r.steps} steps (${r.runDir})\n`);
    return r.status === 'FINISHED' ? 0 : r.status === 'KILLED' ? 130 : 1;
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
}
