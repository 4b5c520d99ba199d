import { parseDownstreamArgs } from './downstream-args.js';
import { runProbe, type DownstreamResult } from '../../interop/downstream.js';

export const summary = 'linear probe of a frozen encoder (top-1/top-5 of a linear classifier on pooled features)';

const HELP = `usage: spark probe <spec> [--init <run-dir|import-dir|encoder.safetensors> | --random] [--compare-random] [--set a.b=c ...] [--plain] [--json]

Extracts global-average-pooled features of the frozen encoder (eval mode, eval transform) for data.root and
data.val_root, trains a linear classifier on them (finetune.probe: epochs, lr, weight_decay, batch_size) and reports
top-1/top-5 on the validation folder. --compare-random also probes a randomly initialised encoder of the same
architecture with the same seed and prints both — the quick way to see what pre-training bought.
`;

function line(r: DownstreamResult): string {
  return `${(r.init ?? 'random init').padEnd(48)} top-1 ${r.top1.toFixed(2).padStart(6)}%  top-5 ${r.top5.toFixed(2).padStart(6)}%  train top-1 ${(r.trainTop1 ?? 0).toFixed(2).padStart(6)}%`;
}

export default async function probe(argv: string[]): Promise<number> {
  const a = await parseDownstreamArgs(argv, 'probe', HELP);
  if (!a) return 0;
  const results: DownstreamResult[] = [];
  results.push(await runProbe({ config: a.loaded.config, specPath: a.loaded.specPath, resolvedYaml: a.loaded.resolvedYaml, init: a.init, plain: a.plain, ...(a.json ? { logStream: process.stderr } : {}) }));
  if (a.compareRandom && results[0]!.init !== null) {
    results.push(await runProbe({ config: a.loaded.config, specPath: a.loaded.specPath, resolvedYaml: a.loaded.resolvedYaml, init: null, plain: a.plain, ...(a.json ? { logStream: process.stderr } : {}), nameSuffix: '-random' }));
  }
  if (a.json) {
    process.stdout.write(JSON.stringify(results.length === 1 ? results[0] : results, null, 2) + '\n');
  } else {
    process.stdout.write(`linear probe, ${results[0]!.encoder}, ${results[0]!.numClasses} classes\n`);
    for (const r of results) process.stdout.write(`  ${line(r)}\n`);
    if (results.length === 2) {
      const d = results[0]!.top1 - results[1]!.top1;
      process.stdout.write(`  pre-training ${d >= 0 ? 'gains' : 'loses'} ${Math.abs(d).toFixed(2)} points of top-1 over random init\n`);
    }
  }
  return results.every((r) => r.status === 'FINISHED') ? 0 : 1;
}
