/**
 * timm's AutoAugment 'v0' (spec §7.4 step 3, inputs ≥ 384 px): every op at several magnitudes and signs, and every
 * sub-policy under fixed draws, against the pixels timm's own auto_augment code makes with Pillow 12.3
 * (test/fixtures/augment/auto-augment-timm.json, scripts/make-augment-fixtures.py); the policy table, timm's hparams,
 * the draw statistics, and its place in the train transform.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { patternPng } from './helpers/images.js';
import { Rng } from '../src/util/rng.js';
import { packageRoot } from '../src/util/paths.js';
import {
  AA_OPS,
  AA_SIGNED,
  AA_V0_POLICY,
  aaHparams,
  aaLevelToArg,
  applyAaDraw,
  applyAaOp,
  autoAugmentV0,
  decodeTrain,
  denormalizeToUint8,
  flipRgb,
  normalizeRgb,
  postCrop,
  sampleAutoAugment,
  type AaOp,
  type AutoAugment,
  type UniformSource,
} from '../src/data/index.js';

interface Fixture {
  pillow: string;
  timm: string;
  policy: Array<Array<[AaOp, number, number]>>;
  images: Array<{
    width: number;
    height: number;
    pixels: string;
    hparams: { translate_const: number; img_mean: number[] };
    ops: Array<{ op: AaOp; level: number; negate: boolean; arg: number | null; pixels: string }>;
    subPolicies: Array<{ subPolicy: number; uniforms: number[]; pixels: string }>;
  }>;
}
const fixture = JSON.parse(readFileSync(path.join(packageRoot(), 'test', 'fixtures', 'augment', 'auto-augment-timm.json'), 'utf8')) as Fixture;
const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

function countDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) d++;
  return d;
}

/** Replays recorded draws: `int(25)` → the fixture's sub-policy, `float()` → the next recorded uniform. */
function replay(subPolicy: number, uniforms: number[]): UniformSource & { left: () => number } {
  const q = [...uniforms];
  return {
    int: (n: number) => {
      assert.equal(n, 25, 'the sub-policy is drawn among 25');
      return subPolicy;
    },
    float: () => {
      assert.ok(q.length > 0, 'more draws than timm made');
      return q.shift()!;
    },
    left: () => q.length,
  };
}

test('AutoAugment v0: the 25 sub-policies are timm\'s (ops, probabilities, magnitudes) and the hparams are timm\'s for the input size', () => {
  assert.equal(AA_V0_POLICY.length, 25);
  assert.deepEqual(AA_V0_POLICY.map((sp) => sp.map((o) => [...o])), fixture.policy);
  for (const im of fixture.images) {
    const hp = aaHparams(Math.min(im.width, im.height));
    assert.equal(hp.translateConst, im.hparams.translate_const);
    assert.deepEqual([...hp.fill], im.hparams.img_mean);
  }
  assert.deepEqual(aaHparams(384), { translateConst: 172, translatePct: 0.45, fill: [124, 116, 104] }, 'int(0.45·384), round(255·mean)');
  assert.equal(aaHparams(224).translateConst, 100);
});

