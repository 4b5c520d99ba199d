/**
 * The labelled dataset of the linear-probe benchmark (issue 7.5): full-frame procedural textures whose class is the
 * texture family, with every other factor a nuisance drawn per image (the two tones, orientation, scale, phase,
 * centre, an occluding blob and pixel noise).
 *
 * Why this and not the shape × fill classes of `syntheticLabelled`: with one small object on a random background the
 * class is a few hundred pixels of a 64–96 px image, and a linear probe on globally pooled features is near chance for
 * any encoder at this scale (measured: both a random and a SparK-pre-trained resnet_mini ≈ chance on 12 and 24
 * classes), so the benchmark measured nothing. Texture families fill the image, so the class is visible in every
 * masked-modelling patch.
 *
 * Why grey by default ('palette'): with two random RGB colours per image, the colours are the one thing about a hidden
 * patch that the visible ones predict exactly, so a short masked pre-training first learns to carry colour. Its pooled
 * features collapse onto a few colour directions (participation ratio of the feature correlation ≈ 2 against ≈ 10
 * for random init) and the probe of the pre-trained encoder lost to random init (seeds 0–2: 24.2/29.2/20.0 % vs
 * 27.5/25.0/30.0 %). With grey tones the colour shortcut is gone; what stays predictable from the visible patches is
 * the pattern, i.e. the class, and the pre-trained encoder wins (numbers in `probe-benchmark.ts`). `palette: 'colour'`
 * keeps the colour variant for that comparison. A pure function of (seed, index, size, classes, palette), like
 * `syntheticLabelled`; the class of image `index` is `index mod classes`.
 */
import sharp from 'sharp';
import path from 'node:path';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { writeSyntheticFolder } from '../data/index.js';
import { UsageError } from '../util/errors.js';
import { atomicWriteFile } from '../util/atomic.js';
import { Rng } from '../util/rng.js';

export const TEXTURE_CLASSES = ['stripes', 'checker', 'dots', 'rings', 'noise', 'zigzag', 'grid', 'gradient'] as const;
export const TEXTURE_MAX_CLASSES = TEXTURE_CLASSES.length;

type RGB = [number, number, number];

/** 'grey' (default): the two tones of a texture and the occluder are random grey levels; 'colour': random RGB. */
export type TexturePalette = 'colour' | 'grey';

function colour(rng: Rng): RGB {
  return [rng.float(), rng.float(), rng.float()];
}

function grey(rng: Rng): RGB {
  const v = rng.float();
  return [v, v, v];
}

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

/** Soft square wave in [0, 1] of a phase in periods (edge width ≈ `w` periods). */
function square(u: number, w: number): number {
  const f = u - Math.floor(u);
  return clamp01((Math.min(f, 1 - f) - 0.25) / w + 0.5);
}

/** A scalar pattern t(x, y) ∈ [0, 1] of texture family `kind`; scale, orientation and phase are random. */
function pattern(kind: (typeof TEXTURE_CLASSES)[number], rng: Rng, size: number): (x: number, y: number) => number {
  const th = rng.uniform(0, Math.PI);
  const c = Math.cos(th);
  const s = Math.sin(th);
  const period = rng.uniform(0.1, 0.22) * size;
  const ox = rng.uniform(0, period);
  const oy = rng.uniform(0, period);
  const w = 0.6 / period; // ≈ 1 px edges
  switch (kind) {
    case 'stripes':
      return (x, y) => square((x * c + y * s) / period + ox / period, w);
    case 'checker':
      return (x, y) => {
        const a = square((x * c + y * s + ox) / period, w);
        const b = square((-x * s + y * c + oy) / period, w);
        return a + b - 2 * a * b;
      };
    case 'dots': {
      const r = period * rng.uniform(0.22, 0.38);
      return (x, y) => {
        const u = x * c + y * s + ox;
        const v = -x * s + y * c + oy;
        const du = u - period * Math.round(u / period);
        const dv = v - period * Math.round(v / period);
        return clamp01(r - Math.hypot(du, dv) + 0.5);
      };
    }
    case 'rings': {
      const cx = rng.uniform(-0.2, 1.2) * size;
      const cy = rng.uniform(-0.2, 1.2) * size;
      return (x, y) => square(Math.hypot(x - cx, y - cy) / period + ox / period, w);
    }
    case 'noise': {
      // smooth value noise at about the same scale as the periodic families
      const g = Math.max(2, Math.round(size / period));
      const grid = new Float32Array((g + 2) * (g + 2));
      for (let i = 0; i < grid.length; i++) grid[i] = rng.float() < 0.5 ? 0 : 1;
      const sc = g / size;
      return (x, y) => {
        const u = x * sc;
        const v = y * sc;
        const i = Math.floor(u);
        const j = Math.floor(v);
        let fu = u - i;
        let fv = v - j;
        fu = fu * fu * (3 - 2 * fu);
        fv = fv * fv * (3 - 2 * fv);
        const at = (a: number, b: number) => grid[b * (g + 2) + a]!;
        return (at(i, j) * (1 - fu) + at(i + 1, j) * fu) * (1 - fv) + (at(i, j + 1) * (1 - fu) + at(i + 1, j + 1) * fu) * fv;
      };
    }
    case 'zigzag': {
      const amp = period * rng.uniform(0.5, 1.0);
      const wl = period * rng.uniform(1.5, 2.5);
      return (x, y) => {
        const u = x * c + y * s;
        const v = -x * s + y * c + oy;
        const tri = Math.abs(((v / wl) % 1 + 1) % 1 - 0.5) * 2; // triangle wave in [0, 1]
        return square((u + amp * tri + ox) / period, w);
      };
    }
    case 'grid': {
      const lw = period * rng.uniform(0.12, 0.22);
      return (x, y) => {
        const u = x * c + y * s + ox;
        const v = -x * s + y * c + oy;
        const du = Math.abs(u - period * Math.round(u / period));
        const dv = Math.abs(v - period * Math.round(v / period));
        return clamp01(lw / 2 - Math.min(du, dv) + 0.5);
      };
    }
    case 'gradient': {
      const k = 1 / (size * rng.uniform(0.6, 1.4));
      const off = rng.float();
      return (x, y) => clamp01((x - size / 2) * c * k + (y - size / 2) * s * k + off);
    }
  }
}

