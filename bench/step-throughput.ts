/**
 * SparK pre-training step throughput (issue 4 item 6): for each backend and model, the wall time of one full
 * training step — random mask (ratio from the config, 0.6 for the presets), forward + backward with
 * tf.variableGrads, LAMB update — through the trainer's own `trainStepAsync` (src/train/step.ts) and `Lamb`
 * (src/train/optimizers.ts), plus the same step of the dense twin (no sparse emulation) and with an all-visible mask;
 * see bench/lib/spark-step.ts for exactly what each mode computes. Per case and mode it also reports the kernel
 * calls of one step and of its optimizer update (`tf.profile`) and the peak RSS. Optionally the same step in
 * PyTorch (bench/torch_spark.py) for a tfjs/torch ratio.
 *
 *   npm run build && node dist/bench/step-throughput.js [--backends tensorflow,wasm,cpu]
 *       [--models resnet50,convnext_small,quickstart] [--batch 8] [--size 224] [--decoder-width 768] [--iters 5] [--warmup 2]
 *       [--modes sparse,dense,visible] [--threads 2] [--torch] [--torch-formats nchw,channels_last]
 *       [--python python3] [--max-case-seconds 900] [--force] [--interleave] [--json out.json]
 * --interleave alternates the modes step by step (all models alive together) so that they see the same background
 * load: use it on a shared machine when the sparse/dense ratio matters. Without it each mode runs in its own child
 * process, so that its peak RSS is its own; with it the peak RSS is that of all modes together.
 *   node dist/bench/step-throughput.js --report a.json[,b.json]   (re-print / merge the tables of --json outputs)
 *   --backends '' --torch runs only the PyTorch side.
 *
 * `quickstart` is experiments/quickstart.yaml's model at its own input size and batch size; the other names are
 * encoder presets (src/models/registry.ts) with the reference decoder (width 768, or --decoder-width), mask ratio 0.6, their default
 * drop path, at --size and --batch. Each (backend, model) runs in a child process, so one running out of memory does
 * not end the benchmark and every case starts from a fresh heap. A case whose estimated time exceeds
 * --max-case-seconds on a slow backend (cpu, wasm) is skipped with the reason (--force runs it anyway).
 * The input batch is synthetic and made once (data loading is not part of the step time).
 */
import * as tf from '@tensorflow/tfjs';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, type BackendRequest } from '../src/backend/init.js';
import { loadExperiment } from '../src/spec/index.js';
import { describeEncoder, sparkParamCount } from '../src/models/registry.js';
import type { ModelConfig } from '../src/spec/types.js';
import { MODES, resolveCase, timeInterleaved, sparkMacs, stepFlops, timeMode, type BenchCase, type Mode, type ModeResult, type ResolvedCase } from './lib/spark-step.js';

// ---------------------------------------------------------------------------------------------------------------- args

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);
const list = (s: string): string[] => s.split(',').map((x) => x.trim()).filter(Boolean);

function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(d, 'package.json')) && existsSync(path.join(d, 'experiments'))) return d;
    d = path.dirname(d);
  }
  return process.cwd();
}

// ------------------------------------------------------------------------------------------------------------ the cases

