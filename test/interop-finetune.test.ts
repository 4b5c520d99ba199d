/**
 * The reference fine-tuning recipe pieces of `spark finetune` (spec §7.4, §7.5): the `finetune:` options and their
 * defaults.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { resolveConfig } from '../src/spec/index.js';
import { schemasDir } from '../src/util/paths.js';
import { FINETUNE_DEFAULTS, finetuneSection } from '../src/interop/finetune-config.js';

test('finetune schema: every option is described and its defaults are FINETUNE_DEFAULTS (the reference recipe)', () => {
  const schema = JSON.parse(readFileSync(path.join(schemasDir(), 'finetune.schema.json'), 'utf8')) as { properties: Record<string, { description?: string; default?: unknown; properties?: Record<string, { description?: string }> }> };
  for (const [k, p] of Object.entries(schema.properties)) {
    assert.ok((p.description ?? '').length > 20, `finetune.${k} has a description`);
    for (const [k2, p2] of Object.entries(p.properties ?? {})) assert.ok((p2.description ?? '').length > 10, `finetune.${k}.${k2} has a description`);
  }
  assert.deepEqual(Object.keys(schema.properties).sort(), Object.keys(FINETUNE_DEFAULTS).sort());
  const c = resolveConfig({ name: 'x', task: 'finetune', finetune: {} }, { file: 'x.yaml' });
  assert.deepEqual(c.finetune, FINETUNE_DEFAULTS, 'schema defaults = code defaults');
  assert.deepEqual(finetuneSection(c), FINETUNE_DEFAULTS);
  assert.equal(FINETUNE_DEFAULTS.auto_augment, 'trivial_augment_wide');
  assert.equal(FINETUNE_DEFAULTS.random_erasing, 0.25);
  const off = resolveConfig({ name: 'x', task: 'finetune', finetune: { auto_augment: null } }, { file: 'x.yaml' });
  assert.equal(finetuneSection(off).auto_augment, null);
  assert.throws(() => resolveConfig({ name: 'x', task: 'finetune', finetune: { auto_augment: 'v0' } }, { file: 'x.yaml' }));
});
