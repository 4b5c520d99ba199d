/** `spark compare`: grouping, varying params, formats, filters (local and on a server), usage errors, plots. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { runCompare } from '../src/cli/commands/compare.js';
import { niceTicks, buildCurvesSvg } from '../src/track/plot.js';
import { UsageError } from '../src/util/errors.js';
import { copyGoldenStore, startMlflowServer, GOLDEN_PARENT, GOLDEN_RUNS } from './helpers/mlflow-server.js';

let root = '';
const out = mkdtempSync(path.join(os.tmpdir(), 'spark-compare-'));

before(async () => {
  root = await copyGoldenStore(true);
});
after(() => {
  if (root) rmSync(path.dirname(root), { recursive: true, force: true });
  rmSync(out, { recursive: true, force: true });
});

async function compare(args: string[]): Promise<string> {
  let s = '';
  const code = await runCompare(args, (x) => (s += x));
  assert.equal(code, 0);
  return s;
}

function parseCsv(text: string): Array<Record<string, string>> {
  const [head, ...rows] = text.trimEnd().split('\n');
  const cols = head!.split(',');
  return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i]!, v])));
}

test('csv: children grouped under their parent, varying params first, latest metrics, status, duration', async () => {
  const rows = parseCsv(await compare(['--uri', root, '-e', 'sweep-demo', '--format', 'csv']));
  assert.deepEqual(Object.keys(rows[0]!), ['run_id', 'parent_run_id', 'run', 'params.mask_ratio', 'metrics.best_loss', 'metrics.train/loss', 'metrics.val_acc', 'status', 'duration']);
  assert.deepEqual(rows.map((r) => r['run']), ['sweep-parent', 'mr=0.75', 'mr=0.6', 'mr=0.4']);
  assert.equal(rows[0]!['run_id'], GOLDEN_PARENT);
  assert.ok(rows.slice(1).every((r) => r['parent_run_id'] === GOLDEN_PARENT), 'rows.slice(1).every((r) => r[\'parent_run_id\'] === GOLDEN_PARENT)');
  const r04 = rows.find((r) => r['run'] === 'mr=0.4')!;
  assert.equal(r04['run_id'], GOLDEN_RUNS['mr=0.4']);
  assert.equal(r04['params.mask_ratio'], '0.4');
  assert.equal(r04['metrics.train/loss'], '0.7333333333333334');
  assert.equal(r04['metrics.val_acc'], 'nan');
  assert.equal(r04['status'], 'FINISHED');
  assert.equal(r04['duration'], '0.011');
  assert.equal(rows[0]!['metrics.best_loss'], '0.73');
});

test('order-by and filter; a parent left out by the filter is still shown (marked) above its children', async () => {
  const rows = parseCsv(await compare(['--uri', root, '-e', 'sweep-demo', '--format', 'csv', '--order-by', 'metrics.`train/loss` ASC', '--columns', 'run,params.mask_ratio']));
  assert.deepEqual(rows.map((r) => r['run']), ['sweep-parent', 'mr=0.4', 'mr=0.6', 'mr=0.75']);
  const json = JSON.parse(await compare(['--uri', root, '-e', 'sweep-demo', '--format', 'json', '--filter', "params.mask_ratio LIKE '0.%' and metrics.`train/loss` < 1"])) as {
    runs: Array<{ run: string; matched: boolean; depth: number; 'metrics.train/loss': number | null }>;
    columns: string[];
  };
  assert.deepEqual(json.runs.map((r) => [r.run, r.matched, r.depth]), [
    ['sweep-parent', false, 0],
    ['mr=0.6', true, 1],
    ['mr=0.4', true, 1],
  ]);
  assert.equal(json.runs[1]!['metrics.train/loss'], 0.9333333333333333);
  const table = await compare(['--uri', root, '-e', 'sweep-demo', '--filter', "params.mask_ratio = '0.6'"]);
  assert.match(table, /^sweep-parent \(parent\)/m);
  assert.match(table, /^└ mr=0\.6 /m);
  assert.match(table, /1 run\(s\) in experiment 'sweep-demo'/);
});

test('table and markdown formats', async () => {
  // val_acc is nan in every run: the table leaves it out and says so; --columns +metrics.val_acc brings it back
  const table = await compare(['--uri', root, '-e', 'sweep-demo']);
  const lines = table.split('\n');
  assert.match(lines[0]!, /^run\s+params\.mask_ratio\s+metrics\.best_loss\s+metrics\.train\/loss\s+status\s+duration$/);
  assert.match(lines[1]!, /^─+( +─+)+$/);
  assert.match(table, /└ mr=0\.75\s+0\.75\s+1\.1333\s+FINISHED\s+0\.0s/);
  assert.match(table, /^not shown, the same in every run: metrics\.val_acc$/m);
  const plus = await compare(['--uri', root, '-e', 'sweep-demo', '--columns', '+metrics.val_acc']);
  assert.match(plus.split('\n')[0]!, /^run\s+params\.mask_ratio\s+metrics\.best_loss\s+metrics\.train\/loss\s+metrics\.val_acc\s+status\s+duration$/);
  assert.match(plus, /└ mr=0\.75\s+0\.75\s+1\.1333\s+nan\s+FINISHED\s+0\.0s/);
  assert.doesNotMatch(plus, /not shown/);
  const md = (await compare(['--uri', root, '-e', 'sweep-demo', '--format', 'markdown'])).trimEnd().split('\n');
  assert.equal(md.length, 2 + 4);
  assert.equal(md[0], '| run | params.mask_ratio | metrics.best_loss | metrics.train/loss | metrics.val_acc | status | duration |');
  assert.equal(md[1], '|---|---|---:|---:|---:|---|---:|');
  for (const l of [md[0]!, ...md.slice(2)]) assert.equal(l.split(' | ').length, 7, l);
  assert.ok(md.every((l) => l.startsWith('|') && l.endsWith('|')), 'every line is a table row');
});

test('against a server: the filter and order_by are passed to runs/search', async () => {
  const srv = await startMlflowServer({ storeRoot: root });
  try {
    const rows = parseCsv(await compare(['--uri', srv.url, '-e', 'sweep-demo', '--format', 'csv', '--filter', "params.mask_ratio != '0.6'", '--order-by', 'params.mask_ratio DESC']));
    assert.deepEqual(rows.map((r) => r['run']), ['sweep-parent', 'mr=0.75', 'mr=0.4']);
    const search = srv.requests.find((r) => r.path.endsWith('/runs/search'))!;
    assert.deepEqual((search.body as { filter: string; order_by: string[] }).filter, "params.mask_ratio != '0.6'");
    assert.deepEqual((search.body as { order_by: string[] }).order_by, ['params.mask_ratio DESC']);
    assert.ok(srv.requests.some((r) => r.path.endsWith('/runs/get') && r.query['run_id'] === GOLDEN_PARENT), 'parent fetched');
    await assert.rejects(() => compare(['--uri', srv.url, '-e', 'sweep-demo', '--filter', 'params.mask_ratio = 0.6']), (e: unknown) => e instanceof UsageError && /Expected a quoted string value for parameter/.test(e.message));
  } finally {
    await srv.close();
  }
});

test('usage errors are UsageError (exit 2) with one clear line', async () => {
  const bad: Array<[string[], RegExp]> = [
    [['--uri', root], /needs --experiment/],
    [['--uri', root, '-e', 'sweep-demo', '--format', 'xml'], /unknown --format 'xml'/],
    [['--uri', root, '-e', 'nope'], /no experiment named 'nope'.*sweep-demo/],
    [['--uri', root, '-e', 'sweep-demo', '--filter', "a = 'b' OR c = 'd'"], /Invalid clause\(s\) in filter string: 'OR'/],
    [['--uri', root, '-e', 'sweep-demo', '--columns', 'run,bogus'], /unknown column 'bogus'/],
    [['--uri', root, '-e', 'sweep-demo', '--out', 'x.png'], /--out is the file of --plot/],
    [['--bogus'], /Unknown option/],
    [['--uri', root, '-e', 'sweep-demo', '--plot', 'metrics.nope', '--out', path.join(out, 'x.png')], /no shown run has the metric 'nope'/],
  ];
  for (const [args, re] of bad) {
    await assert.rejects(() => compare(args), (e: unknown) => e instanceof UsageError && e.exitCode === 2 && re.test(e.message) && !e.message.includes('\n'), args.join(' '));
  }
});

test('--plot writes the curves of a metric: SVG with one polyline per run and a legend; PNG via sharp', async () => {
  const svgFile = path.join(out, 'curves.svg');
  await compare(['--uri', root, '-e', 'sweep-demo', '--plot', 'metrics.train/loss', '--out', svgFile]);
  const svg = readFileSync(svgFile, 'utf8');
  assert.equal((svg.match(/<polyline class="curve"/g) ?? []).length, 3);
  const legend = [...svg.matchAll(/<text class="legend"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
  assert.deepEqual(legend, ['mr=0.75', 'mr=0.6', 'mr=0.4']);
  assert.match(svg, />train\/loss — sweep-demo</);
  const png = path.join(out, 'curves.png');
  await compare(['--uri', root, '-e', 'sweep-demo', '--plot', 'train/loss', '--out', png]);
  const buf = readFileSync(png);
  assert.deepEqual([...buf.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  const meta = await sharp(png).metadata();
  assert.equal(meta.width, 960);
  assert.equal(meta.height, 560);
  // the curves are drawn: some pixels carry the first palette colour (#1f77b4)
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  let blue = 0;
  for (let i = 0; i < data.length; i += info.channels) if (Math.abs(data[i]! - 0x1f) < 8 && Math.abs(data[i + 1]! - 0x77) < 8 && Math.abs(data[i + 2]! - 0xb4) < 8) blue++;
  assert.ok(blue > 200, `${blue} curve pixels`);
});

test('plot helpers: nice ticks, non-finite points dropped, decimation keeps extremes', () => {
  assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0, 2, 6, true), [0, 1, 2]);
  assert.deepEqual(niceTicks(3, 3).length > 1, true);
  const pts: Array<[number, number]> = Array.from({ length: 10000 }, (_, i) => [i, i === 5000 ? 100 : Math.sin(i / 100)]);
  pts.push([10001, NaN]);
  const svg = buildCurvesSvg([{ name: 'a<b', points: pts }], { title: 't' });
  const poly = /points="([^"]+)"/.exec(svg)![1]!.split(' ');
  assert.ok(poly.length <= 1600, `${poly.length} points after decimation`);
  assert.ok(svg.includes('a&lt;b'), 'svg.includes(\'a&lt;b\')');
  const ys = poly.map((p) => Number(p.split(',')[1]));
  assert.ok(Math.min(...ys) < 60, 'the spike at 100 survives decimation');
});