async function makeCase(name: string, size: number, batch: number, decoderWidth: number, root: string): Promise<BenchCase> {
  if (name === 'quickstart') {
    const { config } = await loadExperiment(path.join(root, 'experiments', 'quickstart.yaml'));
    const info = describeEncoder(config.model.encoder);
    return {
      label: 'quickstart',
      model: config.model,
      inputSize: config.data.input_size,
      batch: config.train.batch_size,
      beta2: config.train.optimizer.betas?.[1] ?? info.defaultBeta2,
    };
  }
  const model: ModelConfig = { encoder: name, decoder: { type: 'light', width: decoderWidth }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' };
  const info = describeEncoder(name); // throws UsageError for an unknown preset
  return { label: name, model, inputSize: size, batch, beta2: info.defaultBeta2 };
}

/** Rough sustained training throughput (GFLOP/s) of the slow backends, for skipping hopeless cases. */
const SLOW_BACKEND_GFLOPS: Record<string, number> = { cpu: 0.2, wasm: 3 };

function skipReason(c: BenchCase, backend: string, steps: number, modes: number, maxSeconds: number): string | null {
  const g = SLOW_BACKEND_GFLOPS[backend];
  if (g === undefined) return null;
  const gf = stepFlops(c) / 1e9;
  const est = (gf / g) * steps * modes;
  if (est > maxSeconds) {
    return `${gf.toFixed(0)} GFLOP per step at ~${g} GFLOP/s on ${backend} ≈ ${(gf / g).toFixed(0)} s/step, ` +
      `~${(est / 60).toFixed(0)} min for ${steps} steps × ${modes} modes (> --max-case-seconds ${maxSeconds}; --force runs it)`;
  }
  if (backend === 'wasm' && c.inputSize >= 224 && c.batch > 2) {
    return 'wasm32 heap is capped at 4 GB (tfjs keeps every intermediate: ~1 GB per 224² image for a ResNet-50 step)';
  }
  return null;
}

// ------------------------------------------------------------------------------------------------------- child process

interface ChildJob {
  backend: BackendRequest;
  threads: number;
  case: BenchCase;
  modes: Mode[];
  warmup: number;
  iters: number;
  interleave: boolean;
}

interface CaseResult {
  label: string;
  backend: string;
  backendInfo?: { provider: string; tfVersion?: string; threads: number; reason: string };
  batch: number;
  size: number;
  gflopPerStep: number;
  params: number;
  modes: ModeResult[];
  /** The modes ran together in one process (--interleave): their peak RSS is shared. */
  interleaved?: boolean;
  skipped?: string;
  error?: string;
  loadavgBefore: number[];
  loadavgAfter: number[];
  seconds: number;
}

async function child(job: ChildJob): Promise<void> {
  const t0 = Date.now();
  const loadavgBefore = os.loadavg();
  const info = await initBackend(job.backend, { threads: job.threads });
  const c = job.case;
  const res: CaseResult = {
    label: c.label,
    ...(job.interleave ? { interleaved: true } : {}),
    backend: info.name,
    backendInfo: { provider: info.provider, ...(info.tfVersion ? { tfVersion: info.tfVersion } : {}), threads: info.threads, reason: info.reason },
    batch: c.batch,
    size: c.inputSize,
    gflopPerStep: stepFlops(c) / 1e9,
    params: sparkParamCount(c.model, c.inputSize),
    modes: [],
    loadavgBefore,
    loadavgAfter: [],
    seconds: 0,
  };
  const log = (s: string) => process.stderr.write(`[${c.label}/${info.name}] ${s}\n`);
  log(`backend ${info.name} (${info.reason}); batch ${c.batch} at ${c.inputSize}px; ${res.gflopPerStep.toFixed(1)} GFLOP/step`);
  if (job.interleave) {
    try {
      res.modes.push(...(await timeInterleaved(c, job.modes, { warmup: job.warmup, iters: job.iters, log })));
    } catch (e) {
      res.error = `interleaved: ${String((e as Error)?.message ?? e).split('\n')[0]}`;
      log(`FAILED ${res.error}`);
    }
  }
  for (const mode of job.interleave ? [] : job.modes) {
    try {
      res.modes.push(await timeMode(c, mode, { warmup: job.warmup, iters: job.iters, log }));
    } catch (e) {
      res.error = `${mode}: ${String((e as Error)?.message ?? e).split('\n')[0]}`;
      log(`FAILED ${res.error}`);
      break;
    }
  }
  res.loadavgAfter = os.loadavg();
  res.seconds = (Date.now() - t0) / 1000;
  process.stdout.write(`@@RESULT ${JSON.stringify(res)}\n`);
}

function runChild(job: ChildJob): Promise<CaseResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [...process.execArgv, process.argv[1]!, '--child', JSON.stringify(job)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: process.env,
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('close', (code, signal) => {
      const line = out.split('\n').find((l) => l.startsWith('@@RESULT '));
      if (line) return resolve(JSON.parse(line.slice(9)) as CaseResult);
      resolve({
        label: job.case.label, backend: job.backend, batch: job.case.batch, size: job.case.inputSize,
        gflopPerStep: stepFlops(job.case) / 1e9, params: sparkParamCount(job.case.model, job.case.inputSize), modes: [],
        error: `child process ended with ${signal ?? `exit code ${code}`}${signal === 'SIGKILL' ? ' (out of memory?)' : ''}`,
        loadavgBefore: [], loadavgAfter: os.loadavg(), seconds: 0,
      });
    });
  });
}

