/**
 * Batches that fit (pure arithmetic and a read of the system's memory; no TensorFlow — the dry-run uses it): how much memory one SparK training step takes per image, how much the device has, and the
 * micro-batch `train.accumulate: auto` splits `train.batch_size` into.
 *
 * The estimate (pure arithmetic, also used by the dry-run):
 *   peak ≈ runtime + model state + input batches + micro × (activation elements per image × bytes per element)
 * - activation elements per image: `activationElementsPerImage` in models/registry.ts (conv / linear outputs of
 *   the encoder and the decoder at the input size);
 * - bytes per element: CALIBRATION below, measured with `node dist/bench/memory-calibration.js <backend>` (peak
 *   RSS of one step at micro-batch 2 and 10, each in a fresh process; the slope per image divided by the
 *   elements). Measured on the 2-core x86-64 development machine (decoder width 128, mask ratio 0.6), 2026-12-05,
 *   with the lean backward pass (src/train/lean-grads.ts) and spark's TensorFlow ops:
 *                 resnet_mini                 convnext_mini
 *     tensorflow  14.0 (96 px) 12.0 (224 px)   7.8 (96 px) 12.3 (224 px)  B/element
 *     cpu          4.9 (96 px)                 3.4 (96 px)                B/element
 *   and at full size (bench/step-throughput.ts, one mode per process, batch 4 and 8 at 224 px): ResNet-50 12.2,
 *   ConvNeXt-S 9.3 B/element. Backprop keeps about 3 floats per counted element. The factors used are the largest
 *   measured, rounded up with room (16 / 14), so the estimate errs on the side of fitting. (Before the lean
 *   backward pass they were 80 / 68: tfjs kept every activation gradient to the end of the backward pass.)
 * - model state: BYTES_PER_PARAM per trainable parameter (weights, the micro-batch gradient, the accumulated
 *   gradient, two optimizer moments, the update);
 * - input batches: the loader holds whole batches (prefetch + the one being trained) as float32 NHWC.
 *
 * The device is the host for every backend spark runs on (tensorflow = libtensorflow on the CPU, cpu, wasm): its
 * budget is the RSS this process may reach, `rss now + 75 % of the memory available` (other processes grow too: the 85 % first tried was OOM-killed on the shared 24 GB machine) (Linux MemAvailable, bounded
 * by a cgroup limit), or `$SPARK_MEMORY_BUDGET` (e.g. `20G`, `512M`: the peak RSS allowed) when set.
 *
 * `accumulate: auto` takes the largest divisor of batch_size whose estimated peak fits (equal micro-batches keep
 * the averaged gradient exactly the full batch's mean gradient and the loader's batches unchanged); the first step
 * of a run then checks it (train/memory.ts `probeMicroBatch`: the RSS growth of one micro-batch's forward and backward) and steps
 * down when the projection exceeds the budget or the backend reports out-of-memory.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { ExperimentConfig } from '../spec/types.js';
import { activationElementsPerImage, describeEncoder, sparkParamCount, type Family } from './registry.js';

/** Bytes of training memory per activation element counted by the registry (see the calibration above). */
export const CALIBRATION: Record<Family, number> = { resnet: 16, convnext: 14 };
/** Bytes per trainable parameter (weights, two gradients, two optimizer moments, the update). */
export const BYTES_PER_PARAM = 24;
/** RSS of the runtime itself (node + the backend's libraries, before a model), measured: the fixed part of the fit. */
export const RUNTIME_BYTES: Record<string, number> = { tensorflow: 480 * 2 ** 20, cpu: 180 * 2 ** 20, wasm: 180 * 2 ** 20 };
/** Fraction of the available memory a run plans to use. */
export const BUDGET_FRACTION = 0.75;

export interface StepMemory {
  /** Bytes per image of a micro-batch (activations kept for backprop). */
  perImageBytes: number;
  /** Model state: parameters, gradients, optimizer moments. */
  modelBytes: number;
  /** The loader's whole batches (prefetch + 1) plus the step's micro-batch tensors. */
  inputBytes: number;
  /** The runtime's own RSS (node + backend libraries). */
  runtimeBytes: number;
}

