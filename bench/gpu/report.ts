/**
 * The GPU check's verdicts, as pure functions of its JSON records (bench/gpu/entry.ts writes them, run.sh calls
 * `table`): the CPU/GPU comparison of the small steps, and the one table of spark (torch backend) vs PyTorch.
 */
import type { ModeResult } from '../lib/spark-step.js';

/** Relative tolerance of the CPU/GPU comparison of losses and gradient norms (issue 11). */
export const LOSS_RTOL = 1e-4;
/** Throughput the torch backend must reach, as a fraction of PyTorch's on the same GPU (issue 11). */
export const MIN_RATIO = 0.8;

/** A few small SparK steps on one device: the loss and the gradient norm (before clipping) of each. */
export interface LossRecord {
  device: string;
  steps: number;
  cases: { label: string; size: number; batch: number; losses: number[]; gradNorms: number[] }[];
}

/** A LossRecord compared with the recorded one (`losses --expect`). */
export interface LossCheck extends LossRecord {
  expect?: string;
  ok?: boolean;
  report?: string[];
}

export interface SparkBenchRecord {
  label: string;
  batch: number;
  size: number;
  device: string;
  tf32: boolean;
  gflopPerStep: number;
  result?: ModeResult;
  error?: string;
}

export interface SparkBench {
  device: string;
  tf32: boolean;
  results: SparkBenchRecord[];
}

/** What bench/torch_spark.py prints (the fields used here). */
export interface TorchOut {
  torch_version: string;
  gpu?: string;
  device?: string;
  tf32?: { cudnn: boolean; matmul: boolean };
  results: { label: string; batch: number; size: number; memory_format: string; median_ms: number; error?: string }[];
}

/** Largest |got − want| / |want| over the entries (NaN, and so a failure, when one is missing or not finite). */
function maxRel(want: number[], got: number[]): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const r = Math.abs((got[i] ?? NaN) - want[i]!) / Math.abs(want[i]!);
    if (Number.isNaN(r)) return NaN;
    worst = Math.max(worst, r);
  }
  return worst;
}

/** Every recorded case must have been run and agree within LOSS_RTOL in each loss and gradient norm. */
export function compareLosses(want: LossRecord, got: LossRecord): { ok: boolean; report: string[] } {
  let ok = true;
  const report: string[] = [];
  for (const w of want.cases) {
    const g = got.cases.find((c) => c.label === w.label);
    if (!g) {
      ok = false;
      report.push(`${w.label}: not run`);
      continue;
    }
    const rl = maxRel(w.losses, g.losses);
    const rg = maxRel(w.gradNorms, g.gradNorms);
    const pass = rl <= LOSS_RTOL && rg <= LOSS_RTOL;
    ok &&= pass;
    report.push(`${w.label}: ${w.losses.length} steps on ${got.device} vs ${want.device}: largest relative difference ${rl.toExponential(2)} (losses), ` +
      `${rg.toExponential(2)} (gradient norms) ${pass ? '≤' : '>'} ${LOSS_RTOL} ${pass ? 'ok' : 'MISMATCH'}`);
  }
  return { ok, report };
}

/**
 * The table: per (model, batch) the spark step's median on the torch backend, PyTorch's medians in both memory
 * formats, and spark's throughput as a fraction of PyTorch's best. ok = every row ≥ MIN_RATIO and the losses agree.
 */
export function formatTable(spark: SparkBench, torch: TorchOut, losses?: LossCheck): { text: string; ok: boolean } {
  const lines: string[] = [];
  lines.push(`SparK step (sparse, mask 0.6, LAMB), ${spark.results[0]?.size ?? '?'} px, on ${torch.gpu ?? spark.device}; PyTorch ${torch.torch_version}` +
    ` (TF32: cuDNN ${torch.tf32?.cudnn ?? '?'}, matmul ${torch.tf32?.matmul ?? '?'}); spark torch backend TF32 ${spark.tf32 ? 'on' : 'off'}`);
  lines.push('');
  lines.push('| model | batch | spark/torch ms | spark img/s | PyTorch ms (nchw / channels_last) | PyTorch img/s (best) | spark ÷ PyTorch throughput |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  let ok = spark.results.length > 0;
  const f = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(1));
  for (const s of spark.results) {
    const t = torch.results.filter((r) => r.label === s.label && r.batch === s.batch && !r.error && r.median_ms > 0);
    const by = (fmt: string) => t.find((r) => r.memory_format === fmt)?.median_ms;
    const best = t.length ? Math.min(...t.map((r) => r.median_ms)) : NaN;
    const sm = s.result?.medianMs ?? NaN;
    const ratio = best / sm;
    if (!(ratio >= MIN_RATIO)) ok = false;
    lines.push(`| ${s.label} | ${s.batch} | ${s.error ? `FAILED: ${s.error}` : f(sm)} | ${f((1000 * s.batch) / sm)} | ${f(by('nchw'))} / ${f(by('channels_last'))} | ` +
      `${f((1000 * s.batch) / best)} | ${Number.isFinite(ratio) ? `${ratio.toFixed(2)}×${ratio >= MIN_RATIO ? '' : ` (< ${MIN_RATIO})`}` : '—'} |`);
  }
  if (losses) {
    lines.push('');
    lines.push(`losses vs CPU (relative ${LOSS_RTOL}, TF32 off): ${losses.ok ? 'ok' : 'MISMATCH'}`);
    for (const r of losses.report ?? []) lines.push(`  ${r}`);
    if (!losses.ok) ok = false;
  }
  return { text: lines.join('\n') + '\n', ok };
}
