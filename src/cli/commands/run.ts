/**
 * `spark run <spec> [--set a.b=c …] [--dry-run] [--resume <run-dir|sweep-dir>] [--plain] [--sweep key=v1,v2 …]
 * [--parallel N] [--fail-fast]`: pre-train one experiment (or a sweep of them).
 *
 * Exit status: 0 finished, 1 failed, 2 bad input, 130 interrupted by SIGINT / Ctrl-C, 143 by SIGTERM. An interrupted
 * run has written a checkpoint and prints, once, `resume with: npx spark run --resume <run-dir>` (util/hint.ts).
 */
import { parseArgs } from 'node:util';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from '../../util/errors.js';
import { withStopSignals, killedExitCode } from '../stop-signals.js';
import { isSweepDir } from '../../sweep/state.js';

export const summary = 'pre-train an experiment spec (or a sweep); --dry-run prints the plan, --resume continues a run';

const USAGE = `usage: spark run <spec.yaml> [options]
       spark run --resume <run-dir | sweep-dir> [--plain]

options:
  -s, --set key=value     override a spec field (repeatable), e.g. --set train.steps=100
  -n, --dry-run           print the run plan (model size, schedule, output folder) and write nothing
  -r, --resume <dir>      continue an interrupted run (or sweep) from its last checkpoint
      --plain             plain log lines instead of the terminal view
      --sweep key=v1,v2   sweep a field over values (repeatable; grid product of all --sweep axes)
      --parallel N        sweep trials at a time (default 1)
      --fail-fast         stop a sweep after the first failed trial
  -h, --help              show this help

exit status: 0 finished, 1 failed, 2 bad input, 130 interrupted (SIGINT), 143 terminated (SIGTERM)`;

export default async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        set: { type: 'string', short: 's', multiple: true },
        'dry-run': { type: 'boolean', short: 'n' },
        resume: { type: 'string', short: 'r' },
        plain: { type: 'boolean' },
        sweep: { type: 'string', multiple: true },
        parallel: { type: 'string' },
        'fail-fast': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const pos = parsed.positionals;
  const sweeps = v.sweep ?? [];
  let parallel = 1;
  if (v.parallel !== undefined) {
    parallel = Number(v.parallel);
    if (!Number.isInteger(parallel) || parallel < 1) throw new UsageError(`--parallel must be a positive integer, got '${v.parallel}'`);
  }

  // ---- resume
  if (v.resume !== undefined) {
    if (pos.length > 0) throw new UsageError(`--resume takes the run folder; do not also give a spec (${pos.join(' ')})`);
    if ((v.set ?? []).length || sweeps.length || v['dry-run']) throw new UsageError('--resume cannot be combined with --set, --sweep or --dry-run');
    const dir = v.resume;
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${dir}: no such run folder`);
    if (isSweepDir(dir)) {
      const { runSweep } = await import('../../sweep/index.js');
      const r = await runSweep({ resumeDir: dir, parallel, failFast: v['fail-fast'] ?? false, plain: v.plain ?? false });
      return r.exitCode;
    }
    if (!existsSync(path.join(dir, 'config.yaml'))) throw new UsageError(`${dir}: not a run folder (no config.yaml) nor a sweep folder (no sweep.json)`);
    return runOne({ resumeDir: dir, plain: v.plain ?? false });
  }

  // ---- a spec
  if (pos.length !== 1) throw new UsageError(`give exactly one spec file${pos.length ? ` (got ${pos.length})` : ''}\n${USAGE}`);
  const specFile = pos[0]!;
  const { loadExperiment, planRun, formatPlan } = await import('../../spec/index.js');
  const loaded = await loadExperiment(specFile, { set: v.set ?? [] });
  if (v['dry-run']) {
    if (loaded.config.sweep || sweeps.length) {
      // expand (and validate) every trial; show the list and the plan of the first
      const { expandSweep } = await import('../../sweep/index.js');
      const trials = expandSweep(loaded.raw, sweeps, { file: loaded.specPath });
      const lines = [`sweep: ${trials.length} trial${trials.length === 1 ? '' : 's'} of ${loaded.specPath}; nothing is written`];
      const { trialLabel } = await import('../../ui/trial-label.js');
      for (const t of trials) lines.push(`  [${trialLabel(t.index, trials.length)}] ${t.name}`);
      lines.push('', `plan of ${trialLabel(0, trials.length)} (${trials[0]?.name ?? '-'}):`);
      process.stdout.write(lines.join('\n') + '\n');
      if (trials[0]) process.stdout.write(formatPlan(planRun(trials[0].config)) + '\n');
    } else {
      process.stdout.write(formatPlan(planRun(loaded.config)) + '\n');
    }
    return 0;
  }
  if (loaded.config.sweep || sweeps.length) {
    const { runSweep } = await import('../../sweep/index.js');
    const r = await runSweep({
      loaded: { config: loaded.config, specPath: loaded.specPath, raw: loaded.raw },
      cliSweeps: sweeps,
      parallel,
      failFast: v['fail-fast'] ?? false,
      plain: v.plain ?? false,
    });
    return r.exitCode;
  }
  if (loaded.config.task !== 'pretrain') {
    throw new UsageError(`${specFile}: task '${loaded.config.task}' is run by \`spark ${loaded.config.task}\`, not \`spark run\``);
  }
  return runOne({ config: loaded.config, specPath: loaded.specPath, resolvedYaml: loaded.resolvedYaml, plain: v.plain ?? false });
}

/** One run with signal handling: the first SIGINT/SIGTERM stops after the current step and checkpoints. */
async function runOne(o: {
  config?: import('../../spec/types.js').ExperimentConfig;
  specPath?: string;
  resolvedYaml?: string;
  resumeDir?: string;
  plain: boolean;
}): Promise<number> {
  const { runExperiment } = await import('../../train/run.js');
  const { value: res, stoppedBy } = await withStopSignals((signal) =>
    runExperiment({
      ...(o.config ? { config: o.config } : {}),
      ...(o.specPath ? { specPath: o.specPath } : {}),
      ...(o.resolvedYaml ? { resolvedYaml: o.resolvedYaml } : {}),
      ...(o.resumeDir ? { resumeDir: o.resumeDir } : {}),
      plain: o.plain,
      signal,
    }),
  );
  if (res.trackingReminder) process.stderr.write(`${res.trackingReminder}\n`);
  if (res.status === 'FINISHED') {
    process.stderr.write(`run finished: ${res.runDir}\n`);
    return 0;
  }
  // the console view (Ink or plain) has printed the resume command with the run's end
  if (res.status === 'KILLED') return killedExitCode(stoppedBy);
  process.stderr.write(`spark: run failed${res.error ? `: ${res.error}` : ''} (${res.runDir})\n`);
  return 1;
}
