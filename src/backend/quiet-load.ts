/**
 * Loading libtensorflow without its start-up lines on the terminal. TensorFlow ≥ 2.16 logs through absl while the
 * library initialises (`WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`,
 * `I0000 … port.cc:153] oneDNN custom operations are on …`), before TF_CPP_MIN_LOG_LEVEL takes effect, straight to
 * file descriptor 2: on a terminal they land above the run view. While the addon loads, fd 2 is pointed at a
 * temporary file (POSIX open() takes the lowest free descriptor, so close(2) + open() re-targets it; Node has no
 * dup2), then restored; the known start-up lines are dropped and anything else is passed on to stderr, as is the
 * whole capture when the load fails. Only on Linux with stderr a terminal; SPARK_NATIVE_LOG=1 keeps the lines.
 */
import { closeSync, fstatSync, openSync, readFileSync, rmSync } from 'node:fs';
import { isatty } from 'node:tty';
import os from 'node:os';
import path from 'node:path';

/** Lines libtensorflow prints on every start (dropped). */
const STARTUP_LINES = [
  /^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$/,
  /^[IW]\d{4} [\d:.]+\s+\d+ port\.cc:\d+\] oneDNN custom operations are on\./,
  /^[IW]\d{4} [\d:.]+\s+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized/,
  /^To enable the following instructions: .* in other operations, rebuild TensorFlow with the appropriate compiler flags\.$/,
];

/** The captured text without the known start-up lines. */
export function unexpectedLines(text: string): string {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !STARTUP_LINES.some((re) => re.test(l)))
    .map((l) => l + '\n')
    .join('');
}

function redirectable(): boolean {
  if (process.platform !== 'linux') return false;
  const keep = process.env['SPARK_NATIVE_LOG'];
  if (keep && keep !== '0' && keep.toLowerCase() !== 'false') return false;
  if (!isatty(2)) return false;
  try {
    fstatSync(0); // fds 0 and 1 open: the descriptor open() hands out after close(2) is 2
    fstatSync(1);
    return true;
  } catch {
    return false;
  }
}

/** Run `fn` (a synchronous native load) with fd 2 captured as described above. */
export function withQuietStderr<T>(fn: () => T): T {
  if (!redirectable()) return fn();
  let saved: number;
  try {
    saved = openSync('/proc/self/fd/2', 'a'); // the terminal, to point fd 2 back at afterwards
  } catch {
    return fn();
  }
  const file = path.join(os.tmpdir(), `spark-native-load-${process.pid}.log`);
  const restore = (): void => {
    const fd = openSync(`/proc/self/fd/${saved}`, 'a');
    if (fd !== 2) closeSync(fd); // 2 was not free: it was never closed, nothing to restore
    closeSync(saved);
  };
  closeSync(2);
  let fd: number;
  try {
    fd = openSync(file, 'w');
  } catch (e) {
    restore();
    throw e;
  }
  if (fd !== 2) {
    // another thread took descriptor 2 first: give up capturing (fd 2 is theirs, which cannot be undone here)
    closeSync(fd);
    closeSync(saved);
    rmSync(file, { force: true });
    return fn();
  }
  let failed = true;
  try {
    const value = fn();
    failed = false;
    return value;
  } finally {
    closeSync(2);
    restore();
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      /* nothing captured */
    }
    rmSync(file, { force: true });
    const out = failed ? text : unexpectedLines(text);
    if (out) process.stderr.write(out);
  }
}
