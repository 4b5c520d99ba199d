/**
 * Test helper: initialise the backend named by $SPARK_BACKEND (auto | tensorflow | torch | wasm | cpu; default 'auto';
 * torch runs on $SPARK_TORCH_DEVICE, else auto)
 * once per test process. Heavy tests call `requireNative(t)` and skip, with the reason printed, on a non-native
 * backend.
 */
import type { TestContext } from 'node:test';
import { initBackend, parseBackendRequest, type BackendInfo } from '../../src/backend/init.js';

export async function testBackend(): Promise<BackendInfo> {
  const req = parseBackendRequest(process.env['SPARK_BACKEND'] || 'auto', 'SPARK_BACKEND');
  return initBackend(req);
}

/** Returns false (and marks the test skipped with a reason) when the native TensorFlow backend is not in use. */
export async function requireNative(t: TestContext, what = 'full-size model'): Promise<boolean> {
  const info = await testBackend();
  if (!info.native) {
    const why = info.request === 'auto' ? ` (auto chose ${info.name}: ${info.reason})` : ` (SPARK_BACKEND=${info.request})`;
    t.skip(`${what} is too heavy for the '${info.name}' backend${why}; run \`npm run setup:native\` for the tensorflow backend`);
    return false;
  }
  return true;
}
