/**
 * One unit of decoding work, runnable on the main thread or in a decode worker. A task and its result are plain
 * structured-clone data; the result's pixels travel as a transferable ArrayBuffer.
 */
import { Rng } from '../util/rng.js';
import { decodeEval, decodeTrain } from './transforms.js';
import { syntheticImage, syntheticLabelled } from './synthetic.js';
import { normalizeRgb } from './normalize.js';
import { hasPostCropDraws, postCrop, type AutoAugment } from './augment.js';

export type DecodeTask =
  | {
      kind: 'train';
      path: string;
      size: number;
      scale: [number, number];
      ratio: [number, number];
      hflip: number;
      /** Fine-tuning: TrivialAugmentWide or AutoAugment 'v0' after the flip. */
      autoAugment: AutoAugment;
      /** Fine-tuning: RandomErasing probability after normalisation (0 = none). */
      randomErasing: number;
      /** Augmentation randomness: Rng.from(seed, 'aug', epoch, position). */
      seed: number;
      epoch: number;
      position: number;
    }
  | { kind: 'eval'; path: string; size: number; cropPct: number; interpolation: 'bilinear' | 'bicubic' }
  | {
      kind: 'synthetic';
      seed: number;
      index: number;
      size: number;
      /** Labelled variant with this many classes (0 = unlabelled). */
      numClasses: number;
      /** Flip probability; the draw comes from Rng.from(augSeed, 'aug', epoch, position). */
      hflip: number;
      /** Auto-augmentation after the flip, RandomErasing after normalisation (same Rng). */
      autoAugment: AutoAugment;
      randomErasing: number;
      augSeed: number;
      epoch: number;
      position: number;
    };

export type TaskResult = { ok: true; data: Float32Array } | { ok: false; error: string };

export function augRng(seed: number, epoch: number, position: number): Rng {
  return Rng.from(seed, 'aug', epoch, position);
}

/** Run one task; decoding failures (corrupt, truncated, empty, not an image) become `{ ok: false }`. */
export async function runTask(task: DecodeTask): Promise<TaskResult> {
  try {
    switch (task.kind) {
      case 'train': {
        const r = await decodeTrain(
          task.path,
          { size: task.size, scale: task.scale, ratio: task.ratio, hflip: task.hflip, autoAugment: task.autoAugment, randomErasing: task.randomErasing },
          augRng(task.seed, task.epoch, task.position),
        );
        return { ok: true, data: r.data };
      }
      case 'eval':
        return { ok: true, data: (await decodeEval(task.path, task.size, { cropPct: task.cropPct, interpolation: task.interpolation })).data };
      case 'synthetic': {
        const px = task.numClasses > 0 ? syntheticLabelled(task.seed, task.index, task.size, task.numClasses).pixels : syntheticImage(task.seed, task.index, task.size);
        const post = { autoAugment: task.autoAugment, randomErasing: task.randomErasing };
        if (!hasPostCropDraws(post)) {
          const flip = task.hflip > 0 && augRng(task.augSeed, task.epoch, task.position).float() < task.hflip;
          return { ok: true, data: normalizeRgb(px, task.size, task.size, flip) };
        }
        const rng = augRng(task.augSeed, task.epoch, task.position);
        const flip = task.hflip > 0 && rng.float() < task.hflip;
        return { ok: true, data: postCrop(px, task.size, flip, post, rng).data };
      }
    }
  } catch (e) {
    return { ok: false, error: (e as Error)?.message?.split('\n')[0] ?? String(e) };
  }
}
