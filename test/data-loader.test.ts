import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtemp, mkdir, rm, writeFile, readFile, symlink } from 'node:fs/promises';
import type { DataConfig } from '../src/spec/types.js';
import { DataError } from '../src/util/errors.js';
import { createLoader, countImages, scanImageFolder, syntheticImage, type Batch, type Loader } from '../src/data/index.js';

let tmp = '';

function cfg(over: Partial<DataConfig> = {}): DataConfig {
  return {
    source: 'imagefolder',
    root: null,
    val_root: null,
    input_size: 32,
    crop_scale: [0.67, 1],
    crop_ratio: [3 / 4, 4 / 3],
    hflip: 0.5,
    workers: 0,
    prefetch: 2,
    synthetic_size: 64,
    ...over,
  };
}

async function writeImage(file: string, index: number, w: number, h: number): Promise<void> {
  const S = Math.max(w, h);
  const px = Buffer.from(syntheticImage(11, index, S));
  let img = sharp(px, { raw: { width: S, height: S, channels: 3 } }).extract({ left: 0, top: 0, width: w, height: h });
  const ext = path.extname(file).toLowerCase();
  img = ext === '.png' ? img.png() : ext === '.webp' ? img.webp({ quality: 90 }) : img.jpeg({ quality: 90 });
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, await img.toBuffer());
}

/** root/cat (6 images), root/dog (5 images, one via a symlinked folder): 11 images, mixed formats and cases. */
async function makeFolder(root: string): Promise<void> {
  const names = ['a.jpg', 'b.PNG', 'c.jpeg', 'd.webp', 'e.JPG', 'f.png'];
  for (let i = 0; i < names.length; i++) await writeImage(path.join(root, 'cat', names[i]!), i, 40 + 4 * i, 30 + 3 * i);
  for (let i = 0; i < 3; i++) await writeImage(path.join(root, 'dog', `d${i}.JPEG`), 10 + i, 50, 36);
  const outside = path.join(tmp, 'outside-dog');
  for (let i = 0; i < 2; i++) await writeImage(path.join(outside, `x${i}.png`), 20 + i, 36, 48);
  await symlink(outside, path.join(root, 'dog', 'linked'));
  await writeFile(path.join(root, 'cat', 'notes.txt'), 'not an image');
}

async function batches(loader: Loader, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let i = 0; i < n; i++) out.push(await loader.next());
  return out;
}

function sameBatch(a: Batch, b: Batch, msg = ''): void {
  assert.equal(a.step, b.step, msg);
  assert.deepEqual(a.indices, b.indices, `indices ${msg}`);
  assert.ok(Buffer.from(a.images.buffer).equals(Buffer.from(b.images.buffer)), `pixels of step ${a.step} ${msg}`);
}

