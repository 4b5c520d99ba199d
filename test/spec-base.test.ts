/**
 * `spark validate` on base files (partial specs that full specs extend): `experiments/*.yaml` passes with
 * `_base_imagenet.yaml` reported as a base; a base is still checked for everything it can be checked for alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../src/util/paths.js';
import { extendedBy, isBaseName } from '../src/spec/base.js';

const ROOT = packageRoot();
const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

function validate(args: string[], cwd = ROOT): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [MAIN, 'validate', ...args], { cwd, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function withDir(files: Record<string, string>, fn: (dir: string) => void): void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-base-'));
  try {
    for (const [n, text] of Object.entries(files)) writeFileSync(path.join(dir, n), text);
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('spark validate experiments/*.yaml: exit 0, _base_imagenet.yaml reported as a base file extended by the paper specs', () => {
  const files = readdirSync(path.join(ROOT, 'experiments')).filter((f) => f.endsWith('.yaml')).sort().map((f) => path.join('experiments', f));
  assert.ok(files.includes('experiments/_base_imagenet.yaml'));
  const r = validate(files);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.err, '');
  const lines = r.out.trimEnd().split('\n');
  assert.equal(lines.length, files.length);
  const users = extendedBy(files).get(path.join(ROOT, 'experiments', '_base_imagenet.yaml')) ?? [];
  assert.ok(users.includes('experiments/resnet50.yaml') && users.includes('experiments/convnext_l_384.yaml'), users.join(' '));
  assert.equal(lines[0], `ok experiments/_base_imagenet.yaml (base file, not a full spec; extended by ${users.length} of the given specs)`);
  for (const l of lines.slice(1)) assert.match(l, /^ok experiments\/[a-z0-9_]+\.yaml$/);
  // alone, it is recognised by its name
  assert.equal(validate(['experiments/_base_imagenet.yaml']).out, 'ok experiments/_base_imagenet.yaml (base file, not a full spec)\n');
});

test('a base file is still checked: unknown keys, ranges, --set overrides and its own extends chain', () => {
  withDir(
    {
      '_typo.yaml': 'model:\n  mask_raito: 0.6\n',
      '_range.yaml': 'train:\n  batch_size: -3\n',
      '_chain.yaml': 'extends: missing.yaml\nmodel: {mask_ratio: 0.5}\n',
      '_ok.yaml': 'task: pretrain\nmodel: {mask_ratio: 0.5}\n',
    },
    (dir) => {
      let r = validate(['_typo.yaml'], dir);
      assert.equal(r.code, 2);
      assert.match(r.err, /^_typo\.yaml:2:3: unknown key 'mask_raito' in model \(did you mean 'mask_ratio'\?\)/);
      r = validate(['_range.yaml'], dir);
      assert.equal(r.code, 2);
      assert.match(r.err, /^_range\.yaml:2:15: train\.batch_size must be >= 1 \(got -3\)/);
      r = validate(['_chain.yaml'], dir);
      assert.equal(r.code, 2);
      assert.match(r.err, /^_chain\.yaml:1:\d+: .*missing\.yaml/);
      r = validate(['_ok.yaml', '--set', 'model.mask_ratio=2'], dir);
      assert.equal(r.code, 2);
      assert.match(r.err, /^--set model\.mask_ratio=2: must be < 1/);
      assert.equal(r.out, '');
      r = validate(['_ok.yaml', '--set', 'model.mask_ratio=0.75'], dir);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'ok _ok.yaml (base file, not a full spec)\n');
    },
  );
});

test('a spec without a name is a base only when named _… or extended by another given spec; otherwise the error stands', () => {
  withDir(
    {
      'common.yaml': 'task: pretrain\nmodel: {mask_ratio: 0.5}\n',
      'child.yaml': 'extends: common.yaml\nname: child\n',
      'lonely.yaml': 'model: {mask_ratio: 0.5}\n',
    },
    (dir) => {
      let r = validate(['common.yaml', 'child.yaml'], dir);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, 'ok common.yaml (base file, not a full spec; extended by child.yaml)\nok child.yaml\n');
      r = validate(['common.yaml'], dir);
      assert.equal(r.code, 2);
      assert.match(r.err, /^common\.yaml:1:1: missing required field 'name' \(every experiment needs a name\)/);
      r = validate(['lonely.yaml', 'child.yaml'], dir);
      assert.equal(r.code, 2);
      assert.match(r.err, /^lonely\.yaml:1:1: missing required field 'name'/);
      assert.match(r.out, /^ok child\.yaml$/m);
    },
  );
  assert.equal(isBaseName('experiments/_base_imagenet.yaml'), true);
  assert.equal(isBaseName('experiments/my_base.yaml'), false);
});
