/**
 * Procedural synthetic images: a pure function of (seed, index, size), pure JS, no decoding.
 *
 * Each image is a random background (linear or radial gradient, stripes, checker or smooth value noise) with one to
 * four anti-aliased shapes (rotated rectangles, ellipses, triangles) filled with solid colour or a texture. Images
 * therefore have structure a masked model can predict from visible context (smooth regions, continuing edges and
 * periodic textures), so the SparK loss can fall.
 *
 * The labelled variant puts exactly one object whose kind (shape × fill texture) is the class on a random background.
 */
import { Rng } from '../util/rng.js';

type RGB = [number, number, number];
/** Writes the colour at (x, y) into out[o..o+2] (values in [0, 1]). */
type Paint = (x: number, y: number, out: Float32Array, o: number) => void;
/** Signed distance in pixels (negative inside). */
type Sdf = (x: number, y: number) => number;

function colour(rng: Rng): RGB {
  return [rng.float(), rng.float(), rng.float()];
}

function solid(c: RGB): Paint {
  return (_x, _y, out, o) => {
    out[o] = c[0];
    out[o + 1] = c[1];
    out[o + 2] = c[2];
  };
}

function mix(a: RGB, b: RGB, t: number, out: Float32Array, o: number): void {
  out[o] = a[0] + (b[0] - a[0]) * t;
  out[o + 1] = a[1] + (b[1] - a[1]) * t;
  out[o + 2] = a[2] + (b[2] - a[2]) * t;
}

function smoothstep(e0: number, e1: number, x: number): number {
  const t = Math.min(1, Math.max(0, (x - e0) / (e1 - e0)));
  return t * t * (3 - 2 * t);
}

function linearGradient(rng: Rng, size: number): Paint {
  const a = colour(rng);
  const b = colour(rng);
  const th = rng.uniform(0, 2 * Math.PI);
  const dx = Math.cos(th) / size;
  const dy = Math.sin(th) / size;
  const off = 0.5 - (dx + dy) * size * 0.5;
  return (x, y, out, o) => mix(a, b, Math.min(1, Math.max(0, x * dx + y * dy + off)), out, o);
}

function radialGradient(rng: Rng, size: number): Paint {
  const a = colour(rng);
  const b = colour(rng);
  const cx = rng.uniform(0, size);
  const cy = rng.uniform(0, size);
  const r = rng.uniform(0.3, 1.0) * size;
  return (x, y, out, o) => mix(a, b, Math.min(1, Math.hypot(x - cx, y - cy) / r), out, o);
}

function stripes(rng: Rng, size: number, a: RGB = colour(rng), b: RGB = colour(rng)): Paint {
  const th = rng.uniform(0, Math.PI);
  const period = rng.uniform(0.06, 0.25) * size;
  const k = (2 * Math.PI) / period;
  const dx = Math.cos(th) * k;
  const dy = Math.sin(th) * k;
  const phase = rng.uniform(0, 2 * Math.PI);
  const sharpness = rng.uniform(1, 6);
  return (x, y, out, o) => {
    const s = Math.sin(x * dx + y * dy + phase) * sharpness;
    mix(a, b, Math.min(1, Math.max(0, 0.5 + 0.5 * s)), out, o);
  };
}

function checker(rng: Rng, size: number, a: RGB = colour(rng), b: RGB = colour(rng)): Paint {
  const th = rng.uniform(0, Math.PI / 2);
  const cell = rng.uniform(0.08, 0.25) * size;
  const c = Math.cos(th) / cell;
  const s = Math.sin(th) / cell;
  const ox = rng.float();
  const oy = rng.float();
  return (x, y, out, o) => {
    const u = x * c + y * s + ox;
    const v = -x * s + y * c + oy;
    // smooth square wave per axis (edge width ≈ 1 px)
    const fu = u - Math.floor(u);
    const fv = v - Math.floor(v);
    const w = 0.5 / cell;
    const su = smoothstep(0.5 - w, 0.5 + w, fu) - smoothstep(1 - w, 1, fu);
    const sv = smoothstep(0.5 - w, 0.5 + w, fv) - smoothstep(1 - w, 1, fv);
    const t = su + sv - 2 * su * sv; // xor
    mix(a, b, t, out, o);
  };
}

