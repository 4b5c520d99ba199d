#!/usr/bin/env node
/**
 * `npm run setup:torch` — builds the `torch` backend's N-API addon (every `native/torch/*.cc`, one shared object)
 * against the PyTorch that is installed, with the system C++ compiler and Node's own headers (no node-gyp, no
 * download), then checks it: a convolution and its gradients on the torch backend against the cpu backend.
 *
 * PyTorch: $SPARK_TORCH_PYTHON (or --python), else `.venv-ref/bin/python` (from `npm run setup:reference`), else
 * `python3`. Its include and library paths come from torch.utils.cpp_extension, the C++ ABI from
 * torch._C._GLIBCXX_USE_CXX11_ABI, CUDA from torch.version.cuda (then libtorch_cuda and libc10_cuda are linked with
 * --no-as-needed, or CUDA would never register, and SPARK_TORCH_CUDA=1 is defined for the sources).
 *
 * Cache: `<cache>/<key>/spark_torch.node` + `build.json` (<cache>: $SPARK_TORCH_CACHE, else $SPARK_CACHE_DIR/torch, else
 * ${XDG_CACHE_HOME:-~/.cache}/spark/torch), key =
 * hash of the sources, the torch version and library folder (the rpath), CUDA version, C++ ABI, Node's module ABI and
 * the architecture. A second run
 * with nothing changed only re-checks. src/backend/torch/addon-path.ts finds the build ($SPARK_TORCH_ADDON overrides).
 *
 * Exit status: 0 built (or up to date) and checked; 1 cannot (one line `setup-torch: FAILED: <why>`, then `fix:`);
 * 2 bad options.
 *
 * Options / environment:
 *   --python <exe> | SPARK_TORCH_PYTHON   the Python whose torch to build against
 *   SPARK_TORCH_CACHE                     cache folder (default $SPARK_CACHE_DIR/torch or ~/.cache/spark/torch)
 *   SPARK_NODE_HEADERS                    folder with node_api.h (default <node prefix>/include/node)
 *   CXX                                   C++ compiler (default g++)
 *   --sources <dir>                       C++ sources (default native/torch of this checkout)
 *   --force                               rebuild even when the cache is up to date
 *   --skip-check                          build only (the self-check needs the compiled project: `npm run build`)
 *   --device <d>                          self-check device: cpu | cuda | cuda:N | all (default: cpu, and cuda:0 too
 *                                         when the torch build has CUDA and sees a GPU)
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ADDON = 'spark_torch.node';
const SOURCE_RE = /\.(cc|cpp|h|hpp)$/;
const NODE_API_HEADERS = ['node_api.h', 'node_api_types.h', 'js_native_api.h', 'js_native_api_types.h'];
/** Oldest GCC whose C++17 PyTorch 2.x's headers accept. */
const MIN_GCC = 9;

class StepError extends Error {
  constructor(message, fix) {
    super(message);
    this.fix = fix;
  }
}

