/** `spark validate`: ok lines, located errors, exit codes (0 all valid, 2 otherwise). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import validate from '../src/cli/commands/validate.js';
import { UsageError } from '../src/util/errors.js';
import { packageRoot } from '../src/util/paths.js';

const ROOT = packageRoot();
const FIX = path.join(ROOT, 'test', 'fixtures', 'specs');

/** Run the command function with stdout/stderr captured. */
async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string | Uint8Array) => ((out += String(s)), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array) => ((err += String(s)), true)) as typeof process.stderr.write;
  try {
    const code = await validate(argv);
    return { code, out, err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

test('valid specs: `ok <file>` each, exit 0', async () => {
  const a = path.join(FIX, 'good_minimal.yaml');
  const b = path.join(FIX, 'extends', 'child.yaml');
  const r = await run([a, b]);
  assert.equal(r.code, 0);
  assert.equal(r.out, `ok ${a}\nok ${b}\n`);
  assert.equal(r.err, '');
});

test('an invalid spec among valid ones: its located error, the others still checked, exit 2', async () => {
  const good = path.join(FIX, 'good_minimal.yaml');
  const bad = path.join(FIX, 'bad_range.yaml');
  const r = await run([bad, good]);
  assert.equal(r.code, 2);
  assert.equal(r.out, `ok ${good}\n`);
  const lines = r.err.split('\n');
  assert.equal(lines[0], `${bad}:4:15: model.mask_ratio must be < 1 (got 1.5)`);
  assert.equal(lines[1], ' 4 |   mask_ratio: 1.5');
  assert.equal(lines[2], '   |               ^^^');
});

test('--set applies to every spec and a bad override fails with exit 2', async () => {
  const good = path.join(FIX, 'good_minimal.yaml');
  const r = await run([good, '--set', 'model.mask_ratio=0.75', '--print']);
  assert.equal(r.code, 0);
  assert.match(r.out, /mask_ratio: 0\.75/);
  const bad = await run([good, '--set', 'model.mask_ratio=1.5']);
  assert.equal(bad.code, 2);
  assert.equal(bad.err.trim(), '--set model.mask_ratio=1.5: must be < 1');
  const unknown = await run([good, '--set=model.mask_raito=0.5']);
  assert.equal(unknown.code, 2);
  assert.equal(unknown.err.trim(), "--set model.mask_raito=0.5: unknown key 'mask_raito' in model (did you mean 'mask_ratio'?)");
});

test('usage errors: no spec, unknown option', async () => {
  await assert.rejects(run([]), UsageError);
  await assert.rejects(run(['--frobnicate', 'x.yaml']), UsageError);
  const help = await run(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.out, /usage: spark validate/);
});

test('the spark binary: `spark validate` exits 2 on a bad spec and 0 on a good one', () => {
  const here = fileURLToPath(import.meta.url);
  const compiled = here.endsWith('.js');
  const main = path.join(path.dirname(here), '..', 'src', 'cli', compiled ? 'main.js' : 'main.ts');
  const node = (args: string[]) =>
    spawnSync(process.execPath, [...(compiled ? [] : ['--import', 'tsx']), main, 'validate', ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    });
  const bad = node([path.join('test', 'fixtures', 'specs', 'bad_unknown_key.yaml')]);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /^test\/fixtures\/specs\/bad_unknown_key\.yaml:4:3: unknown key 'mask_raito' in model \(did you mean 'mask_ratio'\?\)/);
  const good = node([path.join('experiments', 'quickstart.yaml')]);
  assert.equal(good.status, 0, good.stderr);
  assert.equal(good.stdout, 'ok experiments/quickstart.yaml\n');
});
