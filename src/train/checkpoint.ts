/**
 * The run folder and checkpoints.
 *
 * A run lives in `<output.dir>/<name>/<run-id>/` (run id `YYYYMMDD-HHMMSS-xxxx`, UTC) and holds:
 *
 *   config.yaml                       the resolved experiment configuration
 *   run.json                          identity: run id, name, spec path, MLflow run id, sweep membership
 *   checkpoint/model.safetensors      params + buffers by reference name, TF layouts
 *   checkpoint/optimizer.safetensors  optimizer moments (`<param>.exp_avg`, `<param>.exp_avg_sq`)
 *   checkpoint/state.json             step, epoch, optimizer step counters, seed, data position, timestamps, losses
 *   checkpoint/ema.safetensors        fine-tuning runs: the EMA of the weights (same names as model.safetensors)
 *   encoder.safetensors               encoder weights only (`sparse_encoder.sp_cnn.` stripped), written at the end
 *
 * A checkpoint is written as a whole: into `checkpoint.tmp-XXXX/` (state.json last, so its presence marks a complete
 * folder), then the previous `checkpoint/` is renamed aside, the new one renamed in, and the old one removed. A crash
 * at any point leaves at least one complete checkpoint folder, which `RunFolder.open` / `loadCheckpoint` recover.
 * `RunFolder` owns every write of a run.
 */