let stepStart = Date.now();
function line(step, msg) {
  const dt = ((Date.now() - stepStart) / 1000).toFixed(1);
  process.stdout.write(`setup-torch: ${step.padEnd(8)} ${msg} (${dt}s)\n`);
  stepStart = Date.now();
}
function firstLine(s) {
  return String(s ?? '').trim().split('\n').filter(Boolean).pop()?.slice(0, 300) ?? '';
}
function tail(s, n = 15) {
  return String(s ?? '').trim().split('\n').slice(-n).join('\n');
}
function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------- options
let opt;
try {
  ({ values: opt } = parseArgs({
    options: {
      python: { type: 'string' },
      sources: { type: 'string' },
      device: { type: 'string' },
      force: { type: 'boolean', default: false },
      'skip-check': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }));
} catch (e) {
  process.stderr.write(`setup-torch: ${e.message} (options: --python <exe>, --sources <dir>, --device <d>, --force, --skip-check, --help)\n`);
  process.exit(2);
}
if (opt.help) {
  process.stdout.write(readFileSync(new URL(import.meta.url), 'utf8').split('*/')[0].replace(/^#!.*\n\/\*\*\n/, '').replace(/^ \* ?/gm, '') + '\n');
  process.exit(0);
}
if (opt.device != null && !/^(cpu|cuda|cuda:\d+|all)$/.test(opt.device)) {
  process.stderr.write(`setup-torch: --device must be cpu, cuda, cuda:N or all, got '${opt.device}'\n`);
  process.exit(2);
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cacheRoot = process.env.SPARK_TORCH_CACHE
  || path.join(process.env.SPARK_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'spark'), 'torch');

// ------------------------------------------------------------------------------------------------------- 1. python
const PY_PROBE = `
import json, os, sys
try:
    import torch
except Exception as e:
    print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
    sys.exit(0)
import torch.utils.cpp_extension as ce
abi = getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", None)
if abi is None:
    abi = torch.compiled_with_cxx11_abi()
inc = list(ce.include_paths())
cuda = torch.version.cuda
if cuda:
    try:
        inc += [p for p in ce.include_paths(device_type="cuda") if p not in inc]
    except Exception:
        pass
gpus = []
try:
    if cuda and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory": p.total_memory})
except Exception:
    pass
print(json.dumps({"torch": torch.__version__, "cuda": cuda, "abi": int(bool(abi)), "include": inc,
                  "lib": list(ce.library_paths()), "python": sys.executable, "gpus": gpus}))
`;

function pickPython() {
  const given = opt.python || process.env.SPARK_TORCH_PYTHON;
  if (given) return { exe: given, from: opt.python ? '--python' : 'SPARK_TORCH_PYTHON' };
  const venv = path.join(root, '.venv-ref', 'bin', 'python');
  if (existsSync(venv)) return { exe: venv, from: '.venv-ref' };
  return { exe: 'python3', from: 'PATH' };
}

function stepPython() {
  const py = pickPython();
  const r = spawnSync(py.exe, ['-c', PY_PROBE], { encoding: 'utf8', timeout: 120_000 });
  if (r.error) {
    const why = r.error.code === 'ENOENT' ? 'not found' : r.error.message;
    throw new StepError(`no PyTorch: Python '${py.exe}' (${py.from}) ${why}`,
      'install PyTorch (`pip install torch`, a CUDA build for GPUs) and set SPARK_TORCH_PYTHON to that python, or run `npm run setup:reference`');
  }
  let info = null;
  try {
    info = JSON.parse(r.stdout.trim().split('\n').pop());
  } catch {
    /* reported below */
  }
  if (!info) {
    throw new StepError(`no PyTorch: '${py.exe}' (${py.from}) failed: ${firstLine(r.stderr || r.stdout) || `exit ${r.status}`}`,
      'check that python runs and `import torch` works in it');
  }
  if (info.error) {
    throw new StepError(`no PyTorch in '${py.exe}' (${py.from}): ${info.error}`,
      'pip install torch (a CUDA build for GPUs) into that python, or set SPARK_TORCH_PYTHON to a python that has it');
  }
  const lib = info.lib.find((d) => existsSync(path.join(d, 'libtorch_cpu.so')));
  if (!lib) {
    throw new StepError(`torch ${info.torch} in '${py.exe}' has no libtorch_cpu.so under ${info.lib.join(', ')}`,
      'install an official PyTorch wheel (it ships the C++ libraries and headers)');
  }
  if (!info.include.some((d) => existsSync(path.join(d, 'ATen', 'ATen.h')))) {
    throw new StepError(`torch ${info.torch} in '${py.exe}' has no C++ headers (ATen/ATen.h) under ${info.include.join(', ')}`,
      'install an official PyTorch wheel (it ships the C++ headers)');
  }
  const cudaLibs = !!info.cuda && existsSync(path.join(lib, 'libtorch_cuda.so')) && existsSync(path.join(lib, 'libc10_cuda.so'));
  line('python', `${info.python} (${py.from}): torch ${info.torch}, ${info.cuda ? `CUDA ${info.cuda}${cudaLibs ? '' : ' (libtorch_cuda.so missing: building CPU-only)'}` : 'CPU build'}, ` +
    `cxx11 ABI ${info.abi}${info.gpus.length ? `, ${info.gpus.length} GPU${info.gpus.length > 1 ? 's' : ''}: ${info.gpus[0].name}` : ''}`);
  return { ...info, libDir: lib, cudaLibs };
}

// ------------------------------------------------------------------------------------------------------ 2. sources
/** The same hash src/backend/torch/addon-path.ts compares against build.json's `sourcesHash`. */
function hashSources(dir) {
  const h = createHash('sha256');
  for (const n of readdirSync(dir).filter((x) => SOURCE_RE.test(x)).sort()) {
    h.update(n).update('\0').update(readFileSync(path.join(dir, n))).update('\0');
  }
  return h.digest('hex');
}

function stepSources() {
  const dir = path.resolve(opt.sources || path.join(root, 'native', 'torch'));
  const cc = existsSync(dir) ? readdirSync(dir).filter((n) => /\.(cc|cpp)$/.test(n)).sort() : [];
  if (!cc.length) {
    throw new StepError(`no C++ sources (*.cc) in ${dir}`, 'run from a complete spark checkout (native/torch/ holds the addon sources)');
  }
  const hash = hashSources(dir);
  line('sources', `${cc.length} file${cc.length > 1 ? 's' : ''} in ${path.relative(process.cwd(), dir) || '.'} (sha256 ${hash.slice(0, 12)})`);
  return { dir, files: cc.map((n) => path.join(dir, n)), hash };
}

// ----------------------------------------------------------------------------------------------------- 3. compiler
function nodeHeadersDir() {
  if (process.env.SPARK_NODE_HEADERS) return { dir: path.resolve(process.env.SPARK_NODE_HEADERS), from: 'SPARK_NODE_HEADERS' };
  const prefix = path.dirname(path.dirname(realpathSync(process.execPath)));
  return { dir: path.join(prefix, 'include', 'node'), from: `node ${process.version}` };
}

function stepCompiler() {
  const cxx = process.env.CXX || 'g++';
  const r = spawnSync(cxx, ['-dumpfullversion', '-dumpversion'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new StepError(`no C++ compiler: '${cxx}' ${r.error?.code === 'ENOENT' ? 'not found' : `failed: ${firstLine(r.stderr)}`}`,
      'install g++ (`apt-get install g++`, or your distribution\'s build tools), or set CXX');
  }
  const version = r.stdout.trim().split('\n')[0];
  const v = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
  const isGcc = !/clang/i.test(v.stdout ?? '');
  if (isGcc && Number(version.split('.')[0]) < MIN_GCC) {
    throw new StepError(`${cxx} ${version} is too old for PyTorch's C++17 headers (needs GCC ≥ ${MIN_GCC})`, 'install a newer g++ and set CXX to it');
  }
  const hdr = nodeHeadersDir();
  const missing = NODE_API_HEADERS.filter((n) => !existsSync(path.join(hdr.dir, n)));
  if (missing.length) {
    throw new StepError(`Node's N-API headers are missing: ${missing.join(', ')} not in ${hdr.dir} (${hdr.from})`,
      'install Node with its headers (the official tarballs and distribution "nodejs" packages have include/node), or set SPARK_NODE_HEADERS');
  }
  line('compiler', `${cxx} ${version}; N-API headers ${hdr.dir}`);
  return { cxx, version, headers: hdr.dir };
}

// -------------------------------------------------------------------------------------------------------- 4. build
function buildKey(src, torch, cc) {
  const parts = {
    sources: src.hash, torch: torch.torch, cuda: torch.cudaLibs ? torch.cuda : null, abi: torch.abi,
    // the rpath: an addon built against another installation of the same torch (another venv) must not be reused
    torchLib: torch.libDir,
    node: process.versions.modules, napi: process.versions.napi, arch: process.arch, compiler: cc.version,
  };
  return { key: createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16), parts };
}

function runAsync(cmd, args) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stdout.on('data', (d) => { err += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', (e) => resolve({ ok: false, err: e.message }));
    p.on('close', (code) => resolve({ ok: code === 0, err }));
  });
}

async function stepBuild(src, torch, cc, verify) {
  const { key, parts } = buildKey(src, torch, cc);
  const dir = path.join(cacheRoot, key);
  const addon = path.join(dir, ADDON);
  const have = readJson(path.join(dir, 'build.json'));
  if (!opt.force && have && have.key === key && existsSync(addon) && statSync(addon).size === have.addonBytes) {
    line('build', `up to date: ${addon}`);
    verify(addon);
    return { addon, dir, info: have, built: false };
  }
  mkdirSync(cacheRoot, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const defs = [`-D_GLIBCXX_USE_CXX11_ABI=${torch.abi}`, '-DNODE_GYP_MODULE_NAME=spark_torch', ...(torch.cudaLibs ? ['-DSPARK_TORCH_CUDA=1'] : [])];
    // -ffp-contract=off: the fused optimizer loops round as the reference op chains do (no fused multiply-add);
    // -fno-trapping-math lets compare-and-select loops (clamps, masks) vectorise; the hot loops are multiversioned
    // for AVX-512/AVX2 in the source (spark_simd.h), so no -march=native
    const cflags = ['-O3', '-ffp-contract=off', '-fno-math-errno', '-fno-trapping-math', '-std=c++17', '-fPIC', '-fvisibility=hidden', ...defs, `-I${cc.headers}`, ...torch.include.map((d) => `-I${d}`)];
    const jobs = Math.max(1, Math.min(src.files.length, os.availableParallelism()));
    process.stdout.write(`setup-torch: build    compiling ${src.files.length} file${src.files.length > 1 ? 's' : ''} (${jobs} at a time) ...\n`);
    const objects = src.files.map((f, i) => path.join(tmp, `${i}-${path.basename(f).replace(/\.\w+$/, '')}.o`));
    let next = 0;
    const failures = [];
    await Promise.all(Array.from({ length: jobs }, async () => {
      while (next < src.files.length && !failures.length) {
        const i = next++;
        const r = await runAsync(cc.cxx, [...cflags, '-c', src.files[i], '-o', objects[i]]);
        if (!r.ok) failures.push({ file: src.files[i], err: r.err });
      }
    }));
    if (failures.length) {
      const f = failures[0];
      process.stderr.write(tail(f.err, 25) + '\n');
      const abi = /undefined reference|_GLIBCXX_USE_CXX11_ABI|__cxx11/.test(f.err);
      throw new StepError(`compiling ${path.basename(f.file)} against torch ${torch.torch} failed${abi ? ' (C++ ABI mismatch?)' : ''}: ${firstLine(f.err.split('\n').find((l) => /error/.test(l)) ?? f.err)}`,
        abi ? `use a g++ whose libstdc++ matches torch's ABI (cxx11 ABI ${torch.abi}), or another torch build` : 'see the compiler output above; a torch version the sources do not support?');
    }
    const libs = [
      `-L${torch.libDir}`, `-Wl,-rpath,${torch.libDir}`, '-Wl,--no-as-needed',
      ...(torch.cudaLibs ? ['-ltorch_cuda', '-lc10_cuda'] : []), '-ltorch', '-ltorch_cpu', '-lc10', '-Wl,--as-needed',
    ];
    const out = path.join(tmp, ADDON);
    const linkArgs = ['-shared', ...objects, '-o', out, ...libs];
    const r = await runAsync(cc.cxx, linkArgs);
    if (!r.ok) {
      process.stderr.write(tail(r.err, 25) + '\n');
      const abi = /undefined reference to .*(std::__cxx11|std::string|basic_string)/.test(r.err);
      throw new StepError(`linking against torch ${torch.torch} failed${abi ? ': C++ ABI mismatch (std::string symbols do not resolve)' : ''}: ${firstLine(r.err)}`,
        abi ? `torch was built with cxx11 ABI ${torch.abi}: use a matching compiler / torch build` : 'see the linker output above');
    }
    const command = `${[cc.cxx, ...cflags, '-c', '<source>', '-o', '<object>'].join(' ')} && ${[cc.cxx, ...linkArgs.map((a) => a.replace(tmp, dir))].join(' ')}`;
    const info = {
      key, ...parts, torchVersion: torch.torch, cudaVersion: torch.cudaLibs ? torch.cuda : null, cxx11Abi: torch.abi,
      python: torch.python, torchLib: torch.libDir, sourcesHash: src.hash, sourcesDir: src.dir, sources: src.files.map((f) => path.basename(f)),
      nodeVersion: process.version, nodeModules: process.versions.modules, napi: process.versions.napi,
      compiler: `${cc.cxx} ${cc.version}`, command, addonBytes: statSync(out).size, builtAt: new Date().toISOString(),
    };
    for (const o of objects) rmSync(o, { force: true });
    line('build', `built ${ADDON} (${(info.addonBytes / 1e6).toFixed(1)} MB)`);
    verify(out); // before it enters the cache: a build that cannot load is never found by the backend
    writeFileSync(path.join(tmp, 'build.json'), JSON.stringify(info, null, 2) + '\n');
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    line('cache', addon);
    return { addon, dir, info, built: true };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// -------------------------------------------------------------------------------------------------------- 5. load
/** dlopen the addon in a child process: an undefined symbol here is an ABI or version mismatch. */
function stepLoad(addon, torch) {
  // RTLD_NOW: every symbol resolves now (lazy binding would defer an ABI mismatch to the first call).
  const code = `const m = { exports: {} }; process.dlopen(m, ${JSON.stringify(addon)}, require('os').constants.dlopen.RTLD_NOW);`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) {
    const msg = firstLine((r.stderr || '').split('\n').find((l) => /Error|error:|undefined symbol/.test(l)) ?? r.stderr);
    const abi = /undefined symbol/.test(r.stderr);
    throw new StepError(`the built addon does not load${abi ? ' (ABI mismatch with torch ' + torch.torch + ')' : ''}: ${msg}`,
      abi ? `the addon expects other torch C++ symbols than torch ${torch.torch} in ${torch.python} exports (C++ ABI or version): build against the torch you run (SPARK_TORCH_PYTHON)` : 'see the message above');
  }
  line('load', 'the addon loads (torch libraries resolve)');
}

// -------------------------------------------------------------------------------------------------- 6. self-check
function checkDevices(torch) {
  const d = opt.device;
  const gpu = torch.cudaLibs && torch.gpus.length > 0;
  if (d === 'all' || d == null) return gpu ? ['cpu', 'cuda:0'] : ['cpu'];
  return [d];
}

function stepCheck(addon, torch) {
  const mod = path.join(root, 'dist', 'src', 'backend', 'torch-check.js');
  if (!existsSync(mod)) {
    line('check', `skipped: ${path.relative(process.cwd(), mod)} is not built (run \`npm run build\`, then this again)`);
    return 'skipped';
  }
  const results = [];
  for (const device of checkDevices(torch)) {
    const code = `const m = await import(${JSON.stringify(pathToFileURL(mod).href)}); const r = await m.torchSelfCheck({ device: ${JSON.stringify(device)} }); console.log(JSON.stringify(r)); process.exit(r.ok ? 0 : 1);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
      encoding: 'utf8', timeout: 300_000, env: { ...process.env, SPARK_TORCH_ADDON: addon },
    });
    let res = null;
    try {
      res = JSON.parse(r.stdout.trim().split('\n').pop());
    } catch {
      /* below */
    }
    if (!res || !res.ok) {
      if (!res) process.stderr.write(tail(r.stderr, 20) + '\n');
      throw new StepError(`self-check on ${device} failed: ${res?.message ?? firstLine(r.stderr) ?? `exit ${r.status}`}`,
        res?.fix ?? 'the addon and the backend disagree: report this with the output above');
    }
    line('check', `${device}: ${res.message}`);
    results.push(device);
  }
  return results.join(', ');
}

// ----------------------------------------------------------------------------------------------------------- main
async function main() {
  const t0 = Date.now();
  try {
    const torch = stepPython();
    const src = stepSources();
    const cc = stepCompiler();
    const b = await stepBuild(src, torch, cc, (addon) => stepLoad(addon, torch));
    const checked = opt['skip-check'] ? 'skipped (--skip-check)' : stepCheck(b.addon, torch);
    process.stdout.write(`setup-torch: done in ${((Date.now() - t0) / 1000).toFixed(1)}s: ${b.addon} (torch ${torch.torch}` +
      `${b.info.cudaVersion ? `, CUDA ${b.info.cudaVersion}` : ', CPU only'}; self-check ${checked})\n`);
    return 0;
  } catch (e) {
    if (!(e instanceof StepError)) throw e;
    process.stderr.write(`setup-torch: FAILED: ${e.message}\n`);
    if (e.fix) process.stderr.write(`  fix: ${e.fix}\n`);
    return 1;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main();
}