/** One child process per mode (each mode's peak RSS is its own), merged into one case result. */
async function runModes(job: ChildJob): Promise<CaseResult> {
  let merged: CaseResult | null = null;
  for (const mode of job.modes) {
    const r = await runChild({ ...job, modes: [mode] });
    if (!merged) {
      merged = r;
    } else {
      merged.modes.push(...r.modes);
      if (r.error) merged.error = merged.error ? `${merged.error}; ${r.error}` : r.error;
      merged.loadavgAfter = r.loadavgAfter;
      merged.seconds += r.seconds;
    }
    if (r.error && !r.modes.length && /unusable/.test(r.error)) break; // the backend cannot load: no point going on
  }
  return merged!;
}

// ------------------------------------------------------------------------------------------------------------- torch

interface TorchRow {
  label: string;
  mode: Mode;
  memory_format: string;
  batch: number;
  size: number;
  times_ms: number[];
  median_ms: number;
  min_ms: number;
  max_ms: number;
  loss: number;
  /** 1-minute load average before and after this row's steps. */
  loadavg?: number[];
  error?: string;
}
interface TorchResult {
  torch_version: string;
  threads: number;
  optimizer: string;
  results: TorchRow[];
  loadavg_before?: number[];
  loadavg_after?: number[];
  /** Peak RSS of the Python process over all its cases. */
  peak_rss_mib?: number;
  error?: string;
}

function runTorch(python: string, script: string, cases: ResolvedCase[], o: { modes: Mode[]; formats: string[]; warmup: number; iters: number; threads: number; interleave: boolean }): Promise<TorchResult> {
  return new Promise((resolve) => {
    const args = [script, '--cases', JSON.stringify(cases), '--modes', o.modes.join(','), '--formats', o.formats.join(','),
      '--warmup', String(o.warmup), '--iters', String(o.iters), '--threads', String(o.threads), ...(o.interleave ? ['--interleave'] : [])];
    const p = spawn(python, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', (e) => resolve({ torch_version: '?', threads: o.threads, optimizer: '?', results: [], error: String(e) }));
    p.on('close', (code) => {
      try {
        resolve(JSON.parse(out) as TorchResult);
      } catch {
        resolve({ torch_version: '?', threads: o.threads, optimizer: '?', results: [], error: `${python} ${script} exited ${code}; stdout: ${out.slice(-300)}` });
      }
    });
  });
}

// ------------------------------------------------------------------------------------------------------------ tables

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, j) => Math.max(...rows.map((r) => (r[j] ?? '').length)));
  const line = (r: string[]) => '| ' + r.map((c, j) => c.padEnd(w[j]!)).join(' | ') + ' |';
  return [line(rows[0]!), '|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|', ...rows.slice(1).map(line)].join('\n');
}
const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const range = (med: number, lo: number, hi: number) => `${ms(med)} [${ms(lo)}–${ms(hi)}]`;

