/**
 * Metric curves as an SVG (axes, ticks, a legend with run names, one polyline per run), rendered to PNG with sharp.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { atomicWriteFile } from '../util/atomic.js';

export interface Series {
  name: string;
  /** [step, value] points; non-finite values are left out (they break the line). */
  points: Array<[number, number]>;
}

export interface PlotOptions {
  title: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  /** Log-scale y axis (positive values only). */
  logY?: boolean;
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** "Nice" tick positions covering [lo, hi] (1-2-5 steps). */
export function niceTicks(lo: number, hi: number, target = 6, integer = false): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / Math.max(1, target - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const ticks: number[] = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1]! < hi) ticks.push(Number((ticks[ticks.length - 1]! + step).toPrecision(12)));
  return ticks;
}

function fmtTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}

/** Down-sample a long series to about `max` points, keeping each bucket's min and max (the shape survives). */
function decimate(points: Array<[number, number]>, max = 1500): Array<[number, number]> {
  if (points.length <= max) return points;
  const bucket = Math.ceil(points.length / (max / 2));
  const out: Array<[number, number]> = [];
  for (let i = 0; i < points.length; i += bucket) {
    const b = points.slice(i, i + bucket);
    let lo = b[0]!;
    let hi = b[0]!;
    for (const p of b) {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    if (lo[0] <= hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  }
  return out;
}

export function buildCurvesSvg(series: Series[], o: PlotOptions): string {
  const W = o.width ?? 960;
  const H = o.height ?? 560;
  const legendW = Math.min(280, 40 + Math.max(0, ...series.map((s) => s.name.length)) * 7.2);
  const m = { l: 78, r: legendW + 20, t: 46, b: 58 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const tfY = (v: number) => (o.logY ? Math.log10(v) : v);
  const clean = series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0)).sort((a, b) => a[0] - b[0]) }));
  const all = clean.flatMap((s) => s.points);
  let x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  let y0 = Math.min(...all.map((p) => tfY(p[1])));
  let y1 = Math.max(...all.map((p) => tfY(p[1])));
  if (!all.length) {
    x0 = 0;
    x1 = 1;
    y0 = 0;
    y1 = 1;
  }
  const xt = niceTicks(x0, x1, 6, all.every((p) => Number.isInteger(p[0])));
  const yt = niceTicks(y0, y1);
  if (xt.length) {
    x0 = Math.min(x0, xt[0]!);
    x1 = Math.max(x1, xt[xt.length - 1]!);
  }
  if (yt.length) {
    y0 = Math.min(y0, yt[0]!);
    y1 = Math.max(y1, yt[yt.length - 1]!);
  }
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0 || 1)) * pw;
  const sy = (y: number) => m.t + ph - ((tfY(y) - y0) / (y1 - y0 || 1)) * ph;
  const syRaw = (t: number) => m.t + ph - ((t - y0) / (y1 - y0 || 1)) * ph;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="28" font-size="17" text-anchor="middle" fill="#222">${esc(o.title)}</text>`);
  // grid + ticks
  for (const t of xt) {
    const x = sx(t).toFixed(1);
    parts.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}" stroke="#e6e6e6"/>`);
    parts.push(`<line x1="${x}" y1="${m.t + ph}" x2="${x}" y2="${m.t + ph + 5}" stroke="#444"/>`);
    parts.push(`<text x="${x}" y="${m.t + ph + 20}" font-size="12" text-anchor="middle" fill="#333">${esc(fmtTick(t))}</text>`);
  }
  for (const t of yt) {
    const y = syRaw(t).toFixed(1);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${m.l + pw}" y2="${y}" stroke="#e6e6e6"/>`);
    parts.push(`<line x1="${m.l - 5}" y1="${y}" x2="${m.l}" y2="${y}" stroke="#444"/>`);
    parts.push(`<text x="${m.l - 8}" y="${y}" dy="4" font-size="12" text-anchor="end" fill="#333">${esc(o.logY ? fmtTick(10 ** t) : fmtTick(t))}</text>`);
  }
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${H - 14}" font-size="13" text-anchor="middle" fill="#222">${esc(o.xLabel ?? 'step')}</text>`);
  parts.push(`<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" font-size="13" text-anchor="middle" fill="#222">${esc(o.yLabel ?? '')}</text>`);
  // curves
  clean.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const pts = decimate(s.points);
    if (pts.length === 1) {
      parts.push(`<circle class="point" cx="${sx(pts[0]![0]).toFixed(1)}" cy="${sy(pts[0]![1]).toFixed(1)}" r="3" fill="${color}"/>`);
    } else if (pts.length > 1) {
      const d = pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
      parts.push(`<polyline class="curve" fill="none" stroke="${color}" stroke-width="1.8" stroke-linejoin="round" points="${d}"/>`);
    }
  });
  // legend
  const lx = m.l + pw + 16;
  clean.forEach((s, i) => {
    const y = m.t + 10 + i * 20;
    const color = PALETTE[i % PALETTE.length]!;
    parts.push(`<line x1="${lx}" y1="${y}" x2="${lx + 22}" y2="${y}" stroke="${color}" stroke-width="3"/>`);
    const label = s.name.length > 34 ? `${s.name.slice(0, 33)}…` : s.name;
    parts.push(`<text class="legend" x="${lx + 28}" y="${y + 4}" font-size="12" fill="#222">${esc(label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/** Write the plot atomically: `.svg` as is, anything else as PNG (sharp). */
export async function writePlot(file: string, svg: string): Promise<void> {
  await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  if (file.toLowerCase().endsWith('.svg')) {
    await atomicWriteFile(file, svg);
    return;
  }
  const sharp = (await import('sharp')).default;
  await atomicWriteFile(file, await sharp(Buffer.from(svg)).png().toBuffer());
}
