/**
 * `spark sync <mlruns> --to <uri> [--experiment <name>]`: replay a local MLflow file store to a tracking server
 * (idempotent: runs are matched by the tag spark.source_run_id, so a second sync creates nothing).
 * `spark sync --run <runDir> [--to <uri>]`: replay the offline journal of one run folder.
 */
import { parseCommandArgs } from '../args.js';
import { UsageError } from '../../util/errors.js';
import { FileStore, openStore, readTrackingState, resolveTrackingUri } from '../../track/index.js';
import { syncRunJournal, syncStore } from '../../track/sync.js';
import { reconcileRunFolder } from '../../track/liveness.js';

export const summary = 'replay a local mlruns store (or a run\'s offline journal) to an MLflow tracking server';

const USAGE = `usage: spark sync <mlruns> --to <uri> [--experiment <name>]
       spark sync --run <runDir> [--to <uri>]

The first form copies the experiments and runs of a local MLflow file store to another tracking store
(usually a server). It is idempotent: synced runs carry the tag spark.source_run_id, a second sync only sends
what is new (metric points, params, tags, final status).
The second form replays the calls a run buffered in <runDir>/mlflow-offline.jsonl while its tracking
server was unreachable (to the run's own tracking URI unless --to is given). A run that started while the
server was unreachable is created first (once: it is found again by its spark.client_run_token tag), and its
MLflow run id recorded in <runDir>/mlflow.json and run.json.

options:
      --to <uri>            target tracking URI (http://host:5000, or a folder)
  -e, --experiment <name>   only this experiment
      --run <runDir>        replay the offline journal of this run folder
  -h, --help                show this help`;

export async function runSync(argv: string[], write: (s: string) => void = (s) => void process.stdout.write(s)): Promise<number> {
  const parsed = parseCommandArgs('sync', {
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      to: { type: 'string' },
      experiment: { type: 'string', short: 'e' },
      run: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const v = parsed.values;
  if (v.help) {
    write(USAGE + '\n');
    return 0;
  }
  if (v.run) {
    if (parsed.positionals.length) throw new UsageError('spark sync --run <runDir> takes no store argument (see `spark sync --help`)');
    const state = readTrackingState(v.run);
    if (!state) throw new UsageError(`${v.run} has no mlflow.json: not a tracked run folder`);
    const store = openStore(v.to ? resolveTrackingUri(v.to) : state.uri);
    // a run left RUNNING by a process that is gone is recorded as FAILED first (run.json, and with this replay MLflow)
    const dead = await reconcileRunFolder(v.run);
    if (dead) write(`${v.run}: marked FAILED: ${dead.reason}\n`);
    const res = await syncRunJournal(v.run, store);
    write(`replayed ${res.replayed} call(s) of ${v.run} to ${store.uri} (run ${res.state.runId})\n`);
    for (const c of res.created ?? []) {
      write(`  ${c.found ? 'found' : 'created'} MLflow run ${c.runId} in experiment ${c.experimentId} for the run that started offline (${c.placeholder})\n`);
    }
    for (const r of res.rejected) write(`  rejected call #${r.seq}: ${r.error}\n`);
    return res.rejected.length ? 1 : 0;
  }
  if (parsed.positionals.length !== 1) throw new UsageError('spark sync needs one local store: spark sync <mlruns> --to <uri> (see `spark sync --help`)');
  if (!v.to) throw new UsageError('spark sync needs --to <uri>, the target tracking server');
  const source = new FileStore(parsed.positionals[0]!);
  const target = openStore(resolveTrackingUri(v.to));
  if (target.kind === 'file' && (target as FileStore).root === source.root) throw new UsageError('source and target are the same store');
  const report = await syncStore(source, target, {
    experiment: v.experiment,
    onRun: (r) => {
      const what = r.action === 'unchanged' ? '' : ` (${r.params} params, ${r.metrics} metric points, ${r.tags} tags, ${r.artifacts} artifacts)`;
      write(`  ${r.action.padEnd(9)} ${r.runName || r.sourceRunId} → ${r.targetRunId}${what}\n`);
      for (const c of r.conflicts) write(`    conflict: ${c}\n`);
    },
  });
  const count = (a: string) => report.runs.filter((r) => r.action === a).length;
  write(
    `synced ${report.experiments.length} experiment(s) from ${source.root} to ${target.uri}: ` +
      `${count('created')} run(s) created, ${count('updated')} updated, ${count('unchanged')} unchanged\n`,
  );
  return report.runs.some((r) => r.conflicts.length) ? 1 : 0;
}

export default async function sync(argv: string[]): Promise<number> {
  return runSync(argv);
}