function dots(rng: Rng, size: number, a: RGB = colour(rng), b: RGB = colour(rng)): Paint {
  const cell = rng.uniform(0.07, 0.18) * size;
  const r = cell * rng.uniform(0.2, 0.4);
  const ox = rng.uniform(0, cell);
  const oy = rng.uniform(0, cell);
  return (x, y, out, o) => {
    const u = ((((x + ox) % cell) + cell) % cell) - cell / 2;
    const v = ((((y + oy) % cell) + cell) % cell) - cell / 2;
    mix(a, b, Math.min(1, Math.max(0, r - Math.hypot(u, v) + 0.5)), out, o);
  };
}

/** Smooth value noise: bicubic-smoothed interpolation of a random g×g grid, mapped between two colours. */
function valueNoise(rng: Rng, size: number): Paint {
  const a = colour(rng);
  const b = colour(rng);
  const g = 2 + rng.int(6);
  const grid = new Float32Array((g + 1) * (g + 1));
  for (let i = 0; i < grid.length; i++) grid[i] = rng.float();
  const scale = g / size;
  return (x, y, out, o) => {
    const u = x * scale;
    const v = y * scale;
    const i = Math.min(g - 1, Math.floor(u));
    const j = Math.min(g - 1, Math.floor(v));
    let fu = u - i;
    let fv = v - j;
    fu = fu * fu * (3 - 2 * fu);
    fv = fv * fv * (3 - 2 * fv);
    const r0 = grid[j * (g + 1) + i]! * (1 - fu) + grid[j * (g + 1) + i + 1]! * fu;
    const r1 = grid[(j + 1) * (g + 1) + i]! * (1 - fu) + grid[(j + 1) * (g + 1) + i + 1]! * fu;
    mix(a, b, r0 * (1 - fv) + r1 * fv, out, o);
  };
}

function background(rng: Rng, size: number): Paint {
  switch (rng.int(5)) {
    case 0:
      return linearGradient(rng, size);
    case 1:
      return radialGradient(rng, size);
    case 2:
      return stripes(rng, size);
    case 3:
      return checker(rng, size);
    default:
      return valueNoise(rng, size);
  }
}

// --- shapes -------------------------------------------------------------------------------------------------------

export const SHAPE_KINDS = ['rectangle', 'ellipse', 'triangle', 'ring', 'cross', 'diamond'] as const;
export const FILL_KINDS = ['solid', 'stripes', 'checker', 'dots'] as const;
/** Classes of the labelled variant: shape kind × fill kind. */
export const SYNTHETIC_MAX_CLASSES = SHAPE_KINDS.length * FILL_KINDS.length;

