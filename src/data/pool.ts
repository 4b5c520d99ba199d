/**
 * A pool of decode workers (worker_threads) with a shared FIFO queue. Each worker holds at most `depth` tasks at a
 * time. Workers are unref'd while idle, so they never keep the process alive, and terminated by `close()`.
 */
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { DecodeTask, TaskResult } from './tasks.js';

interface Job {
  id: number;
  task: DecodeTask;
  resolve: (r: TaskResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  jobs: Map<number, Job>;
}

/**
 * How to start a decode worker: the compiled `decode-worker.js` next to this file, or (dev/tests under tsx, where
 * only the `.ts` exists) a small bootstrap that loads the `.ts` worker with tsx's `tsImport` inside the worker
 * (Node 20 does not apply `--import tsx` from a worker's execArgv).
 */
export function workerScript(): { script: URL | string; eval: boolean } {
  const js = new URL('./decode-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(js))) return { script: js, eval: false };
  const ts = new URL('./decode-worker.ts', import.meta.url).href;
  let api = 'tsx/esm/api';
  try {
    api = import.meta.resolve('tsx/esm/api');
  } catch {
    // resolved from the working directory instead
  }
  const code = `import(${JSON.stringify(api)}).then((m) => m.tsImport(${JSON.stringify(ts)}, ${JSON.stringify(import.meta.url)}));`;
  return { script: code, eval: true };
}

export class DecodePool {
  private slots: Slot[] = [];
  private queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  /** Worker crashes since the last answered task; past 3 the pool gives up (a startup failure would loop). */
  private crashes = 0;
  private broken: Error | null = null;
  /**
   * libvips threads per decode. sharp runs its pipelines on the libuv threadpool, which is one per process and
   * shared by all worker threads (UV_THREADPOOL_SIZE, default 4): at most min(workers, pool size) images decode
   * at once, so each gets cores / that many libvips threads.
   */
  readonly vipsThreads: number;

  constructor(
    readonly size: number,
    private readonly depth = 2,
  ) {
    if (!(size >= 1)) throw new RangeError(`DecodePool needs at least one worker, got ${size}`);
    const uv = Number(process.env['UV_THREADPOOL_SIZE']) || 4;
    this.vipsThreads = Math.max(1, Math.floor(os.availableParallelism() / Math.min(size, uv)));
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const { script, eval: isEval } = workerScript();
    const worker = new Worker(script, { eval: isEval, workerData: { vipsThreads: this.vipsThreads } });
    const slot: Slot = { worker, jobs: new Map() };
    worker.unref();
    worker.on('message', (m: { id: number; ok: boolean; buf?: ArrayBuffer; byteOffset?: number; length?: number; error?: string }) => {
      const job = slot.jobs.get(m.id);
      if (!job) return;
      slot.jobs.delete(m.id);
      this.crashes = 0;
      if (m.ok) job.resolve({ ok: true, data: new Float32Array(m.buf!, m.byteOffset ?? 0, m.length) });
      else job.resolve({ ok: false, error: m.error ?? 'decode failed' });
      this.pump();
    });
    const fail = (err: Error) => {
      const jobs = [...slot.jobs.values()];
      slot.jobs.clear();
      for (const j of jobs) j.reject(err);
      const i = this.slots.indexOf(slot);
      if (i < 0 || this.closed) return;
      if (++this.crashes > 3) {
        this.broken = err;
        for (const j of this.queue) j.reject(err);
        this.queue = [];
        void this.close();
        return;
      }
      this.slots[i] = this.spawn(); // keep the pool size; the failed tasks were rejected
      this.pump();
    };
    worker.on('error', (e) => fail(new Error(`decode worker failed: ${e.message}`)));
    worker.on('exit', (code) => {
      if (!this.closed && slot.jobs.size > 0) fail(new Error(`decode worker exited with code ${code}`));
    });
    return slot;
  }

  /** Queue a task; `front` puts it ahead of queued work (replacements for skipped files). */
  run(task: DecodeTask, front = false): Promise<TaskResult> {
    if (this.closed) return Promise.reject(this.broken ?? new Error('data loader is closed'));
    return new Promise<TaskResult>((resolve, reject) => {
      const job: Job = { id: this.nextId++, task, resolve, reject };
      if (front) this.queue.unshift(job);
      else this.queue.push(job);
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let best: Slot | null = null;
      for (const s of this.slots) if (s.jobs.size < this.depth && (!best || s.jobs.size < best.jobs.size)) best = s;
      if (!best) break;
      const job = this.queue.shift()!;
      best.jobs.set(job.id, job);
      best.worker.postMessage({ id: job.id, task: job.task });
    }
    // Busy workers keep the event loop alive (someone awaits their results); idle ones do not.
    for (const s of this.slots) {
      if (s.jobs.size > 0) s.worker.ref();
      else s.worker.unref();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new Error('data loader is closed');
    for (const j of this.queue) j.reject(err);
    this.queue = [];
    const slots = this.slots;
    this.slots = [];
    for (const s of slots) {
      for (const j of s.jobs.values()) j.reject(err);
      s.jobs.clear();
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}
