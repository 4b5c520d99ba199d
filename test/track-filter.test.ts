/**
 * The search-filter evaluator against the transcript recorded with real MLflow 2.12.2
 * (test/fixtures/mlflow/filter_semantics_2.12.2.txt): every line of the transcript is parsed and run, both on
 * the local file store and through the REST client against the test server (which passes the filter on).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { FileStore } from '../src/track/filestore.js';
import { RestStore } from '../src/track/rest.js';
import { parseFilter, parseOrderBy, sortRuns, likeToRegExp, paginate } from '../src/track/filter.js';
import { searchAllRuns, type Run, type TrackingStore } from '../src/track/types.js';
import { TrackingError } from '../src/util/errors.js';
import { copyGoldenStore, goldenDir, startMlflowServer, GOLDEN_EXPERIMENT, GOLDEN_PARENT, GOLDEN_RUNS } from './helpers/mlflow-server.js';

interface FilterCase {
  kind: 'filter';
  filter: string;
  expected: string[] | { error: string };
}
interface OrderCase {
  kind: 'order';
  orderBy: string[];
  expected: string[];
}

function pyString(q: string, body: string): string {
  return body.replace(/\\(.)/g, '$1');
}
function pyList(s: string): string[] {
  return JSON.parse(s.replace(/'/g, '"')) as string[];
}

/** Parse the transcript: `<repr(filter)>  -> [names] | ERROR msg` and `[order_by] [names]` lines. */
function parseTranscript(text: string): Array<FilterCase | OrderCase> {
  const out: Array<FilterCase | OrderCase> = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const f = /^(['"])(.*?)\1\s+->\s+(.*)$/.exec(line);
    if (f) {
      const rhs = f[3]!.trim();
      out.push({
        kind: 'filter',
        filter: pyString(f[1]!, f[2]!),
        expected: rhs.startsWith('ERROR ') ? { error: rhs.slice(6) } : pyList(rhs),
      });
      continue;
    }
    const o = /^(\[.*?\])\s+(\[.*\])$/.exec(line);
    if (o) {
      out.push({ kind: 'order', orderBy: pyList(o[1]!), expected: pyList(o[2]!) });
      continue;
    }
    throw new Error(`unparsed transcript line: ${line}`);
  }
  return out;
}

/**
 * The transcript was recorded on a store with the same runs under other uuids: take the parent's id from the
 * `tags.mlflow.parentRunId` case and the run id of the `run_id IN` case, and give the copy of the golden store
 * those ids.
 */
function transcriptIdMap(cases: Array<FilterCase | OrderCase>): Record<string, string> {
  const map: Record<string, string> = {};
  for (const c of cases) {
    if (c.kind !== 'filter' || !Array.isArray(c.expected)) continue;
    const parent = /^tags\.mlflow\.parentRunId = '([0-9a-f]{32})'$/.exec(c.filter);
    if (parent) map[GOLDEN_PARENT] = parent[1]!;
    const inList = /^attributes\.run_id IN \('([0-9a-f]{32})'\)$/.exec(c.filter);
    if (inList && c.expected.length === 1) map[GOLDEN_RUNS[c.expected[0]!]!] = inList[1]!;
  }
  return map;
}

const g = goldenDir();

async function runCases(t: { diagnostic: (s: string) => void }, store: TrackingStore, cases: Array<FilterCase | OrderCase>): Promise<number> {
  let n = 0;
  for (const c of cases) {
    if (c.kind === 'filter') {
      if (Array.isArray(c.expected)) {
        const runs = await searchAllRuns(store, [GOLDEN_EXPERIMENT], c.filter);
        assert.deepEqual(runs.map((r) => r.info.runName).sort(), c.expected, `filter ${c.filter}`);
      } else {
        const msg = c.expected.error;
        await assert.rejects(
          () => store.searchRuns([GOLDEN_EXPERIMENT], c.filter),
          (e: unknown) => e instanceof TrackingError && e.errorCode === 'INVALID_PARAMETER_VALUE' && e.message === msg,
          `filter ${c.filter} should fail with: ${msg}`,
        );
      }
    } else {
      const runs = await searchAllRuns(store, [GOLDEN_EXPERIMENT], '', c.orderBy);
      assert.deepEqual(
        runs.map((r) => r.info.runName),
        c.expected,
        `order_by ${JSON.stringify(c.orderBy)}`,
      );
    }
    n++;
  }
  t.diagnostic(`${n} transcript cases passed`);
  return n;
}

test('every case of the MLflow 2.12.2 filter transcript, on the file store', async (t) => {
  const text = readFileSync(path.join(g, 'filter_semantics_2.12.2.txt'), 'utf8');
  const cases = parseTranscript(text);
  assert.equal(cases.length, text.split('\n').filter((l) => l.trim()).length);
  assert.ok(cases.length >= 20, 'cases.length >= 20');
  const idMap = transcriptIdMap(cases);
  assert.equal(Object.keys(idMap).length, 2, 'the transcript names the parent and one run by id');
  const root = await copyGoldenStore(true, idMap);
  try {
    const n = await runCases(t, new FileStore(root), cases);
    assert.equal(n, cases.length);
  } finally {
    rmSync(path.dirname(root), { recursive: true, force: true });
  }
});

test('every case of the transcript through the REST client and the test server', async (t) => {
  const text = readFileSync(path.join(g, 'filter_semantics_2.12.2.txt'), 'utf8');
  const cases = parseTranscript(text);
  const root = await copyGoldenStore(true, transcriptIdMap(cases));
  const srv = await startMlflowServer({ storeRoot: root });
  try {
    const n = await runCases(t, new RestStore(srv.url, { maxRetries: 0 }), cases);
    assert.equal(n, cases.length);
    assert.ok(srv.requests.some((r) => r.path.endsWith('/runs/search') && (r.body as { filter?: string }).filter === cases.find((c) => c.kind === 'filter')!.filter), 'srv.requests.some((r) => r.path.endsWith(\'/runs/search\') && (r.body as { filter?: string }).filter === cases.find((...');
  } finally {
    await srv.close();
    rmSync(path.dirname(root), { recursive: true, force: true });
  }
});

test('the golden store as shipped (three runs) gives the transcript results minus mr=0.75', async () => {
  const store = new FileStore(path.join(g, 'mlruns-written-by-mlflow-2.12.2'));
  const names = async (f: string) => (await searchAllRuns(store, [GOLDEN_EXPERIMENT], f)).map((r) => r.info.runName).sort();
  assert.deepEqual(await names("params.mask_ratio != '0.6'"), ['mr=0.4']);
  assert.deepEqual(await names("params.sweep != 'x'"), ['sweep-parent']);
  assert.deepEqual(await names('metrics.`train/loss` < 1'), ['mr=0.4', 'mr=0.6']);
  assert.deepEqual(await names('metrics.val_acc != 0'), ['mr=0.4', 'mr=0.6']);
  assert.deepEqual(await names("tags.mlflow.parentRunId = '9cb0162ad1a84d77848ded0787583728'"), ['mr=0.4', 'mr=0.6']);
});

function fakeRun(id: string, start: number, metrics: Record<string, number>, params: Record<string, string> = {}): Run {
  return {
    info: { runId: id, runName: id, experimentId: '1', userId: 'u', status: 'FINISHED', startTime: start, endTime: start + 1, artifactUri: '', lifecycleStage: 'active' },
    data: { metrics, params, tags: {} },
  };
}

test('parser: aliases, quoting, IN lists, LIKE wildcards, error messages', () => {
  assert.deepEqual(parseFilter(''), []);
  assert.deepEqual(parseFilter('metric.loss >= -1.5e-3 and param."opt/name" = "x"'), [
    { type: 'metric', key: 'loss', comparator: '>=', value: -1.5e-3 },
    { type: 'parameter', key: 'opt/name', comparator: '=', value: 'x' },
  ]);
  assert.deepEqual(parseFilter('`Run name` ilike \'MR%\''), [{ type: 'attribute', key: 'run_name', comparator: 'ILIKE', value: 'MR%' }]);
  assert.deepEqual(parseFilter("run_id NOT IN ('a', 'b')"), [{ type: 'attribute', key: 'run_id', comparator: 'NOT IN', value: ['a', 'b'] }]);
  assert.deepEqual(parseFilter('created > 5'), [{ type: 'attribute', key: 'start_time', comparator: '>', value: 5 }]);
  assert.throws(() => parseFilter("metrics.loss LIKE '1'"), /Expected numeric value type for metric/);
  assert.throws(() => parseFilter('metrics.loss LIKE 1'), /Invalid comparator 'LIKE'/);
  assert.throws(() => parseFilter("params.x > '1'"), /Invalid comparator '>'/);
  assert.throws(() => parseFilter("foo.x = '1'"), /Invalid entity type 'foo'/);
  assert.throws(() => parseFilter("attributes.nope = '1'"), /Invalid attribute key 'nope'/);
  assert.throws(() => parseFilter("params.x = 'a"), /unterminated/);
  assert.throws(() => parseFilter("tags.t = 'a' AND"), /Could not be parsed/);
  assert.ok(likeToRegExp('a_c%', false).test('abcdef'), 'likeToRegExp(\'a_c%\', false).test(\'abcdef\')');
  assert.ok(!likeToRegExp('a_c%', false).test('ac'), '!likeToRegExp(\'a_c%\', false).test(\'ac\')');
  assert.ok(!likeToRegExp('0.%', false).test('0x5'), "'.' is literal in LIKE");
  assert.ok(likeToRegExp('ADAM%', true).test('adamw'), 'likeToRegExp(\'ADAM%\', true).test(\'adamw\')');
  assert.ok(!likeToRegExp('ADAM%', false).test('adamw'), '!likeToRegExp(\'ADAM%\', false).test(\'adamw\')');
});

test('order_by: missing values last both ways, NaN before missing, stable multi-key; pagination', () => {
  const runs = [fakeRun('a', 1, { loss: 2 }, { p: 'x' }), fakeRun('b', 2, { loss: NaN }, { p: 'y' }), fakeRun('c', 3, {}, { p: 'x' }), fakeRun('d', 4, { loss: 1 }, { p: 'y' })];
  const ids = (rs: Run[]) => rs.map((r) => r.info.runId);
  assert.deepEqual(ids(sortRuns(runs, [])), ['d', 'c', 'b', 'a']);
  assert.deepEqual(ids(sortRuns(runs, ['metrics.loss'])), ['d', 'a', 'b', 'c']);
  assert.deepEqual(ids(sortRuns(runs, ['metrics.loss DESC'])), ['a', 'd', 'b', 'c']);
  assert.deepEqual(ids(sortRuns(runs, ['params.p DESC', 'metrics.loss ASC'])), ['d', 'b', 'a', 'c']);
  assert.deepEqual(parseOrderBy('metrics.`val/loss` desc'), { type: 'metric', key: 'val/loss', ascending: false });
  const p1 = paginate([1, 2, 3, 4, 5], undefined, 2);
  assert.deepEqual(p1.items, [1, 2]);
  const p2 = paginate([1, 2, 3, 4, 5], p1.nextPageToken, 2);
  assert.deepEqual(p2.items, [3, 4]);
  const p3 = paginate([1, 2, 3, 4, 5], p2.nextPageToken, 2);
  assert.deepEqual(p3.items, [5]);
  assert.equal(p3.nextPageToken, undefined);
  assert.throws(() => paginate([1], undefined, 50001), /at most 50000/);
  assert.throws(() => paginate([1], '!!notatoken', 5), /Invalid page token/);
});
