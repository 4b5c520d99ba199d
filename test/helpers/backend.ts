/**
 * Test helper: initialise the backend named by $SPARK_BACKEND (default 'auto') once per test process.
 * Heavy tests call `requireNative(t)` and skip, with the reason printed, on a non-native backend.
 */
import type { TestContext } from 'node:test';
import { initBackend, type BackendInfo, type BackendRequest } from '../../src/backend/init.js';

export async function testBackend(): Promise<BackendInfo> {
  const req = (process.env['SPARK_BACKEND'] ?? 'auto') as BackendRequest;
  return initBackend(req);
}

/** Returns false (and marks the test skipped with a reason) when the native TensorFlow backend is not in use. */
export async function requireNative(t: TestContext, what = 'full-size model'): Promise<boolean> {
  const info = await testBackend();
  if (!info.native) {
    t.skip(`${what} is too heavy for the '${info.name}' backend; run \`npm run setup:native\` for the tensorflow backend`);
    return false;
  }
  return true;
}
