/**
 * The sweep entry points shared by `spark sweep` and `spark run` (which delegates here when it is given `--sweep`,
 * a spec with a `sweep:` section, `--resume <sweep-dir>` or `--sweep-trial i <sweep-dir>`).
 */
import { UsageError } from '../util/errors.js';
import { parseSweepSection } from './expand.js';
import { runSweep, runSweepTrial, parseTrialIndex, type LoadedSpec, type SweepDeps } from './runner.js';
import { isSweepDir } from './state.js';

export interface RunDelegation {
  /** Spec file (ignored when `loaded` is given). */
  spec?: string;
  loaded?: LoadedSpec;
  set?: string[];
  /** `--sweep path=v1,v2` arguments. */
  sweeps?: string[];
  /** `--resume <dir>`: a sweep folder is resumed as a sweep; a run folder is not ours (returns null). */
  resume?: string;
  /** `--sweep-trial i`: run trial i of the sweep folder given as `resume` or `spec`. */
  sweepTrial?: string;
  parallel?: number;
  failFast?: boolean;
  plain?: boolean;
}

/** True when a raw config has a non-empty `sweep:` section. */
export function hasSweepSection(raw: object, file?: string): boolean {
  const s = parseSweepSection(raw, file);
  return s.grid.length > 0 || s.zip.length > 0 || s.list.length > 0;
}

/**
 * Handle `spark run` arguments that mean a sweep; returns the exit code, or null when they describe a plain run
 * (the caller then runs it itself).
 */
export async function sweepFromRunArgs(o: RunDelegation, deps: SweepDeps = {}): Promise<number | null> {
  if (o.sweepTrial !== undefined) {
    const dir = o.resume ?? o.spec;
    if (!dir) throw new UsageError('--sweep-trial needs the sweep folder: spark run --sweep-trial <i> <sweep-dir>');
    if (!isSweepDir(dir)) throw new UsageError(`${dir}: not a sweep folder (no sweep.json)`);
    return runSweepTrial(dir, parseTrialIndex(o.sweepTrial), { plain: o.plain, runTrial: deps.runTrial, tracker: deps.tracker, log: deps.log });
  }
  if (o.resume !== undefined) {
    if (!isSweepDir(o.resume)) return null;
    const r = await runSweep({ resumeDir: o.resume, parallel: o.parallel, failFast: o.failFast, plain: o.plain, cliSweeps: o.sweeps }, deps);
    return r.exitCode;
  }
  let loaded = o.loaded;
  if (!loaded) {
    if (!o.spec) return null;
    const { loadExperiment } = await import('../spec/index.js');
    loaded = await loadExperiment(o.spec, { set: o.set });
  }
  if (!(o.sweeps?.length) && !hasSweepSection(loaded.raw, loaded.specPath)) return null;
  const r = await runSweep({ loaded, cliSweeps: o.sweeps ?? [], parallel: o.parallel, failFast: o.failFast, plain: o.plain }, deps);
  return r.exitCode;
}
