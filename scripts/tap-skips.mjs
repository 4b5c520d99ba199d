// The skipped and todo tests of a TAP report, for scripts/run-tests.mjs's closing summary (tested in test/run-tests.test.ts).

/**
 * The skipped and todo tests of a TAP report (`ok 3 - name # SKIP reason`), each named with its parents
 * (`parent > child`, from the `# Subtest:` nesting), in report order.
 */
export function tapSkips(text) {
  const out = [];
  const stack = []; // names of the open subtests by indentation level
  const unescape = (s) => s.replace(/\\([#\\])/g, '$1');
  for (const line of text.split('\n')) {
    const sub = /^(\s*)# Subtest: (.*)$/.exec(line);
    if (sub) {
      const level = sub[1].length / 4;
      stack.length = level;
      stack[level] = unescape(sub[2]);
      continue;
    }
    const m = /^(\s*)(?:not )?ok \d+ - (.*?)(?<!\\) # (SKIP|TODO)\b ?(.*)$/.exec(line);
    if (!m) continue;
    const level = m[1].length / 4;
    const name = [...stack.slice(0, level), unescape(m[2])].join(' > ');
    out.push({ name, kind: m[3].toLowerCase(), reason: unescape(m[4]).trim() });
  }
  return out;
}
