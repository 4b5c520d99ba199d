/**
 * The commands spark prints for a person to run next (`resume with: …`, `spark sync --run …`, `spark sweep status …`),
 * formatted in one place so that each works when pasted as printed:
 *
 * - inside the project (the checkout, or a project that has spark among its dependencies) it is `npx spark …`, which
 *   runs this package's own `spark` bin after the README's set-up (`npm ci`, `npm run build`) without anything on PATH;
 * - elsewhere, `spark …` when a `spark` on PATH is this CLI (`npm link`, a global install), else
 *   `node <path to dist/src/cli/main.js> …`.
 *
 * Paths are shown relative to the working directory when they lie inside it, and every argument is shell-quoted.
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from './paths.js';

/** POSIX shell single-quoting (bare when the word needs none). */
export function shellQuote(s: string): string {
  if (s !== '' && /^[A-Za-z0-9_\/.,+@%:=-]+$/.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** `p` relative to `cwd` when it lies inside it (`runs/x/abc`), else absolute. */
export function shownPath(p: string, cwd: string = process.cwd()): string {
  const abs = path.resolve(cwd, p);
  const rel = path.relative(cwd, abs);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : abs;
}

function real(p: string): string | null {
  try {
    return realpathSync(p);
  } catch {
    return null;
  }
}

/** The CLI entry point of this package (compiled; the sources' main.ts under tsx). */
function cliMain(): string {
  const js = path.join(packageRoot(), 'dist', 'src', 'cli', 'main.js');
  return existsSync(js) ? js : path.join(packageRoot(), 'src', 'cli', 'main.ts');
}

/**
 * True when `npx spark` run in `cwd` starts this CLI: npm runs the bins of the nearest project (the folder with a
 * package.json at or above `cwd`): this package itself, or a project whose node_modules/.bin/spark is this CLI.
 */
function npxResolves(cwd: string, main: string): boolean {
  const root = real(packageRoot());
  const mainReal = real(main);
  let dir = path.resolve(cwd);
  for (;;) {
    if (real(dir) === root) return true;
    const bin = real(path.join(dir, 'node_modules', '.bin', 'spark'));
    if (bin && mainReal && bin === mainReal) return true;
    if (existsSync(path.join(dir, 'package.json'))) return false; // npm's project root: its bins, not ours
    const up = path.dirname(dir);
    if (up === dir) return false;
    dir = up;
  }
}

/** True when the first `spark` on $PATH is this CLI. */
function onPath(main: string, env: NodeJS.ProcessEnv): boolean {
  const mainReal = real(main);
  for (const d of (env['PATH'] ?? '').split(path.delimiter)) {
    if (!d) continue;
    const f = path.join(d, 'spark');
    try {
      if (!statSync(f).isFile()) continue;
    } catch {
      continue;
    }
    return real(f) === mainReal;
  }
  return false;
}

/** How a person starts this CLI from `cwd`: `npx spark`, `spark` or `node <main.js>`. */
export function sparkInvocation(cwd: string = process.cwd(), env: NodeJS.ProcessEnv = process.env): string {
  const main = cliMain();
  if (npxResolves(cwd, main)) return 'npx spark';
  if (onPath(main, env)) return 'spark';
  return main.endsWith('.ts') ? `node --import tsx ${shellQuote(main)}` : `node ${shellQuote(main)}`;
}

/**
 * A spark command to print as a hint: `commandHint(['run', '--resume', {path: dir}])` → `npx spark run --resume runs/q/x`.
 * Arguments given as `{ path }` are shown relative to the working directory when inside it; all are shell-quoted.
 */
export function commandHint(args: Array<string | { path: string }>, cwd: string = process.cwd()): string {
  const words = args.map((a) => shellQuote(typeof a === 'string' ? a : shownPath(a.path, cwd)));
  return [sparkInvocation(cwd), ...words].join(' ');
}
