/** Shared fixtures of the train-* tests: a tiny spec on synthetic data and a way to spawn the spark CLI. */
import { mkdtempSync, writeFileSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadExperiment } from '../../src/spec/index.js';
import type { ExperimentConfig } from '../../src/spec/types.js';
import assert from 'node:assert/strict';
import { runExperiment } from '../../src/train/run.js';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import { toFloat32 } from '../../src/util/safetensors.js';
import type { RunEvent } from '../../src/train/events.js';

const made: string[] = [];
process.on('exit', () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh temporary folder, removed when the test process exits. */
export function tmpDir(prefix = 'spark-train-'): string {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(d);
  return d;
}

/** A tiny ConvNeXt SparK (fast on every backend) on 64 px synthetic images, written as a spec file. */
export function tinySpecYaml(opts: { outDir: string; name?: string; steps?: number; checkpointEvery?: number; backend?: string; extra?: string }): string {
  const backend = opts.backend ?? process.env['SPARK_BACKEND'] ?? 'auto';
  return `name: ${opts.name ?? 'tiny'}
task: pretrain
model:
  encoder: {family: convnext, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64]}
  decoder: {type: light, width: 32}
  mask_ratio: 0.5
  drop_path: 0.1
data:
  source: synthetic
  synthetic_size: 8
  input_size: 64
  workers: 0
  prefetch: 1
train:
  steps: ${opts.steps ?? 6}
  batch_size: 2
  accumulate: 1
  optimizer: {name: lamb, base_lr: 1.0e-3, base_batch_size: 2}
  warmup_steps: 2
runtime: {backend: ${backend}, seed: 7, threads: 1}
output: {dir: ${JSON.stringify(opts.outDir)}, checkpoint_every: ${opts.checkpointEvery ?? 2}, log_every: 1, reconstruct_every: 0}
tracking: {enabled: false}
${opts.extra ?? ''}`;
}

export async function tinyConfig(opts: Parameters<typeof tinySpecYaml>[0]): Promise<{ config: ExperimentConfig; specPath: string; resolvedYaml: string }> {
  const file = path.join(opts.outDir, `${opts.name ?? 'tiny'}.yaml`);
  writeFileSync(file, tinySpecYaml(opts));
  const l = await loadExperiment(file);
  return { config: l.config, specPath: l.specPath, resolvedYaml: l.resolvedYaml };
}

/** The command that runs the CLI from this checkout: compiled (dist/) or sources through tsx. */
export function sparkCli(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const js = path.resolve(here, '../../src/cli/main.js');
  if (existsSync(js)) return [process.execPath, js];
  return [process.execPath, '--import', 'tsx', path.resolve(here, '../../src/cli/main.ts')];
}

/** `spark <command> <args> --plain` in a child process; `done` resolves with its exit and output. */
export function spawnSpark(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  cwd?: string,
): { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> } {
  const [cmd, ...pre] = sparkCli();
  const child = spawn(cmd!, [...pre, command, ...args, '--plain'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((res) =>
    child.on('close', (code, signal) => res({ code, signal, stdout, stderr })),
  );
  return { child, done };
}

/** Resolves with the run folder once the only run of `<outDir>/<name>/` has a checkpoint at `step` or later (polling). */
export async function waitForCheckpoint(outDir: string, name: string, step: number, timeoutMs = 120_000): Promise<string> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    try {
      const dir = onlyRunDir(outDir, name);
      const f = path.join(dir, 'checkpoint', 'state.json');
      if (existsSync(f) && (JSON.parse(readFileSync(f, 'utf8')) as { step: number }).step >= step) return dir;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no checkpoint at step ${step} within ${timeoutMs} ms`);
}

/** The single run folder under `<outDir>/<name>/`. */
export function onlyRunDir(outDir: string, name: string): string {
  const d = path.join(outDir, name);
  const runs = readdirSync(d).filter((n) => !n.startsWith('.'));
  if (runs.length !== 1) throw new Error(`expected one run in ${d}, found ${runs.join(', ')}`);
  return path.join(d, runs[0]!);
}

/** Two finished runs hold the same params and buffers (to `tol`), both at step `steps`. */
export async function assertSameWeights(a: string, b: string, steps: number, tol = 1e-6): Promise<void> {
  const ca = await loadCheckpoint(a);
  const cb = await loadCheckpoint(b);
  assert.equal(ca.step, steps);
  assert.equal(cb.step, steps);
  for (const kind of ['params', 'buffers'] as const) {
    assert.deepEqual([...ca[kind].keys()].sort(), [...cb[kind].keys()].sort());
    for (const [name, ta] of ca[kind]) {
      const tb = cb[kind].get(name)!;
      if (ta.dtype !== 'F32') {
        assert.deepEqual(Buffer.from(tb.data), Buffer.from(ta.data), `${name}`);
        continue;
      }
      const va = toFloat32(ta);
      const vb = toFloat32(tb);
      let worst = 0;
      for (let i = 0; i < va.length; i++) worst = Math.max(worst, Math.abs(va[i]! - vb[i]!));
      assert.ok(worst <= tol, `${kind} ${name}: max abs diff ${worst}`);
    }
  }
}

const references = new Map<number, { runDir: string; losses: number[] }>();

/** The uninterrupted run every interrupted one is compared with (computed once per test file). */
export async function referenceRun(steps: number): Promise<{ runDir: string; losses: number[] }> {
  const cached = references.get(steps);
  if (cached) return cached;
  const out = tmpDir();
  const c = await tinyConfig({ outDir: out, name: 'ref', steps });
  const losses: number[] = [];
  const res = await runExperiment({ ...c, subscribers: [{ onEvent: (e: RunEvent) => void (e.type === 'step' && losses.push(e.loss)) }] });
  assert.equal(res.status, 'FINISHED');
  assert.equal(res.step, steps);
  assert.equal(losses.length, steps);
  const r = { runDir: res.runDir, losses };
  references.set(steps, r);
  return r;
}
