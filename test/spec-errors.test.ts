/** Every kind of bad spec is refused with a SpecError at the exact `file:line:col` and a clear message. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadExperiment } from '../src/spec/index.js';
import { SpecError } from '../src/util/errors.js';
import { packageRoot } from '../src/util/paths.js';

const FIX = path.join(packageRoot(), 'test', 'fixtures', 'specs');
const fx = (name: string) => path.join(FIX, name);

async function specError(file: string, set?: string[]): Promise<SpecError> {
  try {
    await loadExperiment(file, { set });
  } catch (err) {
    assert.ok(err instanceof SpecError, `expected a SpecError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    return err;
  }
  assert.fail(`${file} was accepted`);
}

interface Case {
  file: string;
  line: number;
  col: number;
  message: RegExp;
  hint?: RegExp;
  /** A fragment the excerpt's source line must contain. */
  source: string;
}

const CASES: Record<string, Case> = {
  'YAML syntax error': { file: 'bad_syntax.yaml', line: 3, col: 15, message: /^YAML syntax error: /, source: 'mask_ratio: 0.6' },
  'wrong type': { file: 'bad_type.yaml', line: 3, col: 15, message: /^train\.batch_size must be an integer \(got the string "lots"\)$/, source: 'batch_size: lots' },
  'out of range': { file: 'bad_range.yaml', line: 4, col: 15, message: /^model\.mask_ratio must be < 1 \(got 1\.5\)$/, source: 'mask_ratio: 1.5' },
  'unknown key': {
    file: 'bad_unknown_key.yaml',
    line: 4,
    col: 3,
    message: /^unknown key 'mask_raito' in model$/,
    hint: /^did you mean 'mask_ratio'\?$/,
    source: 'mask_raito: 0.75',
  },
  'missing name': { file: 'bad_missing_name.yaml', line: 2, col: 1, message: /^missing required field 'name'$/, source: 'model:' },
  'missing nested field': { file: 'bad_missing_field.yaml', line: 3, col: 3, message: /^missing required field 'dims' in model\.encoder$/, source: 'encoder:' },
  'duplicate key': { file: 'bad_duplicate_key.yaml', line: 5, col: 3, message: /^duplicate key 'mask_ratio'$/, source: 'mask_ratio: 0.75' },
  'alias bomb': { file: 'bad_alias_bomb.yaml', line: 3, col: 8, message: /too many alias expansions \(more than 100\)/, source: 'b: &b [*a' },
  'top level not a mapping': { file: 'bad_top_level.yaml', line: 1, col: 1, message: /top level of a spec must be a mapping/, source: '- name:' },
  'enum mismatch': {
    file: 'bad_enum.yaml',
    line: 4,
    col: 11,
    message: /^train\.optimizer\.name must be one of: lamb, adamw \(got the string "lamm"\)$/,
    hint: /did you mean 'lamb'/,
    source: 'name: lamm',
  },
  'not a multiple of 32': { file: 'bad_multiple.yaml', line: 3, col: 15, message: /^data\.input_size must be a multiple of 32 \(got 100\)$/, hint: /96 or 128/, source: 'input_size: 100' },
  'imagefolder without root': { file: 'bad_imagefolder.yaml', line: 3, col: 11, message: /data\.root is required when data\.source is 'imagefolder'/, source: 'source: imagefolder' },
  'two YAML documents': { file: 'bad_multi_doc.yaml', line: 2, col: 1, message: /^a spec holds one YAML document/, source: '---' },
  'empty section': { file: 'bad_null_section.yaml', line: 2, col: 1, message: /^model must be a mapping \(got null\)$/, source: 'model:' },
  'extends: missing file': {
    file: 'extends/missing_base.yaml',
    line: 4,
    col: 5,
    message: /^cannot read extended spec: no such file '.*no_such_base\.yaml'$/,
    source: '- no_such_base.yaml',
  },
  'extends: cycle': {
    file: 'extends/cycle_a.yaml',
    line: 3,
    col: 10,
    message: /^extends cycle: \S*cycle_a\.yaml -> \S*cycle_b\.yaml -> \S*cycle_a\.yaml$/,
    source: 'extends: cycle_a.yaml',
  },
};

