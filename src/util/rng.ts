/**
 * Deterministic, serialisable pseudo-random numbers (xoshiro128**), seeded from a tuple of keys.
 *
 * Convention for the whole project: every random choice is a pure function of (runtime.seed, what, where), e.g.
 * `Rng.from(seed, 'mask', step)` for the masks of one step or `Rng.from(seed, 'aug', epoch, index)` for one image's
 * augmentation. A resumed run therefore replays exactly the same randomness without saving generator state, and
 * results are identical on every backend (no tf.random* is used for training randomness).
 */
export class Rng {
  private s: Uint32Array;

  constructor(state: ArrayLike<number>) {
    this.s = Uint32Array.from(state);
    if (this.s.length !== 4) throw new Error('Rng state must have 4 words');
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[0] = 0x9e3779b9;
  }

  /** A generator derived from a seed and any number of keys (numbers or strings). */
  static from(seed: number, ...keys: Array<number | string>): Rng {
    let h = mix32(0x243f6a88 ^ (seed >>> 0)) ^ mix32(Math.floor(seed / 4294967296) >>> 0);
    for (const k of keys) {
      if (typeof k === 'number') {
        h = mix32(h ^ mix32((k >>> 0) + 0x6a09e667)) ^ mix32(Math.floor(k / 4294967296) >>> 0);
      } else {
        for (let i = 0; i < k.length; i++) h = mix32(h ^ (k.charCodeAt(i) + 0x3c6ef372));
        h = mix32(h ^ k.length);
      }
    }
    // splitmix-style expansion to four words
    const st: number[] = [];
    let x = h >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      st.push(mix32(x));
    }
    return new Rng(st);
  }

  /** Copy of the internal state (for checkpoints). */
  state(): number[] {
    return Array.from(this.s);
  }

  /** Next uint32. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  float(): number {
    const a = this.nextU32() >>> 5;
    const b = this.nextU32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Uniform float in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.float();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!(n > 0)) throw new Error(`Rng.int: n must be positive, got ${n}`);
    return Math.floor(this.float() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.float();
    const v = this.float();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Fisher-Yates shuffle in place; returns the array. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
    return a;
  }

  /** A permutation of 0..n-1. */
  permutation(n: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, i) => i));
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** murmur3 finaliser: a good 32-bit mixing function. */
export function mix32(h: number): number {
  h = h >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Python's round(): round half to even (spec §1.2). Exact for the values len_keep needs. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  // tolerate binary representation error around .5 (e.g. 49*0.5 = 24.5 exactly, 0.1*... not exactly)
  const eps = 1e-9;
  if (d > 0.5 + eps) return f + 1;
  if (d < 0.5 - eps) return f;
  return f % 2 === 0 ? f : f + 1;
}
