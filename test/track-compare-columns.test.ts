/**
 * `spark compare` on runs that log many params and metrics (as spark runs do): the text table shows what tells the
 * runs apart and fits the width, says what it left out; `--columns +…` / `all` bring columns back; csv keeps all.
 * `--plot` writes only where `--out` says.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCompare, tableWidth } from '../src/cli/commands/compare.js';
import { referencedColumns } from '../src/track/compare.js';
import { FileStore } from '../src/track/filestore.js';
import { UsageError } from '../src/util/errors.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-compare-cols-'));
const root = path.join(dir, 'mlruns');
const METRICS = ['epoch', 'epoch_loss', 'epoch_min_loss', 'epoch_seconds', 'grad_norm', 'img_per_sec', 'loss', 'lr', 'recon_loss', 'wd'];

before(async () => {
  const store = new FileStore(root);
  const exp = await store.createExperiment('many');
  for (let i = 0; i < 3; i++) {
    const run = await store.createRun({ experimentId: exp, runName: `run-${i}`, startTime: 1_800_000_000_000 + i * 1000, userId: 'u', tags: {} });
    const params: Record<string, string> = {};
    // 40 params the same in every run, two that differ
    for (let k = 0; k < 40; k++) params[`section${k % 5}.constant_setting_${k}`] = String(k);
    params['model.mask_ratio'] = ['0.4', '0.6', '0.75'][i]!;
    params['train.optimizer.base_lr'] = ['0.0002', '0.0004', '0.0002'][i]!;
    await store.logParams(run.runId, params);
    const value = (m: string): number => (m === 'lr' ? 1e-6 : m === 'wd' ? 0.2 : m === 'epoch' ? 3 : 1 + 0.123456 * i + METRICS.indexOf(m) / 7);
    await store.logMetrics(run.runId, METRICS.map((m) => ({ key: m, value: value(m), timestamp: 1_800_000_000_000, step: 10 })));
    await store.setTerminated(run.runId, 'FINISHED', 1_800_000_000_000 + i * 1000 + 65_000);
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function compare(args: string[], width?: number): Promise<string> {
  let s = '';
  const code = await runCompare(['--uri', root, '-e', 'many', ...args], (x) => (s += x), { ...(width ? { width } : {}), log: () => {} });
  assert.equal(code, 0);
  return s;
}

const header = (table: string): string[] => table.split('\n')[0]!.split(/\s{2,}/);

test('the table shows the params that differ, the metrics that differ, status and duration, within the width', async () => {
  const wide = await compare([], 400);
  assert.deepEqual(header(wide), [
    'run',
    'params.model.mask_ratio',
    'params.train.optimizer.base_lr',
    ...METRICS.filter((m) => !['epoch', 'lr', 'wd'].includes(m)).map((m) => `metrics.${m}`),
    'status',
    'duration',
  ]);
  assert.match(wide, /^not shown, the same in every run: metrics\.epoch, metrics\.lr, metrics\.wd$/m);
  for (const width of [120, 80]) {
    const t = await compare([], width);
    // the table, and the notes under it, fit the width
    for (const l of t.trimEnd().split('\n')) assert.ok(l.length <= width, `${l.length} > ${width}: ${l}`);
    const h = header(t);
    assert.deepEqual(h.slice(0, 1), ['run']);
    assert.deepEqual(h.slice(-2), ['status', 'duration']);
    assert.ok(h.includes('metrics.loss'), 'the headline loss stays');
    assert.ok(h.includes('params.model.mask_ratio'), 'a varying param outlives the extra metrics');
    assert.ok(!h.some((c) => c.includes('constant_setting')), 'constant params are not shown');
    const widthNote = new RegExp(`^not shown, beyond ${width} characters: (.+)$`, 'm').exec(t);
    assert.ok(widthNote, t);
    const first = widthNote[1]!.split(', ')[0]!;
    assert.ok(
      t.includes(`\n--columns +${first} adds a column, --columns all shows every one\n`) || t.includes('\n--columns +<column> adds one, --columns all shows every one\n'),
      t,
    );
  }
  // the columns a filter or order-by names stay, however narrow
  const ordered = await compare(['--order-by', 'metrics.epoch_seconds DESC', '--filter', "params.`train.optimizer.base_lr` = '0.0002'"], 80);
  assert.ok(header(ordered).includes('metrics.epoch_seconds'), ordered);
  assert.ok(header(ordered).includes('params.train.optimizer.base_lr'), ordered);
});

test('--columns +a adds to the defaults, all shows every column, a list shows exactly it; csv keeps every metric', async () => {
  const plus = header(await compare(['--columns', '+metrics.lr,params.section0.constant_setting_0'], 200));
  assert.ok(plus.includes('metrics.lr') && plus.includes('params.section0.constant_setting_0'), plus.join(' '));
  assert.ok(plus.indexOf('params.section0.constant_setting_0') < plus.indexOf('metrics.loss'), 'params before metrics');
  const all = header(await compare(['--columns', 'all'], 80));
  assert.equal(all.length, 1 + 42 + METRICS.length + 2);
  assert.deepEqual(header(await compare(['--columns', 'run,metrics.lr'], 80)), ['run', 'metrics.lr']);
  const csvHead = (await compare(['--format', 'csv'])).split('\n')[0]!.split(',');
  for (const m of METRICS) assert.ok(csvHead.includes(`metrics.${m}`), `csv has metrics.${m}`);
});

test('referenced columns and the table width', () => {
  assert.deepEqual(referencedColumns(["metrics.`train/loss` < 1 and params.\"model.mask_ratio\" = '0.6'", 'metric.lr DESC', 'tags.team']), [
    'metrics.train/loss',
    'params.model.mask_ratio',
    'metrics.lr',
    'tags.team',
  ]);
  assert.equal(tableWidth({}, { isTTY: true, columns: 93 }), 93);
  assert.equal(tableWidth({ COLUMNS: '101' }, { isTTY: false }), 101);
  assert.equal(tableWidth({}, { isTTY: false }), 120);
});

test('--plot writes only where --out says: a .png/.svg file or <experiment>-<metric>.png in a folder', async () => {
  const before = readdirSync(process.cwd());
  await assert.rejects(() => compare(['--plot', 'metrics.loss']), (e: unknown) => e instanceof UsageError && /--plot needs --out/.test(e.message));
  await assert.rejects(() => compare(['--plot', 'loss', '--out', path.join(dir, 'x.jpg')]), (e: unknown) => e instanceof UsageError && /must end in \.png or \.svg/.test(e.message));
  assert.deepEqual(readdirSync(process.cwd()), before, 'nothing written in the working directory');
  assert.equal(existsSync(path.join(dir, 'x.jpg')), false);
  const plots = path.join(dir, 'plots');
  await compare(['--plot', 'metrics.loss', '--out', plots + '.svg']);
  assert.match(readFileSync(plots + '.svg', 'utf8'), /^<svg/);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(plots);
  await compare(['--plot', 'metrics.loss', '--out', plots]);
  assert.deepEqual(readdirSync(plots), ['many-loss.png']);
  assert.deepEqual([...readFileSync(path.join(plots, 'many-loss.png')).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
});