import { promises as fsp, existsSync, readFileSync, statSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import YAML from 'yaml';
import { atomicWriteFile } from '../util/atomic.js';
import { encodeSafetensors, readSafetensors, type SafeDType, type SafeTensor } from '../util/safetensors.js';
import { UsageError } from '../util/errors.js';
import type { ExperimentConfig } from '../spec/types.js';
import { commandHint } from '../util/hint.js';

export const ENCODER_PREFIX = 'sparse_encoder.sp_cnn.';

/** What `checkpoint/state.json` holds. */
export interface TrainState {
  format: 'spark-checkpoint/1';
  /** Optimizer steps completed (the next step to run is step + 1, i.e. iteration `step`). */
  step: number;
  /** Epochs completed (floor(step / stepsPerEpoch)): a count, not the 1-based epoch number events and the console show. */
  epoch: number;
  totalSteps: number;
  stepsPerEpoch: number;
  seed: number;
  /** The loader position: the next global iteration and where it falls in its epoch. */
  dataPosition: { iteration: number; epoch: number; indexInEpoch: number };
  optimizer: { kind: 'lamb' | 'adamw'; groupSteps: Record<string, number> };
  /** Losses of the steps of the current (unfinished) epoch, so a resumed epoch summary is exact. */
  epochLosses: number[];
  /** The last losses (up to 200) as [step, loss]. */
  lossTail: Array<[number, number]>;
  minLoss: number | null;
  lastLoss: number | null;
  startedAt: string;
  savedAt: string;
  /** Wall seconds spent training, summed over resumed segments. */
  trainSeconds: number;
  /** Wall seconds of the run's processes up to this checkpoint (set-up included, stopped time excluded). */
  runSeconds?: number;
  /** Wall seconds spent so far in the current (unfinished) epoch, so a resumed epoch's `epoch_seconds` is whole. */
  epochSeconds?: number;
  /** The displayed loss EMA (uncorrected average and count, events.ts nextLossEma), continued on resume. */
  lossEma?: { raw: number; count: number };
  backend: string;
  encoder: string;
  /** Task-specific state (fine-tuning: evaluation results so far). */
  taskState?: Record<string, unknown>;
}

/** The state of a run before its first step (pre-training and fine-tuning). */
export function freshTrainState(o: {
  seed: number;
  totalSteps: number;
  stepsPerEpoch: number;
  optimizer: 'lamb' | 'adamw';
  backend: string;
  encoder: string;
  taskState?: Record<string, unknown>;
}): TrainState {
  const now = new Date().toISOString();
  return {
    format: 'spark-checkpoint/1',
    step: 0,
    epoch: 0,
    totalSteps: o.totalSteps,
    stepsPerEpoch: o.stepsPerEpoch,
    seed: o.seed,
    dataPosition: { iteration: 0, epoch: 0, indexInEpoch: 0 },
    optimizer: { kind: o.optimizer, groupSteps: {} },
    epochLosses: [],
    lossTail: [],
    minLoss: null,
    lastLoss: null,
    startedAt: now,
    savedAt: now,
    trainSeconds: 0,
    backend: o.backend,
    encoder: o.encoder,
    ...(o.taskState ? { taskState: o.taskState } : {}),
  };
}

/**
 * The command that resumes a run folder (`npx spark run --resume …` / `npx spark finetune --resume …`), as it works
 * pasted from the working directory (util/hint.ts).
 */
export function resumeCommandFor(command: 'run' | 'finetune', dir: string): string {
  return commandHint([command, '--resume', { path: dir }]);
}

export interface RunInfo {
  runId: string;
  name: string;
  specPath: string | null;
  createdAt: string;
  mlflowRunId?: string;
  mlflowExperimentId?: string;
  sweep?: { sweepDir: string; trial: number; trialName: string; params: Record<string, unknown> };
  [key: string]: unknown;
}

/** A new run id: `YYYYMMDD-HHMMSS-xxxx` (UTC time + 4 random hex digits). */
export function newRunId(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const d = `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}`;
  const t = `${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
  return `${d}-${t}-${randomBytes(2).toString('hex')}`;
}

function tfDtypeToSafe(d: tf.DataType): SafeDType {
  if (d === 'float32') return 'F32';
  if (d === 'int32') return 'I32';
  if (d === 'bool') return 'BOOL';
  throw new Error(`checkpoint: unsupported dtype ${d}`);
}

/** Read a variable's values as a SafeTensor (a copy). */
export async function tensorToSafe(t: tf.Tensor): Promise<SafeTensor> {
  const vals = await t.data();
  const dtype = tfDtypeToSafe(t.dtype);
  const copy = dtype === 'BOOL' ? Uint8Array.from(vals as Uint8Array) : (vals as Float32Array | Int32Array).slice();
  return { dtype, shape: t.shape.slice(), data: new Uint8Array(copy.buffer, copy.byteOffset, copy.byteLength) };
}

/** A SafeTensor as a tf tensor (F32, I32 and I64 → int32, F64 → float32). */
export function safeToTensor(t: SafeTensor): tf.Tensor {
  const u8 = t.data.slice();
  switch (t.dtype) {
    case 'F32':
      return tf.tensor(new Float32Array(u8.buffer), t.shape, 'float32');
    case 'F64':
      return tf.tensor(Float32Array.from(new Float64Array(u8.buffer)), t.shape, 'float32');
    case 'I32':
      return tf.tensor(new Int32Array(u8.buffer), t.shape, 'int32');
    case 'I64': {
      const b = new BigInt64Array(u8.buffer);
      return tf.tensor(Int32Array.from(b, (x) => Number(x)), t.shape, 'int32');
    }
    default:
      throw new Error(`checkpoint: unsupported safetensors dtype ${t.dtype}`);
  }
}

/** Assign saved values to variables by name; every variable must be present with the same shape. */
export function assignVariables(vars: Map<string, tf.Variable>, saved: Map<string, SafeTensor>, what: string): void {
  for (const [name, v] of vars) {
    const s = saved.get(name);
    if (!s) throw new UsageError(`${what}: missing tensor ${name}`);
    if (s.shape.length !== v.shape.length || s.shape.some((d, i) => d !== v.shape[i])) {
      throw new UsageError(`${what}: ${name} has shape ${JSON.stringify(s.shape)}, the model expects ${JSON.stringify(v.shape)}`);
    }
  }
  for (const [name, v] of vars) {
    tf.tidy(() => {
      let t = safeToTensor(saved.get(name)!);
      if (t.dtype !== v.dtype) t = tf.cast(t, v.dtype);
      v.assign(t);
    });
  }
}

export interface CheckpointPayload {
  params: Map<string, tf.Variable>;
  buffers: Map<string, tf.Variable>;
  optimizer: { tensors: Map<string, SafeTensor> };
  state: TrainState;
  /** More safetensors files of the same checkpoint by file name (e.g. 'ema.safetensors'), written before state.json. */
  extra?: Map<string, { tensors: Map<string, SafeTensor>; metadata?: Record<string, string> }>;
}

const COMPLETE_MARK = 'state.json';

export class RunFolder {
  private constructor(
    readonly dir: string,
    readonly runId: string,
  ) {}

  /** Create `<outputDir>/<name>/<run-id>/` (a fresh id unless one is given). */
  static async create(outputDir: string, name: string, runId = newRunId()): Promise<RunFolder> {
    let id = runId;
    let dir = path.resolve(outputDir, name, id);
    for (let i = 0; existsSync(dir); i++) {
      id = `${runId}-${i + 2}`;
      dir = path.resolve(outputDir, name, id);
    }
    await fsp.mkdir(dir, { recursive: true });
    return new RunFolder(dir, id);
  }

  /** Use exactly this folder (sweep trials): created when missing. */
  static async openOrCreate(dir: string): Promise<RunFolder> {
    const abs = path.resolve(dir);
    await fsp.mkdir(abs, { recursive: true });
    await recoverCheckpoint(abs);
    return new RunFolder(abs, path.basename(abs));
  }

  /** Open an existing run folder (for resume); recovers a checkpoint left mid-swap. */
  static async open(dir: string): Promise<RunFolder> {
    const abs = path.resolve(dir);
    if (!existsSync(path.join(abs, 'config.yaml'))) {
      throw new UsageError(`${dir}: not a run folder (no config.yaml)`);
    }
    await recoverCheckpoint(abs);
    return new RunFolder(abs, path.basename(abs));
  }

  path(...rel: string[]): string {
    return path.join(this.dir, ...rel);
  }

  get checkpointDir(): string {
    return this.path('checkpoint');
  }

  hasCheckpoint(): boolean {
    return existsSync(path.join(this.checkpointDir, COMPLETE_MARK));
  }

  async writeConfig(yamlText: string): Promise<void> {
    await atomicWriteFile(this.path('config.yaml'), yamlText.endsWith('\n') ? yamlText : yamlText + '\n');
  }

  async writeJson(rel: string, value: unknown): Promise<void> {
    await atomicWriteFile(this.path(rel), JSON.stringify(value, null, 2) + '\n');
  }

  async writeFile(rel: string, data: string | Uint8Array): Promise<void> {
    await atomicWriteFile(this.path(rel), data);
  }

  readRunInfo(): RunInfo | null {
    const f = this.path('run.json');
    if (!existsSync(f)) return null;
    return JSON.parse(readFileSync(f, 'utf8')) as RunInfo;
  }

  async updateRunInfo(patch: Partial<RunInfo>): Promise<RunInfo> {
    const cur = this.readRunInfo() ?? ({ runId: this.runId, name: '', specPath: null, createdAt: new Date().toISOString() } as RunInfo);
    const next = { ...cur, ...patch } as RunInfo;
    await this.writeJson('run.json', next);
    return next;
  }

  /** Write a complete checkpoint (all-or-nothing); returns the checkpoint folder. */
  async writeCheckpoint(c: CheckpointPayload): Promise<string> {
    const model = new Map<string, SafeTensor>();
    for (const [n, v] of c.params) model.set(n, await tensorToSafe(v));
    for (const [n, v] of c.buffers) model.set(n, await tensorToSafe(v));
    const meta = {
      format: 'spark-checkpoint/1',
      step: String(c.state.step),
      encoder: c.state.encoder,
      buffers: JSON.stringify([...c.buffers.keys()]),
    };
    const tmp = this.path(`checkpoint.tmp-${randomBytes(3).toString('hex')}`);
    await fsp.mkdir(tmp, { recursive: true });
    try {
      await atomicWriteFile(path.join(tmp, 'model.safetensors'), encodeSafetensors(model, meta));
      await atomicWriteFile(path.join(tmp, 'optimizer.safetensors'), encodeSafetensors(c.optimizer.tensors, { format: 'spark-optimizer/1', kind: c.state.optimizer.kind }));
      for (const [file, x] of c.extra ?? []) {
        if (path.basename(file) !== file || file === COMPLETE_MARK) throw new Error(`checkpoint: bad extra file name ${file}`);
        await atomicWriteFile(path.join(tmp, file), encodeSafetensors(x.tensors, x.metadata ?? {}));
      }
      await atomicWriteFile(path.join(tmp, COMPLETE_MARK), JSON.stringify(c.state, null, 2) + '\n');
      const final = this.checkpointDir;
      if (existsSync(final)) {
        const old = this.path(`checkpoint.old-${randomBytes(3).toString('hex')}`);
        await fsp.rename(final, old);
        await fsp.rename(tmp, final);
        await fsp.rm(old, { recursive: true, force: true });
      } else {
        await fsp.rename(tmp, final);
      }
      return final;
    } catch (e) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** `encoder.safetensors`: the encoder's params and buffers, `sparse_encoder.sp_cnn.` stripped. */
  async writeEncoder(params: Map<string, tf.Variable>, buffers: Map<string, tf.Variable>, encoder: string): Promise<string> {
    const out = new Map<string, SafeTensor>();
    for (const m of [params, buffers]) {
      for (const [n, v] of m) if (n.startsWith(ENCODER_PREFIX)) out.set(n.slice(ENCODER_PREFIX.length), await tensorToSafe(v));
    }
    const file = this.path('encoder.safetensors');
    await atomicWriteFile(file, encodeSafetensors(out, { format: 'spark-encoder/1', encoder, layout: 'tf' }));
    return file;
  }
}

/** If `checkpoint/` is missing but a complete `checkpoint.old-*` / `checkpoint.tmp-*` exists, move the newest in. */
async function recoverCheckpoint(runDir: string): Promise<void> {
  const final = path.join(runDir, 'checkpoint');
  const leftovers = readdirSync(runDir).filter((n) => n.startsWith('checkpoint.old-') || n.startsWith('checkpoint.tmp-'));
  if (!existsSync(path.join(final, COMPLETE_MARK))) {
    let best: { dir: string; step: number } | null = null;
    for (const n of leftovers) {
      const d = path.join(runDir, n);
      const sf = path.join(d, COMPLETE_MARK);
      if (!existsSync(sf)) continue;
      try {
        const st = JSON.parse(readFileSync(sf, 'utf8')) as TrainState;
        if (!best || st.step > best.step) best = { dir: d, step: st.step };
      } catch {
        /* incomplete */
      }
    }
    if (best) {
      if (existsSync(final)) await fsp.rm(final, { recursive: true, force: true });
      await fsp.rename(best.dir, final);
    }
  }
  for (const n of readdirSync(runDir)) {
    if (n.startsWith('checkpoint.old-') || n.startsWith('checkpoint.tmp-')) await fsp.rm(path.join(runDir, n), { recursive: true, force: true });
  }
}

export interface LoadedCheckpoint {
  /** The run's resolved configuration (config.yaml), or null when the file has no run folder around it. */
  config: ExperimentConfig | null;
  step: number;
  epoch: number;
  /** Trainable parameters by reference name (TF layouts). */
  params: Map<string, SafeTensor>;
  /** BN running stats and num_batches_tracked by reference name. */
  buffers: Map<string, SafeTensor>;
  /** The run folder, when there is one. */
  runDir: string | null;
  /** The weights file read. */
  file: string;
  /** checkpoint/state.json, when present. */
  state: TrainState | null;
  metadata: Record<string, string>;
}

const BUFFER_RE = /(running_mean|running_var|num_batches_tracked)$/;

function findRunDir(start: string): string | null {
  let d = start;
  for (let i = 0; i < 3; i++) {
    if (existsSync(path.join(d, 'config.yaml'))) return d;
    d = path.dirname(d);
  }
  return null;
}

/**
 * A folder that holds runs rather than being one (`<output.dir>/<name>`, what `spark run` creates one run folder
 * per start in) → its newest run folder with a checkpoint (run ids start with the start time, so the newest sorts
 * last). Any other path is returned unchanged.
 */
export function resolveRunPath(p: string): string {
  const abs = path.resolve(p);
  if (!existsSync(abs) || !statSync(abs).isDirectory()) return p;
  if (['config.yaml', 'model.safetensors', 'encoder.safetensors'].some((f) => existsSync(path.join(abs, f)))) return p;
  const runs = readdirSync(abs, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(path.join(abs, d.name, 'config.yaml')) && existsSync(path.join(abs, d.name, 'checkpoint', 'model.safetensors')))
    .map((d) => d.name)
    .sort();
  return runs.length ? path.join(p, runs[runs.length - 1]!) : p;
}

/**
 * Load a checkpoint's weights from a run folder, a checkpoint folder, or a safetensors file
 * (`checkpoint/model.safetensors` or `encoder.safetensors`); a folder of runs means its newest (`resolveRunPath`).
 */
export async function loadCheckpoint(runDirOrFile: string): Promise<LoadedCheckpoint> {
  const p = path.resolve(resolveRunPath(runDirOrFile));
  if (!existsSync(p)) throw new UsageError(`${runDirOrFile}: no such run folder or checkpoint file`);
  let file: string;
  let runDir: string | null;
  if (statSync(p).isDirectory()) {
    if (existsSync(path.join(p, 'model.safetensors'))) {
      file = path.join(p, 'model.safetensors');
      runDir = findRunDir(p);
    } else {
      if (existsSync(path.join(p, 'config.yaml'))) await recoverCheckpoint(p);
      file = path.join(p, 'checkpoint', 'model.safetensors');
      if (!existsSync(file)) {
        if (existsSync(path.join(p, 'encoder.safetensors'))) file = path.join(p, 'encoder.safetensors');
        else throw new UsageError(`${runDirOrFile}: no checkpoint in this folder (expected checkpoint/model.safetensors)`);
      }
      runDir = p;
    }
  } else {
    file = p;
    runDir = findRunDir(path.dirname(p));
  }
  let read;
  try {
    read = await readSafetensors(file);
  } catch (e) {
    throw new UsageError(`${file}: not a readable safetensors file (${(e as Error).message})`);
  }
  const { tensors, metadata } = read;
  let bufferNames: Set<string> | null = null;
  if (metadata['buffers']) {
    try {
      bufferNames = new Set(JSON.parse(metadata['buffers']) as string[]);
    } catch {
      bufferNames = null;
    }
  }
  const params = new Map<string, SafeTensor>();
  const buffers = new Map<string, SafeTensor>();
  for (const [n, t] of tensors) {
    const isBuf = bufferNames ? bufferNames.has(n) : BUFFER_RE.test(n);
    (isBuf ? buffers : params).set(n, t);
  }
  let state: TrainState | null = null;
  const stateFile = path.join(path.dirname(file), 'state.json');
  if (path.basename(file) === 'model.safetensors' && existsSync(stateFile)) {
    state = JSON.parse(readFileSync(stateFile, 'utf8')) as TrainState;
  }
  let config: ExperimentConfig | null = null;
  if (runDir) config = YAML.parse(readFileSync(path.join(runDir, 'config.yaml'), 'utf8')) as ExperimentConfig;
  return {
    config,
    step: state?.step ?? Number(metadata['step'] ?? 0),
    epoch: state?.epoch ?? 0,
    params,
    buffers,
    runDir,
    file,
    state,
    metadata,
  };
}

/** Another safetensors file of a run folder's checkpoint (e.g. 'ema.safetensors'), or null when it has none. */
export async function loadCheckpointExtra(runDir: string, file: string): Promise<Map<string, SafeTensor> | null> {
  const f = path.join(runDir, 'checkpoint', file);
  if (!existsSync(f)) return null;
  return (await readSafetensors(f)).tensors;
}

/** The optimizer state of a run folder's checkpoint. */
export async function loadOptimizerState(runDir: string): Promise<Map<string, SafeTensor>> {
  const f = path.join(runDir, 'checkpoint', 'optimizer.safetensors');
  if (!existsSync(f)) throw new UsageError(`${runDir}: checkpoint has no optimizer.safetensors`);
  return (await readSafetensors(f)).tensors;
}
