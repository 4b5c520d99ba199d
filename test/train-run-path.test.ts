import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { resolveRunPath } from '../src/train/checkpoint.js';

function fakeRun(dir: string, withCheckpoint: boolean): void {
  mkdirSync(path.join(dir, 'checkpoint'), { recursive: true });
  writeFileSync(path.join(dir, 'config.yaml'), 'name: x\n');
  if (withCheckpoint) writeFileSync(path.join(dir, 'checkpoint', 'model.safetensors'), '');
}

test('resolveRunPath: a folder of runs means its newest run with a checkpoint; anything else is unchanged', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'spark-runpath-'));
  const name = path.join(root, 'textures-pretrain');
  fakeRun(path.join(name, '20261120-101500-aaaa'), true);
  fakeRun(path.join(name, '20261126-090000-bbbb'), true);
  fakeRun(path.join(name, '20261126-120000-cccc'), false); // started, no checkpoint yet: skipped
  assert.equal(resolveRunPath(name), path.join(name, '20261126-090000-bbbb'));
  // a run folder, a file and a missing path are returned as given
  assert.equal(resolveRunPath(path.join(name, '20261120-101500-aaaa')), path.join(name, '20261120-101500-aaaa'));
  assert.equal(resolveRunPath(path.join(name, '20261120-101500-aaaa', 'config.yaml')), path.join(name, '20261120-101500-aaaa', 'config.yaml'));
  assert.equal(resolveRunPath(path.join(root, 'nope')), path.join(root, 'nope'));
  // an import folder (encoder.safetensors) is a source itself
  mkdirSync(path.join(root, 'imp'));
  writeFileSync(path.join(root, 'imp', 'encoder.safetensors'), '');
  fakeRun(path.join(root, 'imp', 'sub'), true);
  assert.equal(resolveRunPath(path.join(root, 'imp')), path.join(root, 'imp'));
});
