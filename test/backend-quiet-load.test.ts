/**
 * libtensorflow's start-up lines (absl, before TF_CPP_MIN_LOG_LEVEL applies) are kept off a terminal while the addon
 * loads (backend/quiet-load.ts): checked under a pseudo-terminal (`script`), with the real addon and with a stand-in
 * that writes to fd 2 itself; other output is passed on, all of it when the load fails, and stderr works afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { unexpectedLines } from '../src/backend/quiet-load.js';
import { detectNative } from '../src/backend/native.js';
import { packageRoot } from '../src/util/paths.js';

const ABSL = 'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR';
const ONEDNN =
  'I0000 00:00:1796417266.740325   32672 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.';
const CPU_GUARD = 'I0000 00:00:1796417285.123527     682 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.';
const CPU_GUARD_2 = 'To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.';

test('the known start-up lines are dropped, anything else is kept', () => {
  assert.equal(unexpectedLines([ABSL, ONEDNN, CPU_GUARD, CPU_GUARD_2, ''].join('\n')), '');
  assert.equal(unexpectedLines(`${ABSL}\nE0000 something failed in the addon\n${ONEDNN}\n`), 'E0000 something failed in the addon\n');
});

/** `script` runs a command with a pseudo-terminal on stdin/stdout/stderr; its output is what a terminal would show. */
function inTerminal(code: string, env: NodeJS.ProcessEnv = {}): { status: number | null; out: string } | string {
  if (process.platform !== 'linux') return 'needs Linux (/proc/self/fd)';
  if (spawnSync('script', ['--version'], { encoding: 'utf8' }).status !== 0) return 'util-linux `script` not found (it provides the pseudo-terminal)';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spark-quiet-'));
  try {
    const file = path.join(dir, 'probe.mjs');
    writeFileSync(file, code);
    const r = spawnSync('script', ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(file)}`, '/dev/null'], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
    return { status: r.status, out: r.stdout.replace(/\r/g, '') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const QUIET = pathToFileURL(path.join(packageRoot(), 'dist', 'src', 'backend', 'quiet-load.js')).href;

test('under a terminal: start-up lines written to fd 2 during the load are dropped, others passed on, stderr restored', (t) => {
  const r = inTerminal(`
import { writeSync } from 'node:fs';
const { withQuietStderr } = await import(${JSON.stringify(QUIET)});
const v = withQuietStderr(() => { writeSync(2, ${JSON.stringify(ABSL + '\n' + ONEDNN + '\n')} + 'E0000 an unexpected line\\n'); return 42; });
process.stderr.write('stderr after: ' + v + '\\n');
writeSync(2, 'fd 2 after\\n');
try {
  withQuietStderr(() => { writeSync(2, ${JSON.stringify(ABSL + '\n')}); throw new Error('load failed'); });
} catch (e) { process.stdout.write('caught: ' + e.message + '\\n'); }
`);
  if (typeof r === 'string') return t.skip(r);
  assert.equal(r.status, 0, r.out);
  const lines = r.out.trimEnd().split('\n');
  assert.deepEqual(lines, ['E0000 an unexpected line', 'stderr after: 42', 'fd 2 after', ABSL, 'caught: load failed']);
});

test('under a terminal: loading the native addon shows none of its start-up lines (SPARK_NATIVE_LOG=1 keeps them)', (t) => {
  const c = detectNative('tfjs-node');
  if (!c.ready) return t.skip(`native backend not set up here: ${c.reason} (${c.fix})`);
  const code = `
const { detectNative, loadNative } = await import(${JSON.stringify(pathToFileURL(path.join(packageRoot(), 'dist', 'src', 'backend', 'native.js')).href)});
const r = loadNative(detectNative('tfjs-node'));
process.stderr.write('after load\\n');
process.stdout.write('tensorflow ' + r.tfVersion + '\\n');
`;
  const quiet = inTerminal(code, { TF_CPP_MIN_LOG_LEVEL: '2' });
  if (typeof quiet === 'string') return t.skip(quiet);
  assert.equal(quiet.status, 0, quiet.out);
  assert.match(quiet.out, /^after load\ntensorflow \d+\.\d+\.\d+\n$/);
  const loud = inTerminal(code, { TF_CPP_MIN_LOG_LEVEL: '2', SPARK_NATIVE_LOG: '1' });
  assert.ok(typeof loud !== 'string');
  // what the test guards against: this TensorFlow prints them despite TF_CPP_MIN_LOG_LEVEL=2
  assert.match(loud.out, /absl::InitializeLog|oneDNN custom operations/);
});
