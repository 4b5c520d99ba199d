/** Small, pure text formatters shared by the Ink views and the plain logger (no ANSI codes here). */

/** `h:mm:ss` for a duration in seconds (negative / non-finite → `-:--:--`). */
export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '-:--:--';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return `${h}:${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}`;
}

/** Compact age: `5s`, `3m12s`, `2h05m`. */
export function formatAge(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) sec = 0;
  const s = Math.floor(sec);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Learning rates and other small positive numbers: `1.2e-3`; 0 → `0`. */
export function formatSci(x: number, digits = 1): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  return x.toExponential(digits).replace('e+', 'e');
}

/** Loss-like values: 4 decimals; tiny values in exponent form. */
export function formatLoss(x: number | null | undefined): string {
  if (x == null || Number.isNaN(x)) return '—';
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && Math.abs(x) < 1e-3) return x.toExponential(2);
  return x.toFixed(4);
}

/** Weight decay: 3 decimals (0.041), exponent form below 1e-3. */
export function formatWd(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && Math.abs(x) < 1e-3) return formatSci(x);
  return x.toFixed(3);
}

/** Gradient norm: 2 decimals, exponent form below 0.01. */
export function formatGradNorm(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x !== 0 && Math.abs(x) < 0.01) return formatSci(x);
  return x.toFixed(2);
}

/** Bytes in binary units: `512 B`, `12.3 MiB`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = n;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

const SPARK_CHARS = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/** Unicode sparkline of the last `width` values (min..max scaled to 8 levels; non-finite values shown as a space). */
export function sparkline(values: readonly number[], width = 40): string {
  const v = values.slice(-width);
  const finite = v.filter((x) => Number.isFinite(x));
  if (!finite.length) return '';
  let lo = Infinity;
  let hi = -Infinity;
  for (const x of finite) {
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  const span = hi - lo;
  return v
    .map((x) => {
      if (!Number.isFinite(x)) return ' ';
      const k = span > 0 ? Math.round(((x - lo) / span) * (SPARK_CHARS.length - 1)) : 3;
      return SPARK_CHARS[Math.min(SPARK_CHARS.length - 1, Math.max(0, k))]!;
    })
    .join('');
}

/** A text progress bar `████░░░░` of `width` cells with eighth-cell resolution. */
export function progressBar(fraction: number, width = 30): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const eighths = Math.round(f * width * 8);
  const full = Math.floor(eighths / 8);
  const rem = eighths % 8;
  const partial = rem > 0 ? ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'][rem]! : '';
  const used = full + (partial ? 1 : 0);
  return '█'.repeat(full) + partial + '░'.repeat(Math.max(0, width - used));
}

/** `12.5%` */
export function formatPercent(fraction: number): string {
  if (!Number.isFinite(fraction)) return '?%';
  return `${(Math.min(1, Math.max(0, fraction)) * 100).toFixed(1)}%`;
}

/** Short rendering of a parameter value for tables: numbers compact, strings bare, objects as JSON. */
export function formatParamValue(v: unknown): string {
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return formatSci(v, 2).replace(/\.?0+e/, 'e');
    return String(Number(v.toPrecision(4)));
  }
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return String(v);
  return JSON.stringify(v);
}

/** Remove ANSI escape sequences (used by tests and as a safety net for plain output). */
export function stripAnsi(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001B\[[0-9;?]*[ -/]*[@-~]|\u001B\][^\u0007]*\u0007/g, '');
}

/** `val_top1 71.23 val_top5 90.10` — metric values with 4 significant digits, in the given key order. */
export function formatMetrics(values: Record<string, number>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k} ${Number.isFinite(v) ? (Math.abs(v) >= 1e-3 || v === 0 ? String(Number(v.toPrecision(4))) : v.toExponential(2)) : String(v)}`)
    .join(' ');
}

/** "64 steps = 2 epochs × 32 steps", "80 steps = 2 epochs × 32 steps + 16 steps of epoch 3", "5 steps of a 32-step epoch". */
export function formatRunLength(totalSteps: number, stepsPerEpoch: number): string {
  const spe = Math.max(1, stepsPerEpoch);
  const full = Math.floor(totalSteps / spe);
  const rest = totalSteps % spe;
  const steps = (n: number) => `${n} step${n === 1 ? '' : 's'}`;
  if (full === 0) return `${steps(totalSteps)} of a ${spe}-step epoch`;
  const head = `${steps(totalSteps)} = ${full} epoch${full === 1 ? '' : 's'} × ${steps(spe)}`;
  return rest === 0 ? head : `${head} + ${steps(rest)} of epoch ${full + 1}`;
}