interface Shape {
  sdf: Sdf;
  /** Bounding box (pixels, inclusive-exclusive), already clipped to the image. */
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

function shape(kind: (typeof SHAPE_KINDS)[number], rng: Rng, size: number, scaleLo: number, scaleHi: number): Shape {
  const cx = rng.uniform(0.2, 0.8) * size;
  const cy = rng.uniform(0.2, 0.8) * size;
  const a = (rng.uniform(scaleLo, scaleHi) * size) / 2;
  const b = a * rng.uniform(0.5, 1);
  const th = rng.uniform(0, Math.PI);
  const c = Math.cos(th);
  const s = Math.sin(th);
  let sdf: Sdf;
  switch (kind) {
    case 'rectangle':
      sdf = (x, y) => {
        const u = (x - cx) * c + (y - cy) * s;
        const v = (y - cy) * c - (x - cx) * s;
        return Math.max(Math.abs(u) - a, Math.abs(v) - b);
      };
      break;
    case 'ellipse':
      sdf = (x, y) => {
        const u = (x - cx) * c + (y - cy) * s;
        const v = (y - cy) * c - (x - cx) * s;
        return (Math.hypot(u / a, v / b) - 1) * b;
      };
      break;
    case 'ring': {
      const t = b * rng.uniform(0.25, 0.45);
      sdf = (x, y) => {
        const u = (x - cx) * c + (y - cy) * s;
        const v = (y - cy) * c - (x - cx) * s;
        return Math.abs((Math.hypot(u / a, v / b) - 1) * b + t) - t;
      };
      break;
    }
    case 'cross': {
      const t = b * rng.uniform(0.25, 0.4);
      sdf = (x, y) => {
        const u = (x - cx) * c + (y - cy) * s;
        const v = (y - cy) * c - (x - cx) * s;
        return Math.min(Math.max(Math.abs(u) - a, Math.abs(v) - t), Math.max(Math.abs(u) - t, Math.abs(v) - a));
      };
      break;
    }
    case 'diamond':
      sdf = (x, y) => {
        const u = (x - cx) * c + (y - cy) * s;
        const v = (y - cy) * c - (x - cx) * s;
        return ((Math.abs(u) / a + Math.abs(v) / b - 1) * a * b) / Math.hypot(a, b);
      };
      break;
    case 'triangle': {
      // three vertices around the centre at random angles ≥ 60° apart
      const base = rng.uniform(0, 2 * Math.PI);
      const angs = [base, base + rng.uniform(1.6, 2.6), 0];
      angs[2] = angs[1]! + rng.uniform(1.6, Math.min(2.6, 2 * Math.PI - (angs[1]! - base) - 1.0));
      const vx = angs.map((t) => cx + a * Math.cos(t));
      const vy = angs.map((t) => cy + a * Math.sin(t));
      // counter-clockwise edges: inward normals; signed distance = max over edges
      const edges: Array<[number, number, number]> = [];
      for (let k = 0; k < 3; k++) {
        const x0 = vx[k]!;
        const y0 = vy[k]!;
        const x1 = vx[(k + 1) % 3]!;
        const y1 = vy[(k + 1) % 3]!;
        const len = Math.hypot(x1 - x0, y1 - y0) || 1;
        const nx = (y1 - y0) / len;
        const ny = -(x1 - x0) / len;
        edges.push([nx, ny, -(nx * x0 + ny * y0)]);
      }
      // orient so the centroid is inside (negative)
      const gx = (vx[0]! + vx[1]! + vx[2]!) / 3;
      const gy = (vy[0]! + vy[1]! + vy[2]!) / 3;
      const sign = edges[0]![0] * gx + edges[0]![1] * gy + edges[0]![2] > 0 ? -1 : 1;
      const [e0, e1, e2] = edges as [[number, number, number], [number, number, number], [number, number, number]];
      sdf = (x, y) => {
        return Math.max(sign * (e0[0] * x + e0[1] * y + e0[2]), sign * (e1[0] * x + e1[1] * y + e1[2]), sign * (e2[0] * x + e2[1] * y + e2[2]));
      };
      break;
    }
  }
  const r = Math.hypot(a, b) + 2;
  return {
    sdf,
    x0: Math.max(0, Math.floor(cx - r)),
    y0: Math.max(0, Math.floor(cy - r)),
    x1: Math.min(size, Math.ceil(cx + r)),
    y1: Math.min(size, Math.ceil(cy + r)),
  };
}

function fill(kind: (typeof FILL_KINDS)[number], rng: Rng, size: number): Paint {
  const a = colour(rng);
  switch (kind) {
    case 'solid':
      return solid(a);
    case 'stripes':
      return stripes(rng, size, a, colour(rng));
    case 'checker':
      return checker(rng, size, a, colour(rng));
    case 'dots':
      return dots(rng, size, a, colour(rng));
  }
}

const tmp = new Float32Array(3);

function paintBackground(buf: Float32Array, size: number, p: Paint): void {
  for (let y = 0, o = 0; y < size; y++) for (let x = 0; x < size; x++, o += 3) p(x + 0.5, y + 0.5, buf, o);
}

/** Composite a shape with its paint; edges are anti-aliased over `soft` pixels. */
function paintShape(buf: Float32Array, size: number, sh: Shape, p: Paint, soft: number): void {
  for (let y = sh.y0; y < sh.y1; y++) {
    for (let x = sh.x0; x < sh.x1; x++) {
      const d = sh.sdf(x + 0.5, y + 0.5);
      const alpha = Math.min(1, Math.max(0, 0.5 - d / soft));
      if (alpha <= 0) continue;
      const o = (y * size + x) * 3;
      p(x + 0.5, y + 0.5, tmp, 0);
      buf[o] = buf[o]! + (tmp[0]! - buf[o]!) * alpha;
      buf[o + 1] = buf[o + 1]! + (tmp[1]! - buf[o + 1]!) * alpha;
      buf[o + 2] = buf[o + 2]! + (tmp[2]! - buf[o + 2]!) * alpha;
    }
  }
}

function toUint8(buf: Float32Array): Uint8Array {
  const out = new Uint8Array(buf.length);
  for (let i = 0; i < buf.length; i++) {
    const v = buf[i]!;
    out[i] = v <= 0 ? 0 : v >= 1 ? 255 : Math.round(v * 255);
  }
  return out;
}

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`synthetic image size must be a positive integer, got ${size}`);
}

