/**
 * `loadExperiment(file, {set})`: read a spec, follow `extends:`, apply `--set` overrides, validate, fill defaults.
 */
import path from 'node:path';
import { stringify } from 'yaml';
import { applyOverride, loadLayers, mergeLayers, parseAssignment, type Layer } from './compose.js';
import { resolveWithLayers } from './resolve.js';
import type { ExperimentConfig } from './types.js';

export interface LoadOptions {
  /** `a.b=c` overrides, applied in order after `extends:` merging. */
  set?: string[];
}

export interface LoadedExperiment {
  /** Validated config with every default filled in. */
  config: ExperimentConfig;
  /** Absolute path of the spec file. */
  specPath: string;
  /** `config` as YAML (what `--print` and the dry run show, and what a run folder records). */
  resolvedYaml: string;
  /** The merged config after `extends:` and `--set`, before defaults (re-validated by sweeps per trial). */
  raw: Record<string, unknown>;
}

/** The resolved config as YAML text. */
export function configToYaml(config: ExperimentConfig): string {
  return stringify(config, { lineWidth: 0, aliasDuplicateObjects: false });
}

/** A spec file with its `extends:` chain merged and the `--set` overrides applied, with the layers that locate errors. */
export function composeSpec(file: string, set: string[] = []): { layers: Layer[]; raw: Record<string, unknown> } {
  const layers: Layer[] = loadLayers(file);
  let raw = mergeLayers(layers);
  for (const assignment of set) {
    const a = parseAssignment(assignment);
    raw = applyOverride(raw, assignment);
    layers.push({ kind: 'set', assignment, path: a.path, label: '--set' });
  }
  return { layers, raw };
}

/** Synchronous core of loadExperiment (throws SpecError). */
export function loadExperimentSync(file: string, opts: LoadOptions = {}): LoadedExperiment {
  const { layers, raw } = composeSpec(file, opts.set);
  const config = resolveWithLayers(raw, layers, file);
  return { config, specPath: path.resolve(file), resolvedYaml: configToYaml(config), raw };
}

/** Load, compose and validate an experiment spec; throws a located SpecError. */
export async function loadExperiment(file: string, opts: LoadOptions = {}): Promise<LoadedExperiment> {
  return loadExperimentSync(file, opts);
}
