/**
 * `spark sweep`: run, resume, inspect and launch sweeps.
 *
 *   spark sweep [run] <spec> [--sweep path=v1,v2]... [--set a.b=c]... [--parallel N] [--fail-fast] [--plain]
 *   spark sweep plan <spec> [--sweep ...] [--set ...]            list the trials (all validated), run nothing
 *   spark sweep resume <sweep-dir> [--parallel N] [--fail-fast] [--plain]
 *   spark sweep launch --launcher slurm <spec> [--sweep ...] [--set ...] [--submit] [--partition p] [--time HH:MM:SS]
 *                      [--cpus-per-task n] [--mem 4G] [--gres gpu:1] [--array-parallel k] [--account a] [--qos q]
 *   spark sweep launch --resume <sweep-dir> [--submit] [--time ...] ...  resubmit the unfinished trials to Slurm
 *   spark sweep status <sweep-dir> [--json]
 *   spark sweep finalize <sweep-dir>                             rewrite the summary and close the parent run
 *   spark sweep trial <sweep-dir> <i> [--plain]                  run one trial (used by --parallel and Slurm tasks)
 */
import { parseCommandArgs } from '../args.js';
import { UsageError } from '../../util/errors.js';
import { commandHint } from '../../util/hint.js';

export const summary = 'run, resume, launch (Slurm) and inspect sweeps: grid / zip / list of trials with nested MLflow runs';

const USAGE = `usage:
  spark sweep [run] <spec> [--sweep path=v1,v2]... [--set a.b=c]... [--parallel N] [--fail-fast] [--plain]
  spark sweep plan <spec> [--sweep ...] [--set ...]
  spark sweep resume <sweep-dir> [--parallel N] [--fail-fast] [--plain]
  spark sweep launch --launcher slurm <spec> [--sweep ...] [--set ...] [--submit] [--partition p]
                     [--time HH:MM:SS] [--cpus-per-task n] [--mem 4G] [--gres gpu:1] [--array-parallel k]
                     [--account a] [--qos q]
  spark sweep launch --resume <sweep-dir> [--submit] [--time HH:MM:SS] [...]
  spark sweep status <sweep-dir> [--json]
  spark sweep finalize <sweep-dir>
  spark sweep trial <sweep-dir> <i> [--plain]

--sweep path=v1,v2,...   adds a grid axis (values typed by the schema; split on top-level commas: [0.2,1] is one value)
--parallel N             N trials at a time, as child processes (one device each from CUDA_VISIBLE_DEVICES)
--fail-fast              stop starting trials after the first failure (default: record FAILED and go on)
launch --resume <dir>    resubmit a Slurm sweep's unfinished trials as a new array job (each resumes from its
                         checkpoint); options given override the recorded ones
`;

const SUBCOMMANDS = new Set(['run', 'plan', 'resume', 'launch', 'status', 'finalize', 'trial', 'help']);

function intOpt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`--${name} ${v}: expected a positive integer`);
  return Number(v);
}