/**
 * Labelled texture image `index`: interleaved RGB uint8, size·size·3 (row-major HWC), label = index mod classes.
 * classes ≤ TEXTURE_MAX_CLASSES; the first `classes` families of TEXTURE_CLASSES are used.
 */
export function textureLabelled(seed: number, index: number, size: number, classes: number, palette: TexturePalette = 'grey'): { pixels: Uint8Array; label: number } {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`image size must be a positive integer, got ${size}`);
  if (!Number.isInteger(classes) || classes < 1 || classes > TEXTURE_MAX_CLASSES) {
    throw new RangeError(`classes must be an integer in [1, ${TEXTURE_MAX_CLASSES}], got ${classes}`);
  }
  const label = ((index % classes) + classes) % classes;
  const rng = Rng.from(seed, 'probe-texture', index);
  const t = pattern(TEXTURE_CLASSES[label]!, rng, size);
  // two random tones with at least 0.35 luminance contrast (resampled deterministically until they have it)
  const lum = (c: RGB) => 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
  const draw = palette === 'colour' ? colour : grey;
  const a = draw(rng);
  let b = draw(rng);
  while (Math.abs(lum(a) - lum(b)) < 0.35) b = draw(rng);
  // nuisance: an occluding ellipse of a random colour, and pixel noise
  const occ = draw(rng);
  const ecx = rng.uniform(0, size);
  const ecy = rng.uniform(0, size);
  const er = rng.uniform(0.08, 0.2) * size;
  const noise = rng.uniform(0, 0.05);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0, o = 0; y < size; y++) {
    for (let x = 0; x < size; x++, o += 3) {
      const v = t(x + 0.5, y + 0.5);
      const alpha = clamp01(er - Math.hypot(x + 0.5 - ecx, y + 0.5 - ecy) + 0.5);
      for (let ch = 0; ch < 3; ch++) {
        const p = a[ch]! + (b[ch]! - a[ch]!) * v;
        const q = p + (occ[ch]! - p) * alpha + noise * rng.normal();
        out[o + ch] = Math.round(clamp01(q) * 255);
      }
    }
  }
  return { pixels: out, label };
}

/**
 * Writes `dir/class_XX/img_YYYYY.png`: image k of class c is `textureLabelled(seed, k·classes + c, ...)`.
 * Deterministic: the same options write the same pixels.
 */
export async function writeTextureFolder(dir: string, opts: { classes: number; perClass: number; size: number; seed: number; palette?: TexturePalette }): Promise<{ root: string; classes: string[]; files: string[] }> {
  const { classes, perClass, size, seed } = opts;
  const names = Array.from({ length: classes }, (_, c) => `class_${String(c).padStart(2, '0')}`);
  const files: string[] = [];
  for (let c = 0; c < classes; c++) {
    for (let k = 0; k < perClass; k++) {
      const { pixels, label } = textureLabelled(seed, k * classes + c, size, classes, opts.palette);
      if (label !== c) throw new Error(`internal: texture label ${label} != ${c}`);
      const data = await sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.length), { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
      const rel = path.join(names[c]!, `img_${String(k).padStart(5, '0')}.png`);
      await atomicWriteFile(path.join(dir, rel), data);
      files.push(rel);
    }
  }
  return { root: path.resolve(dir), classes: names, files };
}

export interface LabelledDatasetOptions {
  /** 'texture' (this module's families) or 'shapes' (shape × fill objects of `writeSyntheticFolder`). */
  kind: 'texture' | 'shapes';
  classes: number;
  trainPerClass: number;
  valPerClass: number;
  size: number;
  seed: number;
  /** Texture tones (default 'grey'); ignored for shapes. */
  palette?: TexturePalette;
}

/**
 * A labelled train/val pair for the probe benchmark and `spark dataset`: `out/train` (seed) and `out/val` (seed + 1000,
 * so no validation image repeats a training one), both ImageNet-style class folders. Written into a sibling temp
 * folder that is renamed into place at the end, so `out` is either complete or absent; an existing `out` is an error
 * unless `replace`.
 */
export async function writeLabelledDataset(out: string, o: LabelledDatasetOptions, replace = false): Promise<{ train: string; val: string; classes: string[]; images: number }> {
  const dest = path.resolve(out);
  if (existsSync(dest) && !replace) throw new UsageError(`${out}: already exists (pass --force to replace it)`);
  const tmp = `${dest}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(path.dirname(dest), { recursive: true });
  try {
    let classes: string[] = [];
    for (const [split, perClass, seed] of [['train', o.trainPerClass, o.seed], ['val', o.valPerClass, o.seed + 1000]] as const) {
      const dir = path.join(tmp, split);
      const r =
        o.kind === 'texture'
          ? await writeTextureFolder(dir, { classes: o.classes, perClass, size: o.size, seed, palette: o.palette ?? 'grey' })
          : await writeSyntheticFolder(dir, { classes: o.classes, perClass, size: o.size, seed, format: 'png' });
      classes = r.classes;
    }
    rmSync(dest, { recursive: true, force: true });
    renameSync(tmp, dest);
    return { train: path.join(dest, 'train'), val: path.join(dest, 'val'), classes, images: o.classes * (o.trainPerClass + o.valPerClass) };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