/** The memory model of a pre-training step of `config` (pure arithmetic). */
export function estimateStepMemory(config: ExperimentConfig, backend = 'tensorflow'): StepMemory {
  const size = config.data.input_size;
  const family = describeEncoder(config.model.encoder).family;
  const elements = activationElementsPerImage(config.model, size).total;
  const imageBytes = size * size * 3 * 4;
  return {
    perImageBytes: elements * CALIBRATION[family],
    modelBytes: sparkParamCount(config.model, size) * BYTES_PER_PARAM,
    inputBytes: config.train.batch_size * imageBytes * (config.data.prefetch + 2),
    runtimeBytes: RUNTIME_BYTES[backend] ?? RUNTIME_BYTES['tensorflow']!,
  };
}

/** Estimated peak RSS of a step at micro-batch `micro`. */
export function estimatedPeak(m: StepMemory, micro: number): number {
  return m.runtimeBytes + m.modelBytes + m.inputBytes + micro * m.perImageBytes;
}

export interface MemoryBudget {
  /** The peak RSS the run may reach. */
  limitBytes: number;
  /** Where the number comes from, for messages. */
  source: string;
}

/** "20G", "512M", "1.5GiB", "123456" → bytes; null when not a size. */
export function parseBytes(s: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(s);
  if (!m) return null;
  const mult: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
  return Math.floor(Number(m[1]) * mult[m[2]!.toLowerCase()]!);
}

function readNumber(file: string): number | null {
  try {
    const t = readFileSync(file, 'utf8').trim();
    return /^\d+$/.test(t) ? Number(t) : null;
  } catch {
    return null;
  }
}

/** Memory this process could still get: Linux MemAvailable (else os.freemem), bounded by a cgroup v2/v1 limit. */
export function availableMemory(): { bytes: number; source: string } {
  let bytes = os.freemem();
  let source = 'free memory';
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) {
      bytes = Number(m[1]) * 1024;
      source = 'MemAvailable';
    }
  } catch {
    /* not Linux */
  }
  const cg = [
    ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'],
    ['/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.usage_in_bytes'],
  ] as const;
  for (const [limitFile, usageFile] of cg) {
    const limit = readNumber(limitFile);
    const usage = readNumber(usageFile);
    if (limit !== null && usage !== null && limit < 2 ** 60) {
      const left = Math.max(0, limit - usage);
      if (left < bytes) {
        bytes = left;
        source = 'cgroup memory limit';
      }
      break;
    }
  }
  return { bytes, source };
}

/** The wasm backend's tensors live in a 32-bit WebAssembly heap (tfjs-backend-wasm grows it up to this). */
export const WASM_HEAP_BYTES = 4294901760;

/**
 * The budget of this process now: `$SPARK_MEMORY_BUDGET`, else rss + BUDGET_FRACTION × available; on the wasm
 * backend also at most rss + BUDGET_FRACTION × the wasm heap.
 */
export function memoryBudget(env: NodeJS.ProcessEnv = process.env, rss = process.memoryUsage().rss, backend?: string): MemoryBudget {
  const forced = env['SPARK_MEMORY_BUDGET'];
  if (forced) {
    const b = parseBytes(forced);
    if (b !== null) return { limitBytes: b, source: '$SPARK_MEMORY_BUDGET' };
  }
  const a = availableMemory();
  const pct = `${Math.round(BUDGET_FRACTION * 100)} %`;
  if (backend === 'wasm' && WASM_HEAP_BYTES < a.bytes) return { limitBytes: rss + BUDGET_FRACTION * WASM_HEAP_BYTES, source: `${pct} of the 4 GiB wasm heap` };
  return { limitBytes: rss + BUDGET_FRACTION * a.bytes, source: `${pct} of ${a.source}` };
}

/** Divisors of n, largest first. */
export function divisorsDesc(n: number): number[] {
  const out: number[] = [];
  for (let d = n; d >= 1; d--) if (n % d === 0) out.push(d);
  return out;
}

