/**
 * Linear probe of every finished trial of a pre-training sweep (`spark probe <spec> --sweep <sweep-dir>`): the quick
 * way to compare the trials by what their encoders are worth rather than by their pre-training loss. Each trial's
 * encoder (built from the trial's own checkpoint, so sweeps over encoders work) gets the same probe from the probe
 * spec; each probe is its own run (folder + MLflow run tagged with the sweep and trial), and `probe_top1` /
 * `probe_top5` are also written into the trial's own MLflow run, so `spark compare --experiment <sweep experiment>
 * --order-by "metrics.probe_top1 DESC"` ranks the trials by them.
 */
import path from 'node:path';
import { existsSync } from 'node:fs';
import { readSweep } from '../sweep/state.js';
import type { TrialRecord } from '../sweep/types.js';
import { openStore } from '../track/index.js';
import { UsageError } from '../util/errors.js';
import { trialLabel } from '../ui/trial-label.js';
import type { DownstreamOptions, DownstreamResult } from './session.js';
import { runProbe } from './probe.js';
import { commandHint } from '../util/hint.js';

export interface SweepProbeRow {
  trial: TrialRecord;
  result: DownstreamResult | null;
  /** Why the trial was not probed (not finished, no checkpoint) or why its probe failed. */
  skipped: string | null;
  /** Whether probe_top1/probe_top5 reached the trial's MLflow run (null: the sweep has no MLflow run for it). */
  loggedToTrial: boolean | null;
}

export interface SweepProbeResult {
  sweepDir: string;
  sweepName: string;
  /** The MLflow experiment of the sweep's runs. */
  experiment: string;
  varying: string[];
  rows: SweepProbeRow[];
  /** The random-init baseline of the probe spec's encoder (with `compareRandom`). */
  random: DownstreamResult | null;
  warnings: string[];
}

export async function probeSweep(
  opts: Omit<DownstreamOptions, 'init' | 'nameSuffix' | 'tags'> & { sweepDir: string; compareRandom?: boolean },
): Promise<SweepProbeResult> {
  const dir = path.resolve(opts.sweepDir);
  const sweep = await readSweep(dir);
  const rows: SweepProbeRow[] = [];
  const warnings: string[] = [];
  const store = sweep.tracking.enabled && sweep.tracking.uri ? openStore(sweep.tracking.uri) : null;
  const { sweepDir: _d, compareRandom, ...base } = opts;
  for (const trial of sweep.trials) {
    const runDir = path.join(dir, trial.runDir);
    if (trial.status !== 'FINISHED') {
      rows.push({ trial, result: null, skipped: `trial is ${trial.status}`, loggedToTrial: null });
      continue;
    }
    if (!existsSync(path.join(runDir, 'checkpoint', 'model.safetensors'))) {
      rows.push({ trial, result: null, skipped: 'no checkpoint in the trial run folder', loggedToTrial: null });
      continue;
    }
    const result = await runProbe({
      ...base,
      init: runDir,
      nameSuffix: `-trial-${String(trial.index).padStart(3, '0')}`,
      tags: {
        'spark.probe.sweep': sweep.id,
        'spark.probe.trial': trial.name,
        ...(trial.mlflowRunId ? { 'spark.probe.source_run_id': trial.mlflowRunId } : {}),
      },
    });
    let logged: boolean | null = null;
    if (store && trial.mlflowRunId && result.status === 'FINISHED') {
      try {
        const timestamp = Date.now();
        await store.logMetrics(trial.mlflowRunId, [
          { key: 'probe_top1', value: result.top1, timestamp, step: 0 },
          { key: 'probe_top5', value: result.top5, timestamp, step: 0 },
        ]);
        logged = true;
      } catch (e) {
        logged = false;
        warnings.push(`${trialLabel(trial.index, sweep.trials.length)} (${trial.name}): could not log probe_top1 to MLflow run ${trial.mlflowRunId} at ${store.uri}: ${(e as Error).message}`);
      }
    }
    rows.push({ trial, result, skipped: null, loggedToTrial: logged });
  }
  if (!rows.some((r) => r.result)) throw new UsageError(`${opts.sweepDir}: no finished trial with a checkpoint to probe`);
  const random = compareRandom ? await runProbe({ ...base, init: null, nameSuffix: '-random' }) : null;
  return { sweepDir: dir, sweepName: sweep.name, experiment: sweep.tracking.experiment, varying: sweep.varying, rows, random, warnings };
}

/** The table `spark probe --sweep` prints: trials by probe top-1 (best first), then the random baseline. */
export function formatSweepProbe(r: SweepProbeResult): string {
  const probed = r.rows.filter((x) => x.result).sort((a, b) => b.result!.top1 - a.result!.top1);
  const skipped = r.rows.filter((x) => !x.result);
  const n = r.rows.length;
  // trials counted from 1 for people (`#` 1 = trials/000)
  const head = ['#', ...r.varying, 'pretrain loss', 'probe top-1', 'top-5', 'train top-1'];
  const fmt = (v: number | null | undefined, d = 2, unit = '%') => (v == null ? '—' : `${v.toFixed(d)}${unit}`);
  const body = probed.map((x) => [
    String(x.trial.index + 1),
    ...r.varying.map((k) => x.trial.params[k] ?? '—'),
    fmt(x.trial.finalLoss, 4, ''),
    fmt(x.result!.top1),
    fmt(x.result!.top5),
    fmt(x.result!.trainTop1),
  ]);
  if (r.random) body.push(['random', ...r.varying.map(() => ''), '', fmt(r.random.top1), fmt(r.random.top5), fmt(r.random.trainTop1)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => '  ' + cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const first = probed[0]?.result;
  const out = [`linear probe of sweep ${r.sweepName} (${probed.length} of ${r.rows.length} trials)${first ? `, ${first.encoder}, ${first.numClasses} classes` : ''}`, line(head), ...body.map(line)];
  for (const x of skipped) out.push(`  ${trialLabel(x.trial.index, n)} (${x.trial.name}) not probed: ${x.skipped}`);
  if (probed.some((x) => x.loggedToTrial)) out.push(`probe_top1 / probe_top5 logged to each trial's MLflow run: ${commandHint(['compare', '--experiment', r.experiment, '--order-by', 'metrics.probe_top1 DESC'])}`);
  for (const w of r.warnings) out.push(`warning: ${w}`);
  return out.join('\n');
}