/** Unlabelled synthetic image `index`: interleaved RGB uint8, size·size·3 (row-major HWC). */
export function syntheticImage(seed: number, index: number, size: number): Uint8Array {
  checkSize(size);
  const rng = Rng.from(seed, 'synthetic', index);
  const buf = new Float32Array(size * size * 3);
  paintBackground(buf, size, background(rng, size));
  const n = 1 + rng.int(4);
  for (let k = 0; k < n; k++) {
    const kind = SHAPE_KINDS[rng.int(3)]!; // rectangle, ellipse, triangle
    const sh = shape(kind, rng, size, 0.2, 0.7);
    const f = fill(rng.float() < 0.6 ? 'solid' : FILL_KINDS[1 + rng.int(3)]!, rng, size);
    paintShape(buf, size, sh, f, rng.uniform(0.7, 2.5));
  }
  return toUint8(buf);
}

/** The class of labelled image `index` (balanced: index mod numClasses). */
export function syntheticLabel(index: number, numClasses: number): number {
  return ((index % numClasses) + numClasses) % numClasses;
}

/**
 * Labelled synthetic image: class c = index mod numClasses fixes the object kind (shape c mod 6, fill texture
 * floor(c / 6)); background, position, size, rotation and colours are random. numClasses ≤ SYNTHETIC_MAX_CLASSES.
 */
export function syntheticLabelled(seed: number, index: number, size: number, numClasses: number): { pixels: Uint8Array; label: number } {
  checkSize(size);
  if (!Number.isInteger(numClasses) || numClasses < 1 || numClasses > SYNTHETIC_MAX_CLASSES) {
    throw new RangeError(`numClasses must be an integer in [1, ${SYNTHETIC_MAX_CLASSES}], got ${numClasses}`);
  }
  const label = syntheticLabel(index, numClasses);
  const rng = Rng.from(seed, 'synthetic-labelled', index);
  const buf = new Float32Array(size * size * 3);
  paintBackground(buf, size, rng.float() < 0.5 ? linearGradient(rng, size) : valueNoise(rng, size));
  const sh = shape(SHAPE_KINDS[label % SHAPE_KINDS.length]!, rng, size, 0.45, 0.8);
  paintShape(buf, size, sh, fill(FILL_KINDS[Math.floor(label / SHAPE_KINDS.length)]!, rng, size), rng.uniform(0.7, 1.5));
  return { pixels: toUint8(buf), label };
}
