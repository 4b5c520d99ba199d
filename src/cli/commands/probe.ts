import { parseDownstreamArgs } from './downstream-args.js';
import { runProbe } from '../../downstream/probe.js';
import type { DownstreamResult } from '../../downstream/session.js';
import { probeSweep, formatSweepProbe } from '../../downstream/probe-sweep.js';

export const summary = 'linear probe of a frozen encoder (top-1/top-5 of a linear classifier on pooled features)';

const HELP = `usage: spark probe <spec> [--init <run-dir|import-dir|encoder.safetensors> | --random] [--compare-random] [--set a.b=c ...] [--plain] [--json]
       spark probe <spec> --sweep <sweep-dir> [--compare-random] [--set a.b=c ...] [--plain] [--json]

Extracts global-average-pooled features of the frozen encoder (eval mode, eval transform) for data.root and
data.val_root, trains a linear classifier on them (finetune.probe: epochs, lr, weight_decay, batch_size) and reports
top-1/top-5 on the validation folder. --compare-random also probes a randomly initialised encoder of the same
architecture with the same seed and prints both — the quick way to see what pre-training bought.

--sweep probes every finished trial of a pre-training sweep (each with its own encoder from its checkpoint) and
prints them ranked by probe top-1; probe_top1 / probe_top5 are also logged to each trial's MLflow run, so
\`spark compare --experiment <sweep experiment> --order-by "metrics.probe_top1 DESC"\` ranks the trials by them.
`;

function line(r: DownstreamResult): string {
  return `${(r.init ?? 'random init').padEnd(48)} top-1 ${r.top1.toFixed(2).padStart(6)}%  top-5 ${r.top5.toFixed(2).padStart(6)}%  train top-1 ${(r.trainTop1 ?? 0).toFixed(2).padStart(6)}%`;
}

export default async function probe(argv: string[]): Promise<number> {
  const a = await parseDownstreamArgs(argv, 'probe', HELP);
  if (!a) return 0;
  if (a.sweep) {
    const r = await probeSweep({ sweepDir: a.sweep, compareRandom: a.compareRandom, config: a.loaded.config, specPath: a.loaded.specPath, resolvedYaml: a.loaded.resolvedYaml, plain: a.plain, ...(a.json ? { logStream: process.stderr } : {}) });
    if (a.json) {
      const rows = r.rows.map((x) => ({ trial: x.trial.index, name: x.trial.name, params: x.trial.params, pretrainLoss: x.trial.finalLoss, skipped: x.skipped, loggedToTrial: x.loggedToTrial, ...(x.result ? { probe: x.result } : {}) }));
      process.stdout.write(JSON.stringify({ sweepDir: r.sweepDir, rows, random: r.random, warnings: r.warnings }, null, 2) + '\n');
    } else process.stdout.write(formatSweepProbe(r) + '\n');
    const all = [...r.rows.flatMap((x) => (x.result ? [x.result] : [])), ...(r.random ? [r.random] : [])];
    return all.every((x) => x.status === 'FINISHED') ? 0 : 1;
  }
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
