/**
 * Types of the sweep module: the `sweep:` section of a spec, the expanded trials, and the `sweep.json` file that a
 * sweep folder holds (`<output.dir>/<name>/sweep-<id>/sweep.json`).
 */
import type { ExperimentConfig } from '../spec/types.js';

export type MetricMode = 'min' | 'max';

export interface MetricSpec {
  /** Metric key as the child runs log it (`loss` = the final training loss). */
  name: string;
  mode: MetricMode;
}

/** One override of a trial: dotted config path → value (already typed: number, string, object...). */
export type Overrides = Record<string, unknown>;

/** One expanded trial of a sweep. */
export interface Trial {
  /** 0-based position in the sweep (also the Slurm array task id). */
  index: number;
  /** Display / MLflow run name, e.g. `mask_ratio=0.6,encoder=resnet_mini`. */
  name: string;
  /** The trial's overrides over the base spec, in application order. */
  overrides: Overrides;
  /** The overrides whose value differs between trials, formatted as strings (the trial's "params"). */
  params: Record<string, string>;
  /** Fully resolved and validated configuration of this trial (no `sweep` section). */
  config: ExperimentConfig;
}

export type TrialStatus = 'PENDING' | 'RUNNING' | 'FINISHED' | 'FAILED' | 'KILLED';

/** A trial as recorded in sweep.json. */
export interface TrialRecord {
  index: number;
  name: string;
  overrides: Overrides;
  params: Record<string, string>;
  /** Trial spec file, relative to the sweep folder (a complete, resolved experiment spec). */
  specFile: string;
  /** Run folder of the trial, relative to the sweep folder. */
  runDir: string;
  status: TrialStatus;
  mlflowRunId: string | null;
  step: number | null;
  finalLoss: number | null;
  /** Final metrics used for ranking (`loss` is always there when the trial finished). */
  metrics: Record<string, number>;
  error: string | null;
  startedAt: string | null;
  endedAt: string | null;
  /** How many times the trial was started (> 1 after a resume). */
  attempts: number;
}

/** Where a Slurm job was submitted: the cluster's name and the SLURM_CONF in effect (null: Slurm's default). */
export interface SlurmCluster {
  name: string | null;
  slurmConf: string | null;
}

/** One submission of (part of) a sweep as an array job. */
export interface SlurmSubmission {
  jobId: string;
  submittedAt: string | null;
  cluster: SlurmCluster | null;
  /** Array task ids (= trial indices) of the job. */
  tasks: number[];
  script: string;
}

export interface SlurmLaunchRecord {
  type: 'slurm';
  /** The current job's script, relative to the sweep folder. */
  script: string;
  /** The current array job (the latest submission); `spark sweep status` follows it. */
  jobId: string | null;
  submittedAt: string | null;
  options: Record<string, string | number>;
  /** The current job's cluster (absent in sweeps launched before it was recorded). */
  cluster?: SlurmCluster | null;
  /** The current job's array task ids (absent: every trial). */
  tasks?: number[];
  /** Earlier submissions, oldest first (`spark sweep launch --resume` resubmits the unfinished trials). */
  history?: SlurmSubmission[];
}

export interface SweepFile {
  version: 1;
  id: string;
  /** Experiment name (the base spec's `name`). */
  name: string;
  /** Absolute path of the spec the sweep was expanded from. */
  specPath: string;
  createdAt: string;
  updatedAt: string;
  /** `--sweep` arguments given on the command line (grid axes added to the spec's). */
  cliSweeps: string[];
  /** Ranking metrics; the first one is the primary. */
  metrics: MetricSpec[];
  /** Config paths that vary across trials, in first-seen order. */
  varying: string[];
  status: 'PENDING' | 'RUNNING' | 'FINISHED' | 'FAILED' | 'KILLED';
  tracking: {
    enabled: boolean;
    /** Tracking URI (absolute `file:` URI / path for a file store). */
    uri: string | null;
    experiment: string;
    parentRunId: string | null;
  };
  launcher: { type: 'local'; parallel: number } | SlurmLaunchRecord;
  trials: TrialRecord[];
  /** Best trial per metric, updated as trials end. */
  best: Record<string, { trial: number; name: string; value: number }>;
}