let root = '';
before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'spark-data-'));
  root = path.join(tmp, 'folder');
  await makeFolder(root);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('imagefolder scan: sorted classes, case-insensitive extensions, symlinks followed, non-images ignored', () => {
  const f = scanImageFolder(root);
  assert.deepEqual(f.classes, ['cat', 'dog']);
  assert.equal(f.files.length, 11);
  assert.equal(countImages(root), 11);
  assert.deepEqual(f.files.slice(0, 6), ['cat/a.jpg', 'cat/b.PNG', 'cat/c.jpeg', 'cat/d.webp', 'cat/e.JPG', 'cat/f.png']);
  assert.deepEqual(f.files.slice(6), ['dog/d0.JPEG', 'dog/d1.JPEG', 'dog/d2.JPEG', 'dog/linked/x0.png', 'dog/linked/x1.png']);
  assert.deepEqual([...f.labels!], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
  const flat = scanImageFolder(path.join(root, 'cat'));
  assert.equal(flat.classes, null);
  assert.equal(flat.labels, null);
  assert.equal(flat.files.length, 6);
});

test('missing and empty folders are DataErrors naming the path', async () => {
  const missing = path.join(tmp, 'nope');
  await assert.rejects(createLoader(cfg({ root: missing }), { batchSize: 2, seed: 0, augment: 'pretrain' }), (e: unknown) => {
    assert.ok(e instanceof DataError);
    assert.equal(e.exitCode, 2);
    assert.match(e.message, /data\.root '.*nope' does not exist/);
    return true;
  });
  const empty = path.join(tmp, 'empty');
  await mkdir(path.join(empty, 'sub'), { recursive: true });
  await writeFile(path.join(empty, 'readme.txt'), 'x');
  await assert.rejects(createLoader(cfg({ root: empty }), { batchSize: 2, seed: 0, augment: 'pretrain' }), (e: unknown) => {
    assert.ok(e instanceof DataError);
    assert.match(e.message, /data\.root '.*empty' has no images \(looked for \.jpg\/\.jpeg\/\.png\/\.webp in /);
    return true;
  });
  assert.throws(() => countImages(empty), DataError);
  await assert.rejects(createLoader(cfg({ root: null }), { batchSize: 2, seed: 0, augment: 'pretrain' }), DataError);
});

test('batches are a pure function of (seed, step): two loaders agree, seek and startStep resume exactly', async () => {
  const c = cfg({ root });
  const a = await createLoader(c, { batchSize: 4, seed: 42, augment: 'pretrain' });
  const b = await createLoader(c, { batchSize: 4, seed: 42, augment: 'pretrain' });
  assert.equal(a.numImages, 11);
  assert.equal(a.stepsPerEpoch, 3);
  const A = await batches(a, 7);
  const B = await batches(b, 7);
  for (let i = 0; i < 7; i++) sameBatch(A[i]!, B[i]!);
  assert.deepEqual(A.map((x) => x.epoch), [0, 0, 0, 1, 1, 1, 2]);
  for (const x of A) {
    assert.equal(x.images.length, 4 * 32 * 32 * 3);
    assert.equal(x.batchSize, 4);
    assert.equal(x.size, 32);
    assert.ok(x.images.every(Number.isFinite));
  }
  // seek back (resume inside the same process) and a fresh loader started at step 4
  a.seek(2);
  sameBatch(await a.next(), A[2]!, 'after seek');
  sameBatch(await a.next(), A[3]!, 'after seek');
  const r = await createLoader(c, { batchSize: 4, seed: 42, augment: 'pretrain', startStep: 4 });
  sameBatch(await r.next(), A[4]!, 'startStep');
  sameBatch(await r.next(), A[5]!, 'startStep');
  // a different seed gives different batches
  const d = await createLoader(c, { batchSize: 4, seed: 43, augment: 'pretrain' });
  const D = await batches(d, 3);
  assert.ok(D.some((x, i) => x.indices.join() !== A[i]!.indices.join()) || !Buffer.from(D[0]!.images.buffer).equals(Buffer.from(A[0]!.images.buffer)));
  // the same image in two epochs gets a different augmentation
  const e0 = A[0]!;
  const pos1 = A.slice(3, 6).flatMap((x) => x.indices).indexOf(e0.indices[0]!);
  const other = A[3 + Math.floor(pos1 / 4)]!;
  const per = 32 * 32 * 3;
  const k = pos1 % 4;
  assert.ok(!Buffer.from(e0.images.buffer, 0, per * 4).equals(Buffer.from(other.images.buffer, k * per * 4, per * 4)), 'epoch 1 re-augments');
  await Promise.all([a.close(), b.close(), r.close(), d.close()]);
});

test('each epoch visits every image; the last batch is filled by wrapping to the start of the same epoch order', async () => {
  const l = await createLoader(cfg({ root }), { batchSize: 4, seed: 5, augment: 'pretrain' });
  const X = await batches(l, 6);
  for (const ep of [0, 1]) {
    const b = X.slice(ep * 3, ep * 3 + 3);
    const all = b.flatMap((x) => x.indices);
    assert.equal(all.length, 12);
    assert.deepEqual([...new Set(all.slice(0, 11))].sort((p, q) => p - q), [...Array(11).keys()], `epoch ${ep} is a permutation`);
    assert.equal(all[11], all[0], 'wrap-around fill = first index of the epoch order');
    assert.deepEqual(b.map((x) => x.fresh), [4, 4, 3]);
  }
  assert.notDeepEqual(X.slice(0, 3).flatMap((x) => x.indices), X.slice(3, 6).flatMap((x) => x.indices), 'new permutation per epoch');
  await l.close();
});

test('workers = 2 produce exactly the batches of main-thread decoding', async () => {
  const w0 = await createLoader(cfg({ root, workers: 0 }), { batchSize: 4, seed: 8, augment: 'pretrain' });
  const w2 = await createLoader(cfg({ root, workers: 2, prefetch: 1 }), { batchSize: 4, seed: 8, augment: 'pretrain' });
  const A = await batches(w0, 4);
  const B = await batches(w2, 4);
  for (let i = 0; i < 4; i++) sameBatch(A[i]!, B[i]!, 'workers');
  await w2.close();
  await assert.rejects(w2.next(), /closed/);
  await w0.close();
  // the fine-tuning transform (crop 0.08-1, flip, TrivialAugmentWide, RandomErasing): the same property, and the
  // augmentation really runs in the decode tasks (same indices, other pixels than without it)
  const ft = { batchSize: 4, seed: 8, augment: 'finetune' as const, withLabels: true, autoAugment: 'trivial_augment_wide' as const, randomErasing: 0.25 };
  const f0 = await createLoader(cfg({ root, workers: 0 }), ft);
  const f2 = await createLoader(cfg({ root, workers: 2, prefetch: 1 }), ft);
  const plain = await createLoader(cfg({ root, workers: 0 }), { ...ft, autoAugment: null, randomErasing: 0 });
  const F0 = await batches(f0, 4);
  const F2 = await batches(f2, 4);
  const P = await batches(plain, 4);
  for (let i = 0; i < 4; i++) {
    sameBatch(F0[i]!, F2[i]!, 'workers, TrivialAugmentWide + RandomErasing');
    assert.deepEqual(F0[i]!.indices, P[i]!.indices);
    assert.deepEqual(F0[i]!.labels, P[i]!.labels);
  }
  const per = 32 * 32 * 3;
  let changed = 0;
  for (let i = 0; i < 4; i++) {
    for (let k = 0; k < 4; k++) {
      if (!Buffer.from(F0[i]!.images.buffer, k * per * 4, per * 4).equals(Buffer.from(P[i]!.images.buffer, k * per * 4, per * 4))) changed++;
    }
  }
  assert.ok(changed >= 10, `the augmentations changed ${changed} of 16 images (Identity and zero bins leave some as they are)`);
  await Promise.all([f0.close(), f2.close(), plain.close()]);
});

test('fine-tuning loader: AutoAugment v0 decodes byte for byte the same in 2 workers as on the main thread; drop-last epochs', async () => {
  const ft = { batchSize: 4, seed: 6, augment: 'finetune' as const, withLabels: true, autoAugment: 'auto_augment_v0' as const, randomErasing: 0.25 };
  const a0 = await createLoader(cfg({ root, workers: 0 }), ft);
  const a2 = await createLoader(cfg({ root, workers: 2, prefetch: 1 }), ft);
  const plain = await createLoader(cfg({ root, workers: 0 }), { ...ft, autoAugment: null, randomErasing: 0 });
  assert.equal(a0.stepsPerEpoch, 2, 'drop-last: floor(11 / 4)');
  const A0 = await batches(a0, 4);
  const A2 = await batches(a2, 4);
  const P = await batches(plain, 4);
  const per = 32 * 32 * 3;
  let changed = 0;
  for (let i = 0; i < 4; i++) {
    sameBatch(A0[i]!, A2[i]!, 'workers, AutoAugment v0 + RandomErasing');
    assert.deepEqual(A0[i]!.indices, P[i]!.indices);
    for (let k = 0; k < 4; k++) if (!Buffer.from(A0[i]!.images.buffer, k * per * 4, per * 4).equals(Buffer.from(P[i]!.images.buffer, k * per * 4, per * 4))) changed++;
  }
  assert.ok(changed >= 8, `AutoAugment changed ${changed} of 16 images (ops run with their probabilities)`);
  // each epoch: 8 distinct images of the 11, in 2 full batches, none of them wrap-around fill
  for (const ep of [0, 1]) {
    const b = A0.slice(ep * 2, ep * 2 + 2);
    assert.deepEqual(b.map((x) => x.epoch), [ep, ep]);
    assert.deepEqual(b.map((x) => x.fresh), [4, 4]);
    assert.equal(new Set(b.flatMap((x) => x.indices)).size, 8);
  }
  assert.notDeepEqual(A0.slice(0, 2).flatMap((x) => x.indices), A0.slice(2, 4).flatMap((x) => x.indices), 'a new permutation per epoch');
  await Promise.all([a0.close(), a2.close(), plain.close()]);
  // dropLast false: the pre-training sampler's ceil(N / B) epochs with wrap-around fill (how older fine-tuning runs resume)
  const wrap = await createLoader(cfg({ root }), { ...ft, dropLast: false });
  assert.equal(wrap.stepsPerEpoch, 3);
  const W = await batches(wrap, 3);
  assert.deepEqual(W.map((x) => x.fresh), [4, 4, 3]);
  assert.deepEqual(W.slice(0, 2).flatMap((x) => x.indices), A0.slice(0, 2).flatMap((x) => x.indices), 'the same epoch permutation');
  await wrap.close();
  // pre-training keeps ceil(N / B); fewer images than a batch: one fine-tuning step per epoch
  const pre = await createLoader(cfg({ root }), { batchSize: 4, seed: 6, augment: 'pretrain' });
  assert.equal(pre.stepsPerEpoch, 3);
  const big = await createLoader(cfg({ root }), { ...ft, autoAugment: null, batchSize: 16 });
  assert.equal(big.stepsPerEpoch, 1);
  const g = await big.next();
  assert.equal(g.fresh, 11);
  assert.equal(new Set(g.indices).size, 11, 'every image once, then 5 wrap-around');
  await Promise.all([pre.close(), big.close()]);
});

test('repeated augmentation: the copies of an image get their own augmentation draws; workers agree; eval ignores it', async () => {
  const opts = { batchSize: 6, seed: 4, augment: 'finetune' as const, withLabels: true, autoAugment: 'trivial_augment_wide' as const, randomErasing: 0.25, repeats: 3 };
  const a = await createLoader(cfg({ root, workers: 0 }), opts);
  const b = await createLoader(cfg({ root, workers: 2, prefetch: 1 }), opts);
  assert.equal(a.stepsPerEpoch, 1, 'floor(11 / 6)');
  const A = await batches(a, 3);
  const B = await batches(b, 3);
  const per = 32 * 32 * 3;
  for (let i = 0; i < 3; i++) {
    sameBatch(A[i]!, B[i]!, 'repeated augmentation, workers');
    const x = A[i]!;
    assert.equal(x.epoch, i);
    assert.deepEqual([x.indices[0], x.indices[1]], [x.indices[2], x.indices[2]], 'three copies in a row');
    assert.deepEqual([x.indices[3], x.indices[4]], [x.indices[5], x.indices[5]]);
    assert.notEqual(x.indices[0], x.indices[3]);
    assert.deepEqual([...x.labels!], x.indices.map((j) => (j < 6 ? 0 : 1)));
    const img = (k: number) => Buffer.from(x.images.buffer, k * per * 4, per * 4);
    assert.ok(!img(0).equals(img(1)) && !img(1).equals(img(2)) && !img(0).equals(img(2)), `batch ${i}: the copies differ`);
  }
  await Promise.all([a.close(), b.close()]);
  const e = await createLoader(cfg({ root }), { batchSize: 4, seed: 1, augment: 'eval', repeats: 3 });
  assert.equal(e.stepsPerEpoch, 3);
  assert.deepEqual((await e.next()).indices, [0, 1, 2, 3]);
  await e.close();
});

test('labels follow the class folders; eval mode is unshuffled and deterministic', async () => {
  const l = await createLoader(cfg({ root }), { batchSize: 5, seed: 1, augment: 'finetune', withLabels: true });
  assert.deepEqual(l.classes, ['cat', 'dog']);
  const b = await l.next();
  assert.deepEqual([...b.labels!], b.indices.map((i) => (i < 6 ? 0 : 1)));
  await l.close();
  const e = await createLoader(cfg({ root }), { batchSize: 4, seed: 1, augment: 'eval', withLabels: true });
  const E = await batches(e, 3);
  assert.deepEqual(E.flatMap((x) => x.indices), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]);
  const e2 = await createLoader(cfg({ root }), { batchSize: 4, seed: 99, augment: 'eval' });
  sameBatch(await e2.next(), E[0]!, 'eval does not depend on the seed');
  assert.equal((await e2.next()).labels, null);
  await Promise.all([e.close(), e2.close()]);
  await assert.rejects(
    createLoader(cfg({ root: path.join(root, 'cat') }), { batchSize: 2, seed: 0, augment: 'finetune', withLabels: true }),
    DataError,
  );
});

test('corrupt, truncated, zero-byte and non-image files are skipped, reported once, and batches stay full', async () => {
  const bad = path.join(tmp, 'bad');
  for (let i = 0; i < 5; i++) await writeImage(path.join(bad, `ok${i}.jpg`), 30 + i, 48, 40);
  const good = await readFile(path.join(bad, 'ok0.jpg'));
  await writeFile(path.join(bad, 'truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
  await writeFile(path.join(bad, 'zero.jpg'), Buffer.alloc(0));
  await writeFile(path.join(bad, 'text.png'), 'this is a text file, not a PNG\n');
  const runDir = path.join(tmp, 'run');
  for (const workers of [0, 2]) {
    const warnings: Array<[string, string]> = [];
    const l = await createLoader(cfg({ root: bad, workers }), {
      batchSize: 3,
      seed: 3,
      augment: 'pretrain',
      runDir,
      onWarning: (code, msg) => warnings.push([code, msg]),
    });
    assert.equal(l.numImages, 8);
    const X = await batches(l, 9); // 3 epochs
    const badIdx = new Set([5, 6, 7]); // sorted: ok0..ok4, text.png, truncated.jpg, zero.jpg
    assert.deepEqual(scanImageFolder(bad).files, ['ok0.jpg', 'ok1.jpg', 'ok2.jpg', 'ok3.jpg', 'ok4.jpg', 'text.png', 'truncated.jpg', 'zero.jpg']);
    for (const x of X) {
      assert.equal(x.indices.length, 3);
      for (const i of x.indices) assert.ok(!badIdx.has(i), `bad index ${i} in a batch`);
    }
    const sk = l.skipped();
    assert.deepEqual(sk.map((s) => path.basename(s.path)), ['text.png', 'truncated.jpg', 'zero.jpg']);
    const text = await readFile(path.join(runDir, 'skipped-files.txt'), 'utf8');
    for (const n of ['text.png', 'truncated.jpg', 'zero.jpg']) {
      assert.equal(text.split('\n').filter((line) => line.includes(n)).length, 1, `${n} listed once`);
      assert.equal(warnings.filter(([, m]) => m.includes(n)).length, 1, `${n} reported once`);
    }
    assert.ok(warnings.every(([code]) => code === 'skipped-files'));
    await l.close();
  }
  // replacement is deterministic: same batches with and without workers, and the next valid index of the order
  const a = await createLoader(cfg({ root: bad, workers: 0 }), { batchSize: 3, seed: 3, augment: 'pretrain' });
  const b = await createLoader(cfg({ root: bad, workers: 2 }), { batchSize: 3, seed: 3, augment: 'pretrain' });
  const A = await batches(a, 6);
  const B = await batches(b, 6);
  for (let i = 0; i < 6; i++) sameBatch(A[i]!, B[i]!, 'skip replacement');
  await Promise.all([a.close(), b.close()]);
});

test('a dataset where every file is unreadable is a DataError', async () => {
  const dir = path.join(tmp, 'allbad');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'a.jpg'), 'nope');
  await writeFile(path.join(dir, 'b.png'), Buffer.alloc(0));
  const l = await createLoader(cfg({ root: dir }), { batchSize: 2, seed: 0, augment: 'pretrain' });
  await assert.rejects(l.next(), (e: unknown) => {
    assert.ok(e instanceof DataError);
    assert.match(e.message, /all 2 images under data\.root '.*allbad' are unreadable/);
    return true;
  });
  await l.close();
});

test('synthetic source: synthetic_size images per epoch, deterministic, labelled variant', async () => {
  const c = cfg({ source: 'synthetic', synthetic_size: 10, input_size: 32, workers: 0 });
  const a = await createLoader(c, { batchSize: 4, seed: 2, augment: 'pretrain' });
  const b = await createLoader({ ...c, workers: 1 }, { batchSize: 4, seed: 2, augment: 'pretrain' });
  assert.equal(a.numImages, 10);
  assert.equal(a.stepsPerEpoch, 3);
  const A = await batches(a, 4);
  const B = await batches(b, 4);
  for (let i = 0; i < 4; i++) sameBatch(A[i]!, B[i]!, 'synthetic');
  assert.equal(A[0]!.labels, null);
  const l = await createLoader(c, { batchSize: 5, seed: 2, augment: 'pretrain', withLabels: true, syntheticClasses: 3 });
  const x = await l.next();
  assert.deepEqual([...x.labels!], x.indices.map((i) => i % 3));
  assert.equal(l.classes!.length, 3);
  // the fine-tuning steps after the crop also apply to synthetic images (same draws on the main thread and in workers)
  const ftOpts = { batchSize: 4, seed: 2, augment: 'finetune' as const, withLabels: true, syntheticClasses: 3, autoAugment: 'trivial_augment_wide' as const, randomErasing: 0.5 };
  const s0 = await createLoader(c, ftOpts);
  const s1 = await createLoader({ ...c, workers: 1 }, ftOpts);
  const sp = await createLoader(c, { ...ftOpts, autoAugment: null, randomErasing: 0 });
  const S0 = await batches(s0, 2);
  const S1 = await batches(s1, 2);
  const SP = await batches(sp, 2);
  for (let i = 0; i < 2; i++) {
    sameBatch(S0[i]!, S1[i]!, 'synthetic, fine-tuning steps');
    assert.deepEqual(S0[i]!.indices, SP[i]!.indices);
  }
  assert.ok(!Buffer.from(S0[0]!.images.buffer).equals(Buffer.from(SP[0]!.images.buffer)), 'the augmentations ran');
  await Promise.all([a.close(), b.close(), l.close(), s0.close(), s1.close(), sp.close()]);
});
