/** `spark import | export | probe` through the real CLI entry point (exit codes, output, files). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mkdtempSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { writeSyntheticFolder } from '../src/data/index.js';
import { packageRoot } from '../src/util/paths.js';

const ROOT = packageRoot();
const FIX = path.join(ROOT, 'test', 'fixtures', 'interop');
const here = path.dirname(fileURLToPath(import.meta.url));
const compiled = here.includes(`${path.sep}dist${path.sep}`);

function spark(args: string[], cwd = ROOT): { code: number; out: string; err: string } {
  const main = path.join(here, '..', 'src', 'cli', compiled ? 'main.js' : 'main.ts');
  const r = spawnSync(process.execPath, [...(compiled ? [] : ['--import', pathToFileURL(path.join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href]), main, ...args], { cwd, encoding: 'utf8', timeout: 300_000, env: { ...process.env, CI: 'true' } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

test('spark import: a hostile file is refused with one clear line and exit 2, nothing written', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-icli-'));
  const r = spark(['import', path.join(FIX, 'hostile_global.pth'), '--out', path.join(dir, 'x')]);
  assert.equal(r.code, 2);
  assert.match(r.err, /^spark: .*hostile_global\.pth: refusing global '(posix|os)\.system'/);
  assert.equal(r.err.trim().split('\n').length, 1);
  assert.ok(!existsSync(path.join(dir, 'x')));
  assert.equal(spark(['import', path.join(FIX, 'resnet_timm_style.pth')]).code, 2, '--out is required');
});

test('spark import → export → probe --compare-random from a spec', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-icli-'));
  const imp = spark(['import', path.join(FIX, 'convnext_official_style.pth'), '--out', path.join(dir, 'cnx')]);
  assert.equal(imp.code, 0, imp.err);
  assert.match(imp.out, /layout +encoder/);
  const ex = spark(['export', path.join(dir, 'cnx'), '--format', 'safetensors', '--keys', 'timm']);
  assert.equal(ex.code, 0, ex.err);
  assert.ok(existsSync(path.join(dir, 'cnx', 'export', 'encoder.safetensors')));
  await writeSyntheticFolder(path.join(dir, 'train'), { classes: 3, perClass: 4, size: 32, seed: 1 });
  await writeSyntheticFolder(path.join(dir, 'val'), { classes: 3, perClass: 2, size: 32, seed: 2 });
  const spec = path.join(dir, 'probe.yaml');
  writeFileSync(
    spec,
    [
      'name: cli-probe',
      'task: probe',
      'model: {encoder: convnext_mini}',
      'data: {source: imagefolder, root: train, val_root: val, input_size: 32, workers: 0}',
      'train: {batch_size: 4}',
      'output: {dir: runs}',
      'tracking: {uri: mlruns, experiment: probe}',
      'finetune: {init: cnx, probe: {epochs: 3}}',
      '',
    ].join('\n'),
  );
  const p = spark(['probe', spec, '--compare-random', '--json'], dir);
  assert.equal(p.code, 0, p.err);
  const res = JSON.parse(p.out) as Array<{ init: string | null; top1: number; numClasses: number; encoder: string }>;
  assert.equal(res.length, 2);
  assert.equal(res[0]!.init, path.join(dir, 'cnx'), 'finetune.init is resolved against the spec folder');
  assert.equal(res[1]!.init, null);
  assert.equal(res[0]!.numClasses, 3);
  assert.match(res[0]!.encoder, /^convnext\(depths=\[1,1,1,1\]/, 'the encoder comes from the imported weights');
  const bad = spark(['probe', spec, '--init', 'x', '--random'], dir);
  assert.equal(bad.code, 2);
});

test('spark dataset textures: writes train/ and val/ class folders atomically; bad input exits 2 and writes nothing', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-dcli-'));
  const out = path.join(dir, 'tex');
  const r = spark(['dataset', 'textures', '--out', out, '--classes', '3', '--train', '2', '--val', '1', '--size', '32']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /wrote 9 images of 32 px, 3 classes \(textures, grey\)/);
  assert.deepEqual(readdirSync(out).sort(), ['train', 'val']);
  assert.deepEqual(readdirSync(path.join(out, 'train')).sort(), ['class_00', 'class_01', 'class_02']);
  assert.equal(readdirSync(path.join(out, 'train', 'class_01')).length, 2);
  assert.equal(readdirSync(path.join(out, 'val', 'class_02')).length, 1);
  // an existing folder is not overwritten without --force
  const again = spark(['dataset', 'textures', '--out', out]);
  assert.equal(again.code, 2);
  assert.match(again.err, /already exists \(pass --force to replace it\)/);
  for (const bad of [['dataset', 'cats', '--out', path.join(dir, 'a')], ['dataset', 'textures', '--out', path.join(dir, 'b'), '--classes', '99'], ['dataset', 'textures', '--out', path.join(dir, 'c'), '--palette', 'sepia'], ['dataset', 'shapes']]) {
    const b = spark(bad);
    assert.equal(b.code, 2, `${bad.join(' ')}: ${b.err}`);
    assert.equal(b.err.trim().split('\n').length, 1, b.err);
  }
  assert.deepEqual(readdirSync(dir).sort(), ['tex'], 'nothing else was written (no partial folders)');
  const shapes = spark(['dataset', 'shapes', '--out', path.join(dir, 'sh'), '--classes', '4', '--train', '1', '--val', '1', '--size', '32']);
  assert.equal(shapes.code, 0, shapes.err);
  assert.equal(readdirSync(path.join(dir, 'sh', 'val')).length, 4);
});

test('spark probe --sweep: every finished trial probed with its own encoder, ranked, and probe_top1 logged to the trial runs', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-psweep-'));
  const mlruns = path.join(dir, 'mlruns');
  writeFileSync(
    path.join(dir, 'pre.yaml'),
    [
      'name: tiny_sweep',
      'model: {encoder: resnet_mini, decoder: {type: light, width: 32}, mask_ratio: 0.6}',
      'data: {source: synthetic, synthetic_size: 16, input_size: 64, workers: 0}',
      'train: {steps: 3, batch_size: 4, warmup_steps: 1}',
      'runtime: {backend: auto, seed: 0}',
      `output: {dir: ${JSON.stringify(path.join(dir, 'runs'))}, checkpoint_every: 0, reconstruct_every: 0}`,
      `tracking: {uri: ${JSON.stringify(mlruns)}, experiment: tiny-sweep}`,
    ].join('\n'),
  );
  const sw = spark(['run', path.join(dir, 'pre.yaml'), '--plain', '--sweep', 'model.mask_ratio=0.5,0.75']);
  assert.equal(sw.code, 0, sw.err);
  const sweepDir = path.join(dir, 'runs', 'tiny_sweep', readdirSync(path.join(dir, 'runs', 'tiny_sweep')).find((n) => n.startsWith('sweep-'))!);
  await writeSyntheticFolder(path.join(dir, 'train'), { classes: 3, perClass: 4, size: 32, seed: 1 });
  await writeSyntheticFolder(path.join(dir, 'val'), { classes: 3, perClass: 2, size: 32, seed: 2 });
  const spec = path.join(dir, 'probe.yaml');
  writeFileSync(
    spec,
    [
      'name: tiny_probe',
      'task: probe',
      'model: {encoder: resnet_mini}',
      `data: {source: imagefolder, root: ${JSON.stringify(path.join(dir, 'train'))}, val_root: ${JSON.stringify(path.join(dir, 'val'))}, input_size: 64, workers: 0}`,
      'train: {batch_size: 8}',
      'finetune: {probe: {epochs: 5}}',
      `output: {dir: ${JSON.stringify(path.join(dir, 'runs'))}}`,
      `tracking: {uri: ${JSON.stringify(mlruns)}, experiment: tiny-probe}`,
    ].join('\n'),
  );
  const p = spark(['probe', spec, '--sweep', sweepDir, '--compare-random', '--json']);
  assert.equal(p.code, 0, p.err);
  const out = JSON.parse(p.out) as { rows: Array<{ trial: number; params: Record<string, string>; loggedToTrial: boolean; probe: { top1: number; init: string; status: string } }>; random: { top1: number; init: null } };
  assert.deepEqual(out.rows.map((r) => [r.trial, r.params['model.mask_ratio']]), [[0, '0.5'], [1, '0.75']]);
  assert.equal(out.random.init, null);
  const { openStore } = await import('../src/track/index.js');
  const { readSweep } = await import('../src/sweep/state.js');
  const store = openStore(mlruns);
  const sweep = await readSweep(sweepDir);
  for (const r of out.rows) {
    assert.equal(r.probe.status, 'FINISHED');
    assert.equal(r.probe.init, path.join(sweepDir, 'trials', String(r.trial).padStart(3, '0'), 'run'), 'each trial is probed from its own run folder');
    assert.equal(r.loggedToTrial, true);
    const run = await store.getRun(sweep.trials[r.trial]!.mlflowRunId!);
    assert.equal(run.data.metrics['probe_top1'], r.probe.top1, 'probe_top1 is in the trial run');
  }
  // the human table ranks the trials by probe top-1 and ends with the random baseline
  const table = spark(['probe', spec, '--sweep', sweepDir, '--plain']);
  assert.equal(table.code, 0, table.err);
  assert.match(table.out, /linear probe of sweep tiny_sweep \(2 of 2 trials\), resnet_mini, 3 classes/);
  // bad input: exit 2, one line
  for (const bad of [['probe', spec, '--sweep', sweepDir, '--random'], ['probe', spec, '--sweep', path.join(dir, 'train')], ['finetune', spec, '--sweep', sweepDir]]) {
    const b = spark(bad);
    assert.equal(b.code, 2, `${bad.join(' ')}: ${b.err}`);
    assert.equal(b.err.trim().split('\n').length, 1, b.err);
  }
});

test('an unknown option is a one-line usage error (exit 2) naming the command’s --help, for every command built on parseCommandArgs', () => {
  for (const argv of [['dataset', 'textures', '--bogus'], ['export', 'x', '--bogus'], ['import', 'x.pth', '--bogus'], ['probe', 'x.yaml', '--bogus'], ['finetune', 'x.yaml', '--bogus'], ['sweep', 'status', 'x', '--bogus'], ['sync', '--bogus']]) {
    const r = spark(argv);
    assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`);
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    assert.match(r.err, new RegExp(`^spark: Unknown option '--bogus'.*\\(see \`spark ${argv[0]} --help\`\\)$`, 'm'));
  }
});