function report(results: CaseResult[], torch: TorchResult | null): string {
  const out: string[] = [];
  const rows: string[][] = [['model', 'backend', 'mode', 'batch×px', 'ms/step median [min–max]', 'img/s', 'GFLOP/s', 'kernels/step (optimizer)', 'tensors warm→end', 'peak RSS MiB', 'load 1m']];
  for (const r of results) {
    if (r.skipped || (r.error && !r.modes.length)) {
      rows.push([r.label, r.backend, '—', `${r.batch}×${r.size}`, r.skipped ? `skipped: ${r.skipped}` : `error: ${r.error}`, '', '', '', '', '', '']);
      continue;
    }
    for (const m of r.modes) {
      const t = m.numTensors;
      // older --json files (before the kernel count) have only the sampled RSS
      const kernels = m.kernelsPerStep ? `${m.kernelsPerStep} (${m.optimizerKernelsPerStep})` : '—';
      const peak = m.peakRssMiB ?? m.rssMiB;
      rows.push([r.label, r.backend, m.mode, `${r.batch}×${r.size}`, range(m.medianMs, m.minMs, m.maxMs), m.imgPerSec.toFixed(2), m.gflops.toFixed(1), kernels,
        `${t.afterWarmup}→${t.afterTimed}${t.afterDispose !== t.beforeBuild ? ` (+${t.afterDispose - t.beforeBuild} after dispose)` : ''}`,
        `${peak.toFixed(0)}${r.interleaved ? ' (all modes)' : ''}`,
        m.loadavg ? `${m.loadavg[0].toFixed(1)}→${m.loadavg[1].toFixed(1)}` : '']);
    }
    if (r.error) rows.push([r.label, r.backend, '—', '', `error: ${r.error}`, '', '', '', '', '', '']);
  }
  out.push(table(rows));

  const tmed = (r: CaseResult, mode: Mode, fmt: string): TorchRow | undefined =>
    torch?.results.find((x) => x.label === r.label && x.batch === r.batch && x.size === r.size && x.mode === mode && x.memory_format === fmt && !x.error);
  const hdr = ['model', 'backend', 'batch×px', 'sparse ms', 'dense ms', 'sparse/dense', 'visible/dense'];
  if (torch) hdr.push('torch sparse NCHW', 'torch sparse CL', 'tfjs/torch median (min/min)', 'torch sparse/dense');
  const sum: string[][] = [hdr];
  for (const r of results) {
    const get = (m: Mode) => r.modes.find((x) => x.mode === m);
    const s = get('sparse');
    if (!s) continue;
    const d = get('dense');
    const v = get('visible');
    const row = [r.label, r.backend, `${r.batch}×${r.size}`, ms(s.medianMs), d ? ms(d.medianMs) : '—', d ? (s.medianMs / d.medianMs).toFixed(2) : '—', d && v ? (v.medianMs / d.medianMs).toFixed(2) : '—'];
    if (torch) {
      const tn = tmed(r, 'sparse', 'nchw');
      const tc = tmed(r, 'sparse', 'channels_last');
      const best = [tn, tc].filter((x): x is TorchRow => !!x).sort((a, b) => a.median_ms - b.median_ms)[0];
      const bestFmt = best?.memory_format;
      const td = bestFmt ? tmed(r, 'dense', bestFmt) : undefined;
      row.push(tn ? range(tn.median_ms, tn.min_ms, tn.max_ms) : '—', tc ? range(tc.median_ms, tc.min_ms, tc.max_ms) : '—',
        best ? `${(s.medianMs / best.median_ms).toFixed(2)} (${(s.minMs / Math.min(...[tn, tc].filter((x): x is TorchRow => !!x).map((x) => x.min_ms))).toFixed(2)}) ${bestFmt === 'nchw' ? 'NCHW' : 'CL'}` : '—',
        best && td ? (best.median_ms / td.median_ms).toFixed(2) : '—');
    }
    sum.push(row);
  }
  out.push('', 'sparse overhead (sparse = SparK step with a random mask; dense = the same network without the sparse emulation; visible = SparK graph with an all-ones mask)', '', table(sum));

  if (torch) {
    const trows: string[][] = [['model', 'mode', 'format', 'batch×px', 'ms/step median [min–max]', 'img/s', 'load 1m']];
    for (const t of torch.results) {
      trows.push([t.label, t.mode, t.memory_format, `${t.batch}×${t.size}`, t.error ? `error: ${t.error}` : range(t.median_ms, t.min_ms, t.max_ms), t.error ? '' : ((1000 * t.batch) / t.median_ms).toFixed(2),
        t.loadavg ? `${t.loadavg[0]!.toFixed(1)}→${t.loadavg[1]!.toFixed(1)}` : '']);
    }
    out.push('', `PyTorch ${torch.torch_version}, ${torch.threads} threads, ${torch.optimizer}` +
      `${torch.peak_rss_mib ? `; peak RSS ${torch.peak_rss_mib.toFixed(0)} MiB over all its cases` : ''}${torch.error ? ` — ERROR: ${torch.error}` : ''}`, '', table(trows));
  }
  return out.join('\n');
}

