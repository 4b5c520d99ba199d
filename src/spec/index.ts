/** The experiment-spec layer: loading, composition, validation and the dry-run plan. */
export type * from './types.js';
export { loadExperiment, loadExperimentSync, composeSpec, configToYaml, type LoadedExperiment, type LoadOptions } from './load.js';
export { resolveConfig, pathLabel, type ConfigOrigin } from './resolve.js';
export { isBaseName, extendedBy, checkBaseSpec } from './base.js';
export { applyOverride, parseAssignment, deepMerge, loadLayers, mergeLayers, type Assignment, type Layer } from './compose.js';
export { planRun, formatPlan, countImages, IMAGE_EXTENSIONS, type RunPlan, type PlanOptions } from './plan.js';
export { experimentSchema, rootAt, childAt } from './schema.js';
export { parseSpec, formatExcerpt, MAX_ALIAS_COUNT, type ConfigPath } from './source.js';
export { didYouMean, editDistance } from './suggest.js';
