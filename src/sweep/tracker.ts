/**
 * What the sweep needs from tracking: a parent MLflow run (created at sweep start / launch), the final summary on
 * it, and read access to child runs. `storeTracker(store)` adapts the track module's `TrackingStore`; tests inject
 * their own.
 */
import path from 'node:path';
import type { ExperimentConfig } from '../spec/types.js';
import type { TrackingStore } from '../track/types.js';
import { configParams as trackConfigParams, systemTags } from '../track/params.js';
import { isUnreachable, parentRunUnreachable, resolveTrackingUri as trackResolveUri } from '../track/index.js';

export interface SweepTracker {
  /** Create the parent run; returns its run id. */
  createParent(o: { experiment: string; runName: string; params: Record<string, string>; tags: Record<string, string>; specPath?: string | null }): Promise<string>;
  /** Mark the parent as running again (resume). */
  reopenParent(runId: string): Promise<void>;
  /** Final summary on the parent: params, metrics, tags, artifact files (local paths), terminal status. */
  finishParent(
    runId: string,
    o: {
      status: 'FINISHED' | 'FAILED' | 'KILLED';
      params: Record<string, string>;
      metrics: Record<string, number>;
      tags: Record<string, string>;
      artifacts: string[];
      /** Step of the metrics (default 0; sweeps use the number of finished trials, so the latest value wins). */
      step?: number;
    },
  ): Promise<string[]>;
  /** A run's status and latest metrics; null when it cannot be read. */
  getRun(runId: string): Promise<{ status: string; metrics: Record<string, number>; tags: Record<string, string> } | null>;
  /** Children of a parent run (by tag `mlflow.parentRunId`), with their `sweep.trial` tag. */
  listChildren(parentRunId: string): Promise<Array<{ runId: string; trial: number | null; status: string; metrics: Record<string, number> }>>;
  /**
   * Log metrics (at `step`) and tags on the parent while the sweep runs: the best trial so far (`best.<metric>`
   * metric, `best.<metric>.trial` / `.run_id` / `.name` tags) after every trial that ends.
   */
  updateParent?(runId: string, o: { metrics: Record<string, number>; tags: Record<string, string>; step: number }): Promise<void>;
  /** End a child run that its process left RUNNING (a lost Slurm task), with tags saying why. */
  endRun?(runId: string, status: 'FAILED' | 'KILLED', tags: Record<string, string>): Promise<void>;
}

/** Adapt a TrackingStore (file store or REST) to the sweep's needs. */
export function storeTracker(store: TrackingStore): SweepTracker {
  let experimentId: string | null = null;
  return {
    // an unreachable server at sweep start is a one-line error naming the URI and the way out (the parent run is
    // not started offline: trials are tagged with its id when they are created)
    async createParent(o) {
      try {
        experimentId = await store.getOrCreateExperiment(o.experiment);
        const tags = { ...systemTags({ runName: o.runName, specPath: o.specPath ?? null }), ...o.tags };
        const info = await store.createRun({ experimentId, runName: o.runName, tags, userId: tags['mlflow.user'] });
        await store.logParams(info.runId, o.params);
        return info.runId;
      } catch (err) {
        if (isUnreachable(err)) throw parentRunUnreachable(store.uri, err);
        throw err;
      }
    },
    async reopenParent(runId) {
      await store.setTerminated(runId, 'RUNNING');
      await store.setTags(runId, { 'sweep.resumed_at': new Date().toISOString() });
    },
    async finishParent(runId, o) {
      const warnings: string[] = [];
      for (const f of o.artifacts) {
        try {
          await store.logArtifact(runId, f, null);
        } catch (e) {
          warnings.push(`artifact ${path.basename(f)}: ${(e as Error).message}`);
        }
      }
      const now = Date.now();
      const metrics = Object.entries(o.metrics)
        .filter(([, v]) => Number.isFinite(v))
        .map(([key, value]) => ({ key, value, timestamp: now, step: o.step ?? 0 }));
      if (metrics.length) await store.logMetrics(runId, metrics);
      // params are immutable in MLflow: a resumed sweep whose best trial changed keeps the new value as a tag
      for (const [k, v] of Object.entries(o.params)) {
        try {
          await store.logParams(runId, { [k]: v });
        } catch (e) {
          warnings.push(`param ${k}: ${(e as Error).message} (recorded as tag instead)`);
          await store.setTags(runId, { [k]: v });
        }
      }
      if (Object.keys(o.tags).length) await store.setTags(runId, o.tags);
      await store.setTerminated(runId, o.status, now);
      return warnings;
    },
    async updateParent(runId, o) {
      const now = Date.now();
      const metrics = Object.entries(o.metrics)
        .filter(([, v]) => Number.isFinite(v))
        .map(([key, value]) => ({ key, value, timestamp: now, step: o.step }));
      if (metrics.length) await store.logMetrics(runId, metrics);
      if (Object.keys(o.tags).length) await store.setTags(runId, o.tags);
    },
    async endRun(runId, status, tags) {
      const r = await store.getRun(runId);
      if (r.info.status !== 'RUNNING' && r.info.status !== 'SCHEDULED') return;
      if (Object.keys(tags).length) await store.setTags(runId, tags);
      await store.setTerminated(runId, status, Date.now());
    },
    async getRun(runId) {
      try {
        const r = await store.getRun(runId);
        return { status: r.info.status, metrics: r.data.metrics, tags: r.data.tags };
      } catch {
        return null;
      }
    },
    async listChildren(parentRunId) {
      let expIds: string[];
      try {
        const parent = await store.getRun(parentRunId);
        expIds = [parent.info.experimentId];
      } catch {
        return [];
      }
      const out: Array<{ runId: string; trial: number | null; status: string; metrics: Record<string, number> }> = [];
      let token: string | undefined;
      for (let page = 0; page < 1000; page++) {
        const r = await store.searchRuns(expIds, `tags.mlflow.parentRunId = '${parentRunId}'`, [], 1000, token);
        for (const run of r.runs) {
          const t = run.data.tags['sweep.trial'];
          out.push({ runId: run.info.runId, trial: t !== undefined && /^\d+$/.test(t) ? Number(t) : null, status: run.info.status, metrics: run.data.metrics });
        }
        if (!r.nextPageToken) break;
        token = r.nextPageToken;
      }
      return out;
    },
  };
}

/** Open the tracker for a URI through the track module. */
export async function openSweepTracker(uri: string): Promise<SweepTracker> {
  const track = await import('../track/index.js');
  return storeTracker(track.openStore(uri, track.TRACKER_REST_OPTIONS));
}

/**
 * The tracking URI a sweep records and hands to every trial: `tracking.uri`, else $MLFLOW_TRACKING_URI, else
 * `./mlruns`; a file store becomes an absolute path (children may run from another directory or node).
 */
export function resolveTrackingUri(uri: string | null | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return trackResolveUri(uri, env);
}

/** The base config as MLflow params, formatted exactly as the trainer logs a run's config. */
export function configParams(config: ExperimentConfig): Record<string, string> {
  return trackConfigParams(config);
}
