/**
 * `spark compare --experiment <name> [--filter …] [--order-by …] [--columns …] [--format …] [--uri …]
 *  [--plot metrics.loss --out curves.png]`: the runs of an experiment side by side. The text table fits the terminal
 *  (track/compare.ts tableColumns); a plot is written only where `--out` says.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseCommandArgs } from '../args.js';
import { TrackingError, UsageError } from '../../util/errors.js';
import { openStore, resolveTrackingUri } from '../../track/index.js';
import { collectRuns, curvesSvg, parseColumnsOption, render, type CompareFormat } from '../../track/compare.js';
import { writePlot } from '../../track/plot.js';

export const summary = 'compare the MLflow runs of an experiment (filter, order, table/csv/json/markdown, metric plots)';

const USAGE = `usage: spark compare --experiment <name> [options]

Lists the runs of an MLflow experiment (local ./mlruns or a tracking server): sweep trials grouped under their
parent, the params that differ between the shown runs, the latest value of each metric, status and duration.
The table (default format) fits the terminal width (else $COLUMNS, else 120): it leaves out metrics that are the
same in every run, then the last metrics and params until it fits, and says which; the columns a --filter or
--order-by names always stay. csv, json and markdown hold every varying param and every metric.

options:
  -e, --experiment <name>   experiment name (required)
  -f, --filter <expr>       MLflow search filter, e.g. "params.model.mask_ratio = '0.6' and metrics.loss < 0.5"
  -o, --order-by <clause>   e.g. "metrics.loss ASC" (repeatable; default: newest first)
  -c, --columns <a,b,...>   exactly these columns: run, run_id, status, duration, start_time, end_time,
                            params.<k>, metrics.<k>, tags.<k>; +a,b adds them to the default ones;
                            all shows every param and metric
      --format <fmt>        table (default), csv, json or markdown
      --uri <uri>           tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns)
      --plot <metric>       write the curves of a metric (e.g. metrics.loss) for the shown runs to --out
      --out <file|dir>      the plot file (.png or .svg), or a folder for <experiment>-<metric>.png; required
                            with --plot (nothing is written where you did not ask)
  -h, --help                show this help`;

const FORMATS: CompareFormat[] = ['table', 'csv', 'json', 'markdown'];

/** The width the text table fits: the terminal's, else $COLUMNS, else 120. */
export function tableWidth(env: NodeJS.ProcessEnv = process.env, out: { isTTY?: boolean; columns?: number } = process.stdout): number {
  if (out.isTTY && out.columns) return out.columns;
  const c = Number(env['COLUMNS']);
  return Number.isInteger(c) && c > 0 ? c : 120;
}

/** Where `--plot` writes: the `--out` file (.png / .svg), or `<experiment>-<metric>.png` in an `--out` folder. */
export function plotPath(out: string, experiment: string, metric: string): string {
  if (existsSync(out) && statSync(out).isDirectory()) {
    const safe = (s: string) => s.replace(/^metrics?\./, '').replace(/[^A-Za-z0-9._=-]+/g, '_');
    return path.join(out, `${safe(experiment)}-${safe(metric)}.png`);
  }
  if (!/\.(png|svg)$/i.test(out)) throw new UsageError(`--out ${out}: the plot file must end in .png or .svg (or be an existing folder)`);
  return out;
}

export async function runCompare(
  argv: string[],
  write: (s: string) => void = (s) => void process.stdout.write(s),
  opts: { width?: number; log?: (s: string) => void } = {},
): Promise<number> {
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
  if (v.plot && !v.out) throw new UsageError('--plot needs --out <file.png|file.svg|folder>: where to write the plot');
  const plotFile = v.plot && v.out ? plotPath(v.out, v.experiment, v.plot) : null;
  const columns = v.columns ? parseColumnsOption(v.columns) : undefined;
  const width = format === 'table' ? (opts.width ?? tableWidth()) : undefined;
  const store = openStore(resolveTrackingUri(v.uri ?? null));
  let res;
  try {
    res = await collectRuns(store, { experiment: v.experiment, filter: v.filter ?? '', orderBy: v['order-by'] ?? [], ...(columns ? { columns } : {}), ...(width ? { width } : {}) });
  } catch (err) {
    // a filter / order-by the store (or the server) rejects is bad input
    if (err instanceof TrackingError && err.errorCode === 'INVALID_PARAMETER_VALUE') throw new UsageError(`bad --filter or --order-by: ${err.message}`);
    throw err;
  }
  write(render(res, format));
  if (v.plot && plotFile) {
    const { svg, series } = await curvesSvg(store, res, v.plot);
    await writePlot(plotFile, svg);
    (opts.log ?? ((s: string) => void process.stderr.write(s)))(`wrote ${plotFile} (${series.length} run(s))\n`);
  }
  return 0;
}

export default async function compare(argv: string[]): Promise<number> {
  return runCompare(argv);
}