function one(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected ${what}\n${USAGE}`);
  return positionals[0]!;
}

export default async function sweep(argv: string[]): Promise<number> {
  let sub = argv[0];
  let rest = argv.slice(1);
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (!SUBCOMMANDS.has(sub)) {
    // `spark sweep <spec> ...` = `spark sweep run <spec> ...`
    sub = 'run';
    rest = argv;
  }
  const { values: v, positionals } = parseCommandArgs('sweep', {
    args: rest,
    allowPositionals: true,
    strict: true,
    options: {
      sweep: { type: 'string', multiple: true },
      set: { type: 'string', multiple: true },
      parallel: { type: 'string' },
      'fail-fast': { type: 'boolean' },
      plain: { type: 'boolean' },
      resume: { type: 'string' },
      json: { type: 'boolean' },
      launcher: { type: 'string' },
      submit: { type: 'boolean' },
      partition: { type: 'string' },
      time: { type: 'string' },
      'cpus-per-task': { type: 'string' },
      mem: { type: 'string' },
      gres: { type: 'string' },
      'array-parallel': { type: 'string' },
      account: { type: 'string' },
      qos: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const sw = await import('../../sweep/index.js');
  const out = (s: string) => process.stdout.write(s);
  switch (sub) {
    case 'run':
    case 'resume': {
      const parallel = intOpt('parallel', v.parallel);
      const resumeDir = sub === 'resume' ? one(positionals, 'a sweep folder') : v.resume;
      if (resumeDir) {
        if (sub === 'run' && positionals.length) throw new UsageError('give either a spec or --resume <sweep-dir>');
        const r = await sw.runSweep({ resumeDir, parallel, failFast: v['fail-fast'], plain: v.plain, cliSweeps: v.sweep });
        return r.exitCode;
      }
      const spec = one(positionals, 'a spec file');
      const { loadExperiment } = await import('../../spec/index.js');
      const loaded = await loadExperiment(spec, { set: v.set });
      const r = await sw.runSweep({ loaded, cliSweeps: v.sweep ?? [], parallel, failFast: v['fail-fast'], plain: v.plain });
      return r.exitCode;
    }
    case 'plan': {
      const spec = one(positionals, 'a spec file');
      const { loadExperiment } = await import('../../spec/index.js');
      const loaded = await loadExperiment(spec, { set: v.set });
      const trials = sw.expandSweep(loaded.raw, v.sweep ?? [], { file: loaded.specPath });
      if (v.json) {
        out(JSON.stringify(trials.map((t) => ({ index: t.index, name: t.name, overrides: t.overrides })), null, 2) + '\n');
        return 0;
      }
      out(`${trials.length} trial(s) of ${loaded.specPath}, all valid:\n`);
      for (const t of trials) {
        const ov = Object.entries(t.overrides).map(([k, x]) => `${k}=${JSON.stringify(x)}`).join(' ');
        out(`  ${String(t.index + 1).padStart(3)}  ${t.name}${ov ? `   (${ov})` : ''}\n`); // counted from 1, as on the console
      }
      return 0;
    }
    case 'launch': {
      const launcher = v.launcher ?? 'slurm';
      if (launcher !== 'slurm') throw new UsageError(`--launcher ${launcher}: only 'slurm' can be launched (local sweeps: spark sweep run)`);
      const options = {
        partition: v.partition,
        time: v.time,
        cpusPerTask: intOpt('cpus-per-task', v['cpus-per-task']),
        mem: v.mem,
        gres: v.gres,
        arrayParallel: intOpt('array-parallel', v['array-parallel']),
        account: v.account,
        qos: v.qos,
      };
      if (v.resume !== undefined) {
        if (positionals.length) throw new UsageError('give either a spec or --resume <sweep-dir>, not both');
        if (v.sweep?.length || v.set?.length) throw new UsageError('--sweep / --set cannot be combined with --resume (the trials are fixed when a sweep starts)');
        const r = await sw.resumeSlurm({ dir: v.resume, options });
        for (const n of r.notes) out(`note: ${n}\n`);
        if (!r.jobId) {
          out(`sweep ${r.sweep.id}: nothing to resubmit (${r.sweep.status.toLowerCase()})\n`);
          return 0;
        }
        const labels = r.tasks.map((i) => String(i + 1)).join(', ');
        out(`resubmitted ${r.tasks.length} unfinished trial(s) (${labels} of ${r.sweep.trials.length}) as array job ${r.jobId}; follow with: spark sweep status ${sw.shellQuote(r.dir)}\n`);
        return 0;
      }
      const spec = one(positionals, 'a spec file');
      const { loadExperiment } = await import('../../spec/index.js');
      const loaded = await loadExperiment(spec, { set: v.set });
      const r = await sw.launchSlurm({
        loaded,
        cliSweeps: v.sweep ?? [],
        submit: v.submit,
        options,
      });
      out(`sweep folder: ${r.dir}\nsbatch script: ${r.script}\n`);
      if (r.sweep.tracking.parentRunId) out(`mlflow parent run: ${r.sweep.tracking.parentRunId} (${r.sweep.tracking.uri})\n`);
      if (r.jobId) out(`submitted array job ${r.jobId} (${r.sweep.trials.length} tasks); follow with: ${commandHint(['sweep', 'status', { path: r.dir }])}\n`);
      else out(`submit with: cd ${sw.shellQuote(r.dir)} && sbatch slurm/sweep.sbatch   (or add --submit)\n`);
      return 0;
    }
    case 'status': {
      const dir = one(positionals, 'a sweep folder');
      const rep = await sw.sweepStatus(dir);
      if (v.json) out(JSON.stringify({ dir: rep.dir, status: rep.sweep.status, launcher: rep.sweep.launcher, best: rep.sweep.best, trials: rep.rows, notes: rep.notes }, null, 2) + '\n');
      else out(sw.formatStatus(rep));
      return 0;
    }
    case 'finalize': {
      const dir = one(positionals, 'a sweep folder');
      const s = await sw.readSweep(dir);
      const tracker = s.tracking.enabled && s.tracking.uri ? await sw.openSweepTracker(s.tracking.uri) : null;
      const done = await sw.finalizeSweep(dir, tracker);
      out(`sweep ${done.id}: ${done.status.toLowerCase()}; summary in ${dir}/summary.md\n`);
      return 0;
    }
    case 'trial': {
      if (positionals.length !== 2) throw new UsageError(`expected a sweep folder and a trial index\n${USAGE}`);
      return sw.runSweepTrial(positionals[0]!, sw.parseTrialIndex(positionals[1]), { plain: v.plain });
    }
    default:
      throw new UsageError(USAGE);
  }
}