// -------------------------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const ci = process.argv.indexOf('--child');
  if (ci >= 0) return child(JSON.parse(process.argv[ci + 1]!) as ChildJob);

  const fromJson = arg('report', '');
  if (fromJson) {
    // re-print (and merge) the tables of earlier --json outputs, e.g. a tfjs run and a later torch-only run
    const runs = list(fromJson).map((f) => JSON.parse(readFileSync(f, 'utf8')) as { header: string[]; results: CaseResult[]; torch: TorchResult | null });
    const torchRuns = runs.map((r) => r.torch).filter((t): t is TorchResult => !!t);
    // a later file's row replaces an earlier one of the same (model, mode, format)
    const byKey = new Map<string, TorchRow>();
    for (const t of torchRuns) for (const row of t.results) byKey.set(`${row.label}/${row.batch}x${row.size}/${row.mode}/${row.memory_format}`, row);
    const torch = torchRuns.length ? { ...torchRuns[torchRuns.length - 1]!, results: [...byKey.values()] } : null;
    for (const r of runs) process.stdout.write(r.header.join('\n') + '\n\n');
    process.stdout.write(report(runs.flatMap((r) => r.results), torch) + '\n');
    return;
  }
  const root = repoRoot();
  const backends = list(arg('backends', 'tensorflow,wasm,cpu')) as BackendRequest[];
  const modelNames = list(arg('models', 'resnet50,convnext_small,quickstart'));
  const batch = Number(arg('batch', '8'));
  const size = Number(arg('size', '224'));
  const decoderWidth = Number(arg('decoder-width', '768'));
  if (!Number.isInteger(decoderWidth) || decoderWidth <= 0) throw new Error(`--decoder-width: a positive integer, got '${arg('decoder-width', '')}'`);
  const iters = Number(arg('iters', '5'));
  const warmup = Number(arg('warmup', '2'));
  const threads = Number(arg('threads', String(os.availableParallelism())));
  const modes = list(arg('modes', 'sparse,dense,visible')) as Mode[];
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`--modes: unknown mode '${m}' (known: ${MODES.join(', ')})`);
  const maxSeconds = Number(arg('max-case-seconds', '900'));
  const jsonOut = arg('json', '');
  const wantTorch = flag('torch');
  const interleave = flag('interleave');
  const cases = await Promise.all(modelNames.map((n) => makeCase(n, size, batch, decoderWidth, root)));

  const started = new Date();
  const header = [
    `SparK step throughput — ${started.toISOString()}`,
    `machine: ${os.cpus()[0]?.model ?? '?'} × ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; node ${process.version}; ` +
      `tfjs ${tf.version.tfjs}; load average at start ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    `iterations: ${warmup} warm-up + ${iters} timed per mode${interleave ? ', modes interleaved step by step' : ', modes one after the other'}; threads ${threads}`,
  ];
  for (const c of cases) {
    const m = sparkMacs(c.model, c.inputSize);
    header.push(`  ${c.label}: ${typeof c.model.encoder === 'string' ? c.model.encoder : JSON.stringify(c.model.encoder)}, decoder width ${c.model.decoder.width}, ` +
      `input ${c.inputSize}, batch ${c.batch}, mask ratio ${c.model.mask_ratio}; ${(sparkParamCount(c.model, c.inputSize) / 1e6).toFixed(1)} M params; ` +
      `fwd GMAC/img: encoder ${(m.encoder / 1e9).toFixed(2)} + densify ${(m.densify / 1e9).toFixed(2)} + decoder ${(m.decoder / 1e9).toFixed(2)}; ` +
      `${(stepFlops(c) / 1e9).toFixed(0)} GFLOP/step`);
  }
  process.stdout.write(header.join('\n') + '\n\n');

  const results: CaseResult[] = [];
  for (const backend of backends) {
    for (const c of cases) {
      const reason = flag('force') ? null : skipReason(c, backend, warmup + iters, modes.length, maxSeconds);
      if (reason) {
        process.stderr.write(`[${c.label}/${backend}] skipped: ${reason}\n`);
        results.push({ label: c.label, backend, batch: c.batch, size: c.inputSize, gflopPerStep: stepFlops(c) / 1e9, params: 0, modes: [], skipped: reason, loadavgBefore: os.loadavg(), loadavgAfter: [], seconds: 0 });
        continue;
      }
      const r = interleave ? await runChild({ backend, threads, case: c, modes, warmup, iters, interleave }) : await runModes({ backend, threads, case: c, modes, warmup, iters, interleave });
      if (r.error && !r.modes.length && /unusable/.test(r.error)) r.skipped = `backend unavailable: ${r.error}`;
      results.push(r);
      // a backend that cannot load is skipped for the remaining models
      if (r.skipped) {
        for (const c2 of cases.slice(cases.indexOf(c) + 1)) results.push({ ...r, label: c2.label, batch: c2.batch, size: c2.inputSize });
        break;
      }
    }
  }

  let torch: TorchResult | null = null;
  if (wantTorch) {
    const script = path.join(root, 'bench', 'torch_spark.py');
    const formats = list(arg('torch-formats', 'nchw,channels_last'));
    process.stderr.write(`[torch] ${script}\n`);
    torch = await runTorch(arg('python', 'python3'), script, cases.map(resolveCase), { modes, formats, warmup, iters, threads, interleave });
    torch.loadavg_after ??= os.loadavg();
  }

  const text = report(results, torch);
  process.stdout.write(text + `\n\nload average at end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; total ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s\n`);
  if (jsonOut) {
    writeFileSync(jsonOut, JSON.stringify({ started: started.toISOString(), header, args: process.argv.slice(2), results, torch, table: text }, null, 2));
    process.stdout.write(`wrote ${jsonOut}\n`);
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error)?.stack ?? e}\n`);
  process.exit(1);
});