for (const [what, c] of Object.entries(CASES)) {
  test(`spec error: ${what}`, async () => {
    const err = await specError(fx(c.file));
    // the cycle closes in the extended file, which is where it is reported
    const expectedFile = what === 'extends: cycle' ? fx('extends/cycle_b.yaml') : fx(c.file);
    assert.equal(path.resolve(err.file), expectedFile);
    assert.equal(`${err.line}:${err.col}`, `${c.line}:${c.col}`, err.format());
    assert.match(err.message, c.message);
    if (c.hint) assert.match(err.hint ?? '', c.hint);
    const [srcLine, caretLine] = (err.excerpt ?? '').split('\n');
    assert.ok(srcLine?.includes(c.source), `excerpt ${JSON.stringify(err.excerpt)} lacks ${c.source}`);
    assert.ok(srcLine?.startsWith(` ${c.line} | `), `excerpt numbered with the line: ${srcLine}`);
    // the caret sits under the reported column
    const bar = caretLine!.indexOf('|');
    assert.equal(caretLine!.indexOf('^') - (bar + 2), c.col - 1, err.format());
    const formatted = err.format();
    assert.ok(formatted.startsWith(`${err.file}:${c.line}:${c.col}: `), formatted);
  });
}

test('an error in an extended file points at that file, not at the spec that extends it', async () => {
  const err = await specError(fx('extends/child_of_bad.yaml'));
  assert.equal(path.resolve(err.file), fx('extends/bad_base.yaml'));
  assert.equal(`${err.line}:${err.col}`, '3:14');
  assert.match(err.message, /^model\.drop_path must be < 1 \(got 1\.5\)$/);
});

test('a YAML error in an extended file is located in that file', async () => {
  const err = await specError(fx('extends/child_of_broken.yaml'));
  assert.equal(path.resolve(err.file), fx('extends/broken_base.yaml'));
  assert.match(err.message, /^YAML syntax error: /);
  assert.ok(err.line! >= 3 && err.line! <= 4, err.format());
});

test('a missing spec file is a SpecError naming it', async () => {
  const err = await specError(fx('does_not_exist.yaml'));
  assert.match(err.message, /cannot read spec: no such file/);
  assert.equal(err.line, undefined);
  assert.equal(path.resolve(err.file), fx('does_not_exist.yaml'));
});

test('--set errors name the override, not the file', async (t) => {
  const good = fx('good_minimal.yaml');
  const cases: Array<[string, RegExp, RegExp?]> = [
    ['model.mask_ratio=1.5', /^must be < 1$/],
    ['model.mask_raito=0.5', /^unknown key 'mask_raito' in model$/, /did you mean 'mask_ratio'/],
    ['modle.mask_ratio=0.5', /^unknown key 'modle' at the top level$/, /did you mean 'model'/],
    ['train.batch_size=many', /^must be an integer$/],
    ['train.epochs=0', /^must be >= 1$/],
    ['tracking.enabled=maybe', /^must be true or false$/],
    ['model.encoder=resnet5', /^must be one of: .*resnet50/, /did you mean 'resnet50'/],
    ['model.mask_ratio', /^expected KEY=VALUE$/],
    ['=3', /is not a config path/],
    ['model..mask_ratio=0.5', /is not a config path/],
    ['data.crop_scale=[0.5, 1', /^cannot parse the value/],
    ['model.encoder.layers.0=2', /^cannot set inside a list$/],
    ['model.encoder={family: resnet}', /^missing required field 'layers' in model\.encoder$/],
    // the override created model.encoder, so it is to blame for what is missing in it
    ['model.encoder.family=convnext', /^missing required field 'depths' in model\.encoder$/],
  ];
  for (const [assignment, message, hint] of cases) {
    await t.test(assignment, async () => {
      const err = await specError(good, [assignment]);
      assert.equal(err.file, `--set ${assignment}`);
      assert.equal(err.line, undefined);
      assert.match(err.message, message);
      if (hint) assert.match(err.hint ?? '', hint);
      assert.ok(err.format().startsWith(`--set ${assignment}: `), err.format());
    });
  }
  await t.test('the exact form of an out-of-range override', async () => {
    const err = await specError(good, ['model.mask_ratio=1.5']);
    assert.equal(err.format(), '--set model.mask_ratio=1.5: must be < 1');
  });
});