/** The largest divisor of `batch` that is ≤ `fit` (at least 1). */
export function largestDivisorAtMost(batch: number, fit: number): number {
  for (const d of divisorsDesc(batch)) if (d <= fit) return d;
  return 1;
}

export interface BatchPlan {
  /** Images per optimizer step (train.batch_size). */
  batch: number;
  micro: number;
  accumulate: number;
  mode: 'auto' | 'explicit';
  /** Estimated peak RSS at this micro-batch. */
  estimatedPeakBytes: number;
  limitBytes: number;
  budgetSource: string;
  /** Whether the estimate fits the budget (auto: false only when even a micro-batch of 1 does not). */
  fits: boolean;
}

/** Resolve `train.accumulate` (auto or explicit) against a memory model and a budget. */
export function planBatch(batch: number, accumulate: number | 'auto', mem: StepMemory, budget: MemoryBudget): BatchPlan {
  const base = { batch, mode: accumulate === 'auto' ? ('auto' as const) : ('explicit' as const), limitBytes: budget.limitBytes, budgetSource: budget.source };
  let micro: number;
  if (accumulate === 'auto') {
    const fit = Math.floor((budget.limitBytes - estimatedPeak(mem, 0)) / mem.perImageBytes);
    micro = largestDivisorAtMost(batch, fit);
  } else {
    micro = batch / accumulate;
  }
  const peak = estimatedPeak(mem, micro);
  return { ...base, micro, accumulate: batch / micro, estimatedPeakBytes: peak, fits: peak <= budget.limitBytes };
}

/** One line for people: "batch 64 = 8 micro-batches of 8 (accumulate auto; estimated peak 17.1 GiB of 20.3 GiB …)". */
export function describeBatchPlan(p: BatchPlan): string {
  const split = p.accumulate === 1 ? `one micro-batch of ${p.micro}` : `${p.accumulate} micro-batches of ${p.micro}`;
  return (
    `batch ${p.batch} = ${split} (accumulate ${p.mode === 'auto' ? 'auto' : p.accumulate}; estimated peak memory ` +
    `${gib(p.estimatedPeakBytes)} of a ${gib(p.limitBytes)} budget, ${p.budgetSource})`
  );
}

export function gib(b: number): string {
  return b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GiB` : `${Math.round(b / 2 ** 20)} MiB`;
}

/**
 * The first-step check: given the RSS before one micro-batch's forward + backward and the peak after it, project
 * the step's peak (plus `extraBytes`: the accumulated gradient and the other micro-batches' inputs) and return the
 * micro-batch to use: the same when it fits, else the largest divisor of `batch` that the measured growth per
 * image allows (at least 1, always smaller than `micro`).
 */
export function checkMeasuredMicro(o: { batch: number; micro: number; rssBefore: number; peakAfter: number; extraBytes: number; limitBytes: number }): number {
  const growth = Math.max(0, o.peakAfter - o.rssBefore);
  if (o.rssBefore + growth + o.extraBytes <= o.limitBytes) return o.micro;
  const perImage = growth / o.micro;
  const room = o.limitBytes - o.rssBefore - o.extraBytes;
  const fit = perImage > 0 ? Math.floor(room / perImage) : o.micro;
  return largestDivisorAtMost(o.batch, Math.min(o.micro - 1, fit));
}

/** An error the backend raises when it cannot allocate (tfjs-node, wasm, the JS heap). */
export function isOutOfMemory(e: unknown): boolean {
  const m = e instanceof Error ? `${e.name} ${e.message}` : String(e);
  return /out of memory|\bOOM\b|bad_alloc|ResourceExhausted|Cannot allocate|allocation failed|Array buffer allocation|memory access out of bounds/i.test(m);
}

/** The next smaller micro-batch after an out-of-memory error: the largest divisor of batch ≤ micro / 2. */
export function stepDownAfterOom(batch: number, micro: number): number | null {
  if (micro <= 1) return null;
  return largestDivisorAtMost(batch, Math.floor(micro / 2));
}
