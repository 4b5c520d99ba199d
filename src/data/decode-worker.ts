/**
 * Decode worker (worker_threads): receives `{ id, task }`, answers `{ id, result }` with the pixels' ArrayBuffer
 * transferred. Spawned by `DecodePool` (pool.ts); compiled to decode-worker.js next to it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import sharp from 'sharp';
import { runTask, type DecodeTask } from './tasks.js';

// libvips threads per image (process-wide setting): the pool computes it from the cores, the worker count and the
// libuv threadpool size (sharp's pipelines of every worker thread share that one pool).
const vipsThreads = Number((workerData as { vipsThreads?: number } | null)?.vipsThreads ?? 1);
sharp.concurrency(Math.max(1, Math.floor(vipsThreads)));
sharp.cache(false);

if (!parentPort) throw new Error('decode-worker must run in a worker thread');
const port = parentPort;
port.on('message', (msg: { id: number; task: DecodeTask }) => {
  void runTask(msg.task).then((result) => {
    if (result.ok) {
      const buf = result.data.buffer as ArrayBuffer;
      port.postMessage({ id: msg.id, ok: true, buf, byteOffset: result.data.byteOffset, length: result.data.length }, [buf]);
    } else {
      port.postMessage({ id: msg.id, ok: false, error: result.error });
    }
  });
});
