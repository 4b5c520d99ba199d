/**
 * `spark compare --experiment <name> [--filter …] [--order-by …] [--columns …] [--format …] [--uri …]
 *  [--plot metrics.loss --out curves.png]`: the runs of an experiment side by side.
 */
import { parseCommandArgs } from '../args.js';
import { TrackingError, UsageError } from '../../util/errors.js';
import { openStore, resolveTrackingUri } from '../../track/index.js';
import { collectRuns, curvesSvg, parseColumns, render, type CompareFormat } from '../../track/compare.js';
import { writePlot } from '../../track/plot.js';

export const summary = 'compare the MLflow runs of an experiment (filter, order, table/csv/json/markdown, metric plots)';

const USAGE = `usage: spark compare --experiment <name> [options]

Lists the runs of an MLflow experiment (local ./mlruns or a tracking server): sweep trials grouped under their
parent, the params that differ between the shown runs, the latest value of each metric, status and duration.

options:
  -e, --experiment <name>   experiment name (required)
  -f, --filter <expr>       MLflow search filter, e.g. "params.model.mask_ratio = '0.6' and metrics.loss < 0.5"
  -o, --order-by <clause>   e.g. "metrics.loss ASC" (repeatable; default: newest first)
  -c, --columns <a,b,...>   columns: run, run_id, status, duration, start_time, end_time, params.<k>, metrics.<k>, tags.<k>
      --format <fmt>        table (default), csv, json or markdown
      --uri <uri>           tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns)
      --plot <metric>       write the curves of a metric (e.g. metrics.loss) for the shown runs
      --out <file>          plot file, .png (default curves.png) or .svg
  -h, --help                show this help`;

const FORMATS: CompareFormat[] = ['table', 'csv', 'json', 'markdown'];

export async function runCompare(argv: string[], write: (s: string) => void = (s) => void process.stdout.write(s)): Promise<number> {
  const parsed = parseCommandArgs('compare', {
    args: argv,
    allowPositionals: false,
    strict: true,
    options: {
      experiment: { type: 'string', short: 'e' },
      filter: { type: 'string', short: 'f' },
      'order-by': { type: 'string', short: 'o', multiple: true },
      columns: { type: 'string', short: 'c' },
      format: { type: 'string' },
      uri: { type: 'string' },
      plot: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const v = parsed.values;
  if (v.help) {
    write(USAGE + '\n');
    return 0;
  }
  if (!v.experiment) throw new UsageError('spark compare needs --experiment <name> (see `spark compare --help`)');
  const format = (v.format ?? 'table') as CompareFormat;
  if (!FORMATS.includes(format)) throw new UsageError(`unknown --format '${v.format}': use one of ${FORMATS.join(', ')}`);
  if (v.out && !v.plot) throw new UsageError('--out is the file of --plot; give --plot <metric> too');
  const columns = v.columns ? parseColumns(v.columns) : undefined;
  const store = openStore(resolveTrackingUri(v.uri ?? null));
  let res;
  try {
    res = await collectRuns(store, { experiment: v.experiment, filter: v.filter ?? '', orderBy: v['order-by'] ?? [], columns });
  } catch (err) {
    // a filter / order-by the store (or the server) rejects is bad input
    if (err instanceof TrackingError && err.errorCode === 'INVALID_PARAMETER_VALUE') throw new UsageError(`bad --filter or --order-by: ${err.message}`);
    throw err;
  }
  write(render(res, format));
  if (v.plot) {
    const out = v.out ?? 'curves.png';
    const { series } = await curvesSvg(store, res, v.plot).then(async (r) => {
      await writePlot(out, r.svg);
      return r;
    });
    process.stderr.write(`wrote ${out} (${series.length} run(s))\n`);
  }
  return 0;
}

export default async function compare(argv: string[]): Promise<number> {
  return runCompare(argv);
}
