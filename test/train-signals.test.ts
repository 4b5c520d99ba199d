/**
 * Signals: `spark run` in a child process, stopped by SIGTERM (graceful: checkpoint, exit 143, resume hint) or by
 * SIGKILL after a checkpoint, then `spark run --resume`, ends with the same weights as an uninterrupted run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { testBackend } from './helpers/backend.js';
import { tinySpecYaml, tmpDir, spawnSpark, waitForCheckpoint, assertSameWeights, referenceRun } from './helpers/train.js';

const STEPS = 6;


for (const mode of ['SIGTERM', 'SIGKILL'] as const) {
  test(`spark run interrupted by ${mode} after a checkpoint, then --resume: same weights as an uninterrupted run`, async () => {
    const info = await testBackend();
    const ref = await referenceRun(STEPS);
    const out = tmpDir();
    const name = mode.toLowerCase();
    const spec = path.join(out, `${name}.yaml`);
    writeFileSync(spec, tinySpecYaml({ outDir: out, name, steps: STEPS, checkpointEvery: 1, backend: info.name }));
    // a slow loader keeps the child mid-run while the signal arrives
    const { child, done } = spawnSpark('run', [spec], { SPARK_TEST_STEP_DELAY_MS: '200' });
    const runDir = await waitForCheckpoint(out, name, 2);
    child.kill(mode);
    const r = await done;
    if (mode === 'SIGTERM') {
      assert.equal(r.code, 143, `exit code (stderr: ${r.stderr.slice(-500)})`);
      // printed once, with the run's end (the console view on stdout)
      assert.equal((r.stdout + r.stderr).match(/resume with: npx spark run --resume \S+/g)?.length, 1, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /KILLED/);
    } else {
      assert.equal(r.signal, 'SIGKILL');
    }
    const st = JSON.parse(readFileSync(path.join(runDir, 'checkpoint', 'state.json'), 'utf8')) as { step: number };
    assert.ok(st.step >= 2 && st.step < STEPS, `interrupted mid-run (checkpoint at step ${st.step})`);

    const again = spawnSpark('run', ['--resume', runDir]);
    const r2 = await again.done;
    assert.equal(r2.code, 0, `resume exit code (stderr: ${r2.stderr.slice(-800)})`);
    await assertSameWeights(ref.runDir, runDir, STEPS);
  });
}
