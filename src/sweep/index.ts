/**
 * Sweeps: expansion of a spec's `sweep:` section (+ `--sweep` axes) into validated trials, their execution (in
 * process, `--parallel` child processes, or a Slurm array job) with a parent MLflow run and nested children, the
 * sweep folder's `sweep.json`, summaries and status.
 */
export * from './types.js';
export {
  expandSweep,
  parseCliSweep,
  parseSweepSection,
  expandOverrides,
  varyingPaths,
  trialName,
  formatValue,
  splitTopLevel,
  getPath,
  setPath,
  type SpecFns,
  type SweepSection,
} from './expand.js';
export {
  runSweep,
  runSweepTrial,
  createSweep,
  executeTrial,
  finalizeSweep,
  recordProgress,
  parentBest,
  createSweepParent,
  inProcessRunner,
  childProcessRunner,
  jsonEventWriter,
  sparkCommand,
  shellQuote,
  parseTrialIndex,
  type RunSweepOptions,
  type SweepDeps,
  type SweepResult,
  type TrialRunner,
  type TrialRunRequest,
  type TrialRunResult,
  type SweepConsoleLike,
  type LoadedSpec,
} from './runner.js';
export { isSweepDir, readSweep, updateSweep, SWEEP_FILE } from './state.js';
export { bestTrials, summaryCsv, summaryMarkdown } from './summary.js';
export { storeTracker, openSweepTracker, resolveTrackingUri, configParams, type SweepTracker } from './tracker.js';
export {
  launchSlurm,
  resumeSlurm,
  buildSbatchScript,
  submitSbatch,
  querySlurmArray,
  checkSlurmOptions,
  currentCluster,
  type SlurmOptions,
  type ResumeResult,
} from './slurm.js';
export { judgeTrials, applyVerdicts, type TrialVerdict } from './reconcile.js';
export { parentParams, sweepDefinitionParams } from './definition.js';
export { sweepStatus, formatStatus } from './status.js';
export { sweepFromRunArgs, hasSweepSection, type RunDelegation } from './cli.js';