test('AutoAugment ops equal timm + Pillow byte for byte: every op, magnitudes 0/1/4/7/10, both signs, fill = img_mean, square and non-square', () => {
  let cases = 0;
  const seen = new Set<AaOp>();
  for (const im of fixture.images) {
    const src = b64(im.pixels);
    const hp = aaHparams(Math.min(im.width, im.height));
    for (const c of im.ops) {
      const arg = aaLevelToArg(c.op, c.level, c.negate, hp);
      assert.ok(Object.is(arg, c.arg), `${c.op} level ${c.level}${c.negate ? ' negated' : ''}: arg ${arg} vs timm ${c.arg}`);
      const got = applyAaOp(src, im.width, im.height, c.op, arg, hp);
      const diff = countDiff(got, b64(c.pixels));
      assert.equal(diff, 0, `${c.op}(${c.arg}) on ${im.width}×${im.height}: ${diff} values differ from timm ${fixture.timm} / Pillow ${fixture.pillow}`);
      assert.notEqual(got, src, 'a new buffer');
      seen.add(c.op);
      cases++;
    }
  }
  assert.deepEqual([...seen].sort(), [...AA_OPS].sort(), 'every op is covered');
  assert.equal(cases, 216);
  // not vacuous: strong settings change the image, and the geometric ops fill with img_mean
  const im = fixture.images[0]!;
  for (const c of im.ops.filter((x) => x.level === 10 && !['Solarize'].includes(x.op))) {
    assert.notDeepEqual(b64(c.pixels), b64(im.pixels), `${c.op} at level 10 changes the image`);
  }
  const rot = b64(im.ops.find((x) => x.op === 'Rotate' && x.level === 10)!.pixels);
  assert.deepEqual([...rot.subarray(0, 3)], [124, 116, 104], 'the corner of a 30° rotation is img_mean');
});

test('AutoAugment v0 sub-policies equal timm\'s AutoAugment under the same draws (which ops run, signs), all 25', () => {
  let cases = 0;
  const subs = new Set<number>();
  let ran = 0;
  let skipped = 0;
  for (const im of fixture.images) {
    const src = b64(im.pixels);
    const hp = aaHparams(Math.min(im.width, im.height));
    for (const c of im.subPolicies) {
      const r = replay(c.subPolicy, c.uniforms);
      const out = autoAugmentV0(src, im.width, im.height, r, hp);
      assert.equal(r.left(), 0, `sub-policy ${c.subPolicy}: the same number of draws as timm`);
      assert.equal(out.draw.subPolicy, c.subPolicy);
      const diff = countDiff(out.pixels, b64(c.pixels));
      assert.equal(diff, 0, `sub-policy ${c.subPolicy} ${JSON.stringify(out.draw.ops.map((o) => [o.op, o.applied, o.arg]))} on ${im.width}×${im.height}: ${diff} values differ`);
      assert.deepEqual(applyAaDraw(src, im.width, im.height, out.draw, hp), out.pixels, 'applyAaDraw replays the draw');
      for (const o of out.draw.ops) o.applied ? ran++ : skipped++;
      subs.add(c.subPolicy);
      cases++;
    }
  }
  assert.equal(subs.size, 25);
  assert.equal(cases, 200);
  assert.ok(ran > 150 && skipped > 100, `ops run ${ran}, skipped ${skipped}`);
});

test('AutoAugment v0 draws: seeded; sub-policies uniform; each op runs with its probability; signed ops negated half the time', () => {
  const hp = aaHparams(384);
  const a = Array.from({ length: 40 }, (_, i) => sampleAutoAugment(Rng.from(3, 'aa', i), hp));
  assert.deepEqual(a, Array.from({ length: 40 }, (_, i) => sampleAutoAugment(Rng.from(3, 'aa', i), hp)));
  const rng = Rng.from(17, 'aa-stats');
  const N = 25000;
  const perSub = new Array<number>(25).fill(0);
  const runs = AA_V0_POLICY.map(() => [0, 0]);
  let signed = 0;
  let negated = 0;
  for (let i = 0; i < N; i++) {
    const d = sampleAutoAugment(rng, hp);
    perSub[d.subPolicy]!++;
    d.ops.forEach((o, k) => {
      const [op, prob, magnitude] = AA_V0_POLICY[d.subPolicy]![k]!;
      assert.deepEqual([o.op, o.prob, o.magnitude], [op, prob, magnitude]);
      if (o.applied) {
        runs[d.subPolicy]![k]!++;
        assert.ok(Object.is(o.arg, aaLevelToArg(op, magnitude, o.negated, hp)));
        if (AA_SIGNED.has(op)) {
          signed++;
          if (o.negated) negated++;
        } else assert.equal(o.negated, false);
      } else {
        assert.equal(o.arg, null);
      }
    });
  }
  for (let s = 0; s < 25; s++) assert.ok(Math.abs(perSub[s]! / N - 1 / 25) < 0.006, `sub-policy ${s}: ${perSub[s]} of ${N}`);
  AA_V0_POLICY.forEach((sp, s) =>
    sp.forEach(([op, prob], k) => {
      const f = runs[s]![k]! / perSub[s]!;
      if (prob === 1 || prob === 0) assert.equal(f, prob, `sub-policy ${s} ${op} (p ${prob})`);
      else assert.ok(Math.abs(f - prob) < 0.07, `sub-policy ${s} ${op}: ran ${f.toFixed(3)} vs p ${prob}`);
    }),
  );
  assert.ok(signed > 3000 && Math.abs(negated / signed - 0.5) < 0.03, `negated ${negated} of ${signed}`);
  // pooled over the policy, each op runs with the mean probability of its slots
  const expected = AA_V0_POLICY.flat().reduce((s, [, p]) => s + p, 0) / 25;
  const observed = runs.flat().reduce((s, x) => s + x, 0) / N;
  assert.ok(Math.abs(observed - expected) < 0.02, `ops run per image ${observed.toFixed(3)} vs ${expected.toFixed(3)}`);
});

test('train transform with AutoAugment v0 = crop, flip, then the drawn sub-policy on the uint8 crop (hparams of the crop size), then normalise', async () => {
  const png = await patternPng(48, 40);
  const t = { size: 16, scale: [0.3, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], hflip: 0.5 };
  const subs = new Set<number>();
  let changed = 0;
  for (let k = 0; k < 24; k++) {
    const plain = await decodeTrain(png, t, Rng.from(9, 'aug', 0, k));
    const aa = await decodeTrain(png, { ...t, autoAugment: 'auto_augment_v0' }, Rng.from(9, 'aug', 0, k));
    assert.deepEqual(aa.crop, plain.crop, 'the crop draws come first and are unchanged');
    assert.equal(aa.flipped, plain.flipped);
    assert.equal(aa.augment, undefined);
    const d = aa.aaDraw!;
    subs.add(d.subPolicy);
    const cropU8 = denormalizeToUint8(plain.data); // already flipped
    const want = normalizeRgb(applyAaDraw(cropU8, 16, 16, d, aaHparams(16)), 16, 16, false);
    assert.deepEqual(aa.data, want, `image ${k}: sub-policy ${d.subPolicy}`);
    if (d.ops.some((o) => o.applied)) changed++;
    // the same Rng stream continues into RandomErasing, which changes only its box
    const re = await decodeTrain(png, { ...t, autoAugment: 'auto_augment_v0', randomErasing: 1 }, Rng.from(9, 'aug', 0, k));
    assert.deepEqual(re.aaDraw, d);
    assert.equal(re.erased!.length, 1);
  }
  assert.ok(subs.size >= 10, `sub-policies seen: ${subs.size}`);
  assert.ok(changed >= 12);
  // postCrop on a flipped crop: the flip comes before the policy
  const px = b64(fixture.images[0]!.pixels);
  const r1 = postCrop(px, 16, true, { autoAugment: 'auto_augment_v0' }, Rng.from(4, 'x'));
  const d1 = sampleAutoAugment(Rng.from(4, 'x'), aaHparams(16));
  assert.deepEqual(r1.aaDraw, d1);
  assert.deepEqual(r1.data, normalizeRgb(applyAaDraw(flipRgb(px, 16, 16), 16, 16, d1, aaHparams(16)), 16, 16, false));
  assert.throws(() => postCrop(px, 16, false, { autoAugment: 'v0' as unknown as AutoAugment }, Rng.from(1)), /unknown auto-augmentation 'v0'/);
});
