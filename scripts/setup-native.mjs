#!/usr/bin/env node
/**
 * `npm run setup:native` — makes the `tensorflow` backend (@tensorflow/tfjs-node 4.22) work without Google's
 * download: it takes libtensorflow from the tensorflow-cpu 2.21.0 wheel (pip's ordinary client, or a wheel the user
 * supplies), stages it where tfjs-node's binding.gyp looks (deps/{lib,include}), applies two JS fixes for kernels
 * that changed between TF 2.9 and 2.21, builds the addon from source with node-pre-gyp and verifies it against the
 * pure-JS cpu backend in a child process.
 *
 * Idempotent: every step first checks whether its result is already in place. `--force` redoes everything.
 * Re-run after `npm ci` (which wipes node_modules/@tensorflow/tfjs-node, deps/ included).
 *
 * Options / environment:
 *   --wheel <file> | SPARK_TF_WHEEL      use this tensorflow-cpu 2.21.0 wheel (air-gapped machines)
 *   SPARK_NATIVE_CACHE                   cache folder (default ${XDG_CACHE_HOME:-~/.cache}/spark/native)
 *   --no-strip                           keep the libraries' static symbol tables (+200 MB)
 *   --force                              redo every step
 *   --skip-verify                        skip the child-process check (not recommended)
 *   npm_config_nodedir                   Node headers folder for node-gyp (default: node's own prefix)
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync,
  rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const TF_VERSION = '2.21.0';
const PIP_SPEC = `tensorflow-cpu==${TF_VERSION}`;
const WHEEL_GLOB = new RegExp(`^tensorflow_cpu-${TF_VERSION.replace(/\./g, '\\.')}-.*\\.whl$`);
const LIBS = ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2'];
/** deps/lib symlinks tfjs-node's install.js and binding.gyp look for. */
const LINKS = {
  'libtensorflow.so': 'libtensorflow_cc.so.2',
  'libtensorflow.so.2': 'libtensorflow_cc.so.2',
  'libtensorflow.so.2.9.1': 'libtensorflow_cc.so.2',
  'libtensorflow_framework.so': 'libtensorflow_framework.so.2',
  'libtensorflow_framework.so.2.9.1': 'libtensorflow_framework.so.2',
};
/** Wheel members → paths under the cache's include/ (prefix match on the member name). */
const HEADER_PREFIXES = [
  'tensorflow/include/tensorflow/c/',
  'tensorflow/include/tensorflow/core/platform/ctstring',
  'tensorflow/include/tsl/platform/ctstring',
  'tensorflow/include/xla/tsl/c/tsl_status',
];
/** Functions the binding calls, by the library that must export them (spec: native-backend.md §1). */
const SYMBOLS = {
  'libtensorflow_cc.so.2': [
    'TFE_NewContext', 'TFE_NewContextOptions', 'TFE_DeleteContext', 'TFE_DeleteContextOptions', 'TFE_ContextListDevices',
    'TFE_NewOp', 'TFE_DeleteOp', 'TFE_OpAddInput', 'TFE_OpSetAttrBool', 'TFE_OpSetAttrBoolList', 'TFE_OpSetAttrFloat',
    'TFE_OpSetAttrFloatList', 'TFE_OpSetAttrInt', 'TFE_OpSetAttrIntList', 'TFE_OpSetAttrShape', 'TFE_OpSetAttrString',
    'TFE_OpSetAttrType', 'TFE_Execute', 'TFE_NewTensorHandle', 'TFE_DeleteTensorHandle', 'TFE_TensorHandleResolve',
    'TFE_TensorHandleCopyToDevice', 'TFE_TensorHandleDataType', 'TFE_TensorHandleDim', 'TFE_TensorHandleNumDims',
    'TF_NewGraph', 'TF_DeleteGraph', 'TF_GraphOperationByName', 'TF_NewSessionOptions', 'TF_DeleteSessionOptions',
    'TF_DeleteSession', 'TF_SessionRun', 'TF_LoadSessionFromSavedModel', 'TF_DeviceListCount', 'TF_DeviceListName',
    'TF_DeviceListType', 'TF_DeleteDeviceList', 'TF_Version',
  ],
  'libtensorflow_framework.so.2': [
    'TF_NewStatus', 'TF_DeleteStatus', 'TF_GetCode', 'TF_Message', 'TF_NewTensor', 'TF_AllocateTensor', 'TF_DeleteTensor',
    'TF_TensorData', 'TF_TensorByteSize', 'TF_TensorElementCount', 'TF_TensorType', 'TF_NumDims', 'TF_Dim',
    'TF_DataTypeSize', 'TF_NewBuffer', 'TF_NewBufferFromString', 'TF_DeleteBuffer',
  ],
};
const PATCH_MARK = 'spark-native-fix';

class StepError extends Error {
  constructor(message, fix) {
    super(message);
    this.fix = fix;
  }
}

const t0 = Date.now();
let stepStart = Date.now();
function line(step, msg) {
  const dt = ((Date.now() - stepStart) / 1000).toFixed(1);
  process.stdout.write(`setup-native: ${step.padEnd(8)} ${msg} (${dt}s)\n`);
  stepStart = Date.now();
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...opts });
  if (r.error && r.error.code === 'ENOENT') return { ok: false, missing: true, out: '', err: `${cmd}: not found` };
  return { ok: r.status === 0, status: r.status, out: r.stdout ?? '', err: r.stderr ?? '' };
}
function have(cmd) {
  return run('sh', ['-c', `command -v ${cmd}`]).ok;
}
function tail(s, n = 15) {
  return s.trim().split('\n').slice(-n).join('\n');
}
function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}
function writeJsonAtomic(file, obj) {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(obj, null, 2) + '\n');
  renameSync(tmp, file);
}
function writeTextAtomic(file, text) {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}
function fileSig(file) {
  const s = statSync(file);
  return { size: s.size, mtimeMs: Math.round(s.mtimeMs) };
}
function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

// ---------------------------------------------------------------------------------------------------------------
let opt;
try {
  ({ values: opt } = parseArgs({
    options: {
      wheel: { type: 'string' },
      force: { type: 'boolean', default: false },
      'no-strip': { type: 'boolean', default: false },
      'skip-verify': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }));
} catch (e) {
  process.stderr.write(`setup-native: ${e.message} (options: --wheel <file>, --force, --no-strip, --skip-verify, --help)\n`);
  process.exit(2);
}
if (opt.help) {
  process.stdout.write(readFileSync(new URL(import.meta.url), 'utf8').split('*/')[0].replace(/^#!.*\n\/\*\*\n/, '').replace(/^ \* ?/gm, '') + '\n');
  process.exit(0);
}

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cacheRoot = process.env.SPARK_NATIVE_CACHE
  || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'spark', 'native');
const libCache = path.join(cacheRoot, `tensorflow-${TF_VERSION}`);
const strip = !opt['no-strip'];
const force = opt.force;

function findTfjsNode() {
  try {
    const req = createRequire(path.join(root, 'package.json'));
    return path.dirname(req.resolve('@tensorflow/tfjs-node/package.json'));
  } catch {
    throw new StepError('@tensorflow/tfjs-node is not installed in this project', 'run `npm ci` first');
  }
}

// 1. wheel --------------------------------------------------------------------------------------------------------
function stepWheel(cacheOk) {
  const given = opt.wheel || process.env.SPARK_TF_WHEEL;
  if (given) {
    const p = path.resolve(given);
    if (!existsSync(p)) throw new StepError(`wheel not found: ${p}`, 'pass an existing tensorflow-cpu 2.21.0 wheel with --wheel or SPARK_TF_WHEEL');
    if (!WHEEL_GLOB.test(path.basename(p))) {
      throw new StepError(`${path.basename(p)} is not a tensorflow-cpu ${TF_VERSION} wheel`, `download one with \`pip download ${PIP_SPEC} --no-deps\``);
    }
    line('wheel', `using ${p}`);
    return p;
  }
  const wheelDir = path.join(cacheRoot, 'wheel');
  const found = existsSync(wheelDir) ? readdirSync(wheelDir).filter((n) => WHEEL_GLOB.test(n)).sort() : [];
  if (found.length) {
    line('wheel', `found ${path.join(wheelDir, found[0])}`);
    return path.join(wheelDir, found[0]);
  }
  if (cacheOk) {
    line('wheel', 'not needed (libraries already extracted in the cache)');
    return null;
  }
  mkdirSync(wheelDir, { recursive: true });
  const py = have('python3') ? 'python3' : have('python') ? 'python' : null;
  if (!py) {
    throw new StepError('python3 (for pip) not found, and no wheel was given',
      `install python3 and pip, or download ${PIP_SPEC} elsewhere and pass it with --wheel <file>`);
  }
  const args = ['-m', 'pip', 'download', PIP_SPEC, '--no-deps', '--only-binary=:all:', '--platform', 'manylinux_2_27_x86_64',
    '--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311', '-d', wheelDir, '--retries', '0',
    '--disable-pip-version-check', '--no-input'];
  process.stdout.write(`setup-native: wheel     downloading ${PIP_SPEC} with pip into ${wheelDir} (274 MB) ...\n`);
  const r = run(py, args, { env: { ...process.env, PIP_RETRIES: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const now = readdirSync(wheelDir).filter((n) => WHEEL_GLOB.test(n)).sort();
  if (!r.ok || !now.length) {
    throw new StepError(`pip download ${PIP_SPEC} failed:\n${tail(r.err || r.out)}`,
      `check pip's index configuration (pip config list), or download the wheel elsewhere and pass --wheel <file>`);
  }
  line('wheel', `downloaded ${now[0]}`);
  return path.join(wheelDir, now[0]);
}

// 2. extract (+ strip) into the cache ------------------------------------------------------------------------------
const PY_EXTRACT = `
import sys, zipfile, os, shutil
whl, out, prefixes = sys.argv[1], sys.argv[2], sys.argv[3].split(',')
libs = sys.argv[4].split(',')
z = zipfile.ZipFile(whl)
n = 0
for info in z.infolist():
    name = info.filename
    if name.endswith('/'):
        continue
    if name in ['tensorflow/' + l for l in libs]:
        dest = os.path.join(out, 'lib', os.path.basename(name))
    elif any(name.startswith(p) for p in prefixes):
        dest = os.path.join(out, 'include', name[len('tensorflow/include/'):])
    else:
        continue
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with z.open(info) as src, open(dest, 'wb') as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    n += 1
print(n)
`;

function cacheComplete() {
  const stamp = readJson(path.join(libCache, 'stamp.json'));
  if (!stamp || stamp.tf !== TF_VERSION) return null;
  for (const l of LIBS) {
    const p = path.join(libCache, 'lib', l);
    if (!existsSync(p) || statSync(p).size !== stamp.libs?.[l]?.size) return null;
  }
  if (!existsSync(path.join(libCache, 'include', 'tensorflow', 'c', 'c_api.h'))) return null;
  return stamp;
}

function stepExtract(wheel) {
  const tmp = `${libCache}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const py = have('python3') ? 'python3' : have('python') ? 'python' : null;
    if (py) {
      const r = run(py, ['-c', PY_EXTRACT, wheel, tmp, HEADER_PREFIXES.join(','), LIBS.join(',')]);
      if (!r.ok) throw new StepError(`extracting ${wheel} failed:\n${tail(r.err)}`, 'the wheel may be truncated: delete it and re-run, or pass another with --wheel');
    } else if (have('unzip')) {
      const r = run('unzip', ['-q', '-o', wheel, ...LIBS.map((l) => `tensorflow/${l}`), ...HEADER_PREFIXES.map((p) => `${p}*`), '-d', path.join(tmp, 'x')]);
      if (!r.ok) throw new StepError(`unzip ${wheel} failed:\n${tail(r.err || r.out)}`, 'the wheel may be truncated: delete it and re-run, or pass another with --wheel');
      mkdirSync(path.join(tmp, 'lib'));
      for (const l of LIBS) renameSync(path.join(tmp, 'x', 'tensorflow', l), path.join(tmp, 'lib', l));
      renameSync(path.join(tmp, 'x', 'tensorflow', 'include'), path.join(tmp, 'include'));
      rmSync(path.join(tmp, 'x'), { recursive: true, force: true });
    } else {
      throw new StepError('neither python3 nor unzip is available to open the wheel (a zip file)', 'install python3 or unzip (apt-get install unzip)');
    }
    for (const l of LIBS) {
      if (!existsSync(path.join(tmp, 'lib', l))) throw new StepError(`${l} is missing from ${wheel}`, `use the Linux x86_64 ${PIP_SPEC} wheel`);
    }
    let stripped = false;
    if (strip && have('strip')) {
      for (const l of LIBS) {
        const r = run('strip', ['--strip-unneeded', path.join(tmp, 'lib', l)]);
        if (!r.ok) throw new StepError(`strip ${l} failed: ${tail(r.err)}`, 're-run `npm run setup:native -- --no-strip`');
      }
      stripped = true;
    }
    const libs = Object.fromEntries(LIBS.map((l) => [l, { size: statSync(path.join(tmp, 'lib', l)).size }]));
    writeJsonAtomic(path.join(tmp, 'stamp.json'), { tf: TF_VERSION, wheel: path.basename(wheel), stripped, libs, symbolsChecked: false });
    rmSync(libCache, { recursive: true, force: true });
    renameSync(tmp, libCache);
    const mb = Object.values(libs).reduce((a, b) => a + b.size, 0) / 2 ** 20;
    line('extract', `libtensorflow ${TF_VERSION} → ${libCache} (${mb.toFixed(0)} MiB${stripped ? ', stripped' : strip ? ', not stripped: `strip` not found' : ''})`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// 3. exported symbols ----------------------------------------------------------------------------------------------
function stepSymbols() {
  const stampFile = path.join(libCache, 'stamp.json');
  const stamp = readJson(stampFile);
  if (stamp.symbolsChecked && !force) {
    line('symbols', `${Object.values(SYMBOLS).flat().length} TF_/TFE_ functions exported (checked before)`);
    return;
  }
  if (!have('nm')) {
    line('symbols', 'skipped: `nm` not found (install binutils to check); the build will tell');
    return;
  }
  for (const [lib, names] of Object.entries(SYMBOLS)) {
    const r = run('nm', ['-D', '--defined-only', path.join(libCache, 'lib', lib)]);
    if (!r.ok) throw new StepError(`nm -D ${lib} failed: ${tail(r.err)}`, `delete ${libCache} and re-run (the library may be damaged)`);
    // Lines look like "000000000123abcd T TFE_NewOp@@tensorflow": drop the ELF symbol version.
    const exported = new Set(r.out.split('\n').map((s) => s.trim().split(/\s+/).pop()?.replace(/@.*$/, '')).filter(Boolean));
    const missing = names.filter((n) => !exported.has(n));
    if (missing.length) {
      throw new StepError(`${lib} does not export ${missing.join(', ')}`, `use the ${PIP_SPEC} wheel (other versions may differ)`);
    }
  }
  writeJsonAtomic(stampFile, { ...stamp, symbolsChecked: true });
  line('symbols', `${Object.values(SYMBOLS).flat().length} TF_/TFE_ functions exported`);
}

// 4. stage deps/ ---------------------------------------------------------------------------------------------------
function depsInPlace(pkg) {
  const lib = path.join(pkg, 'deps', 'lib');
  for (const l of LIBS) {
    const p = path.join(lib, l);
    if (!existsSync(p) || statSync(p).size !== statSync(path.join(libCache, 'lib', l)).size) return false;
  }
  for (const [name, target] of Object.entries(LINKS)) {
    try {
      if (readlinkSync(path.join(lib, name)) !== target) return false;
    } catch {
      return false;
    }
  }
  return existsSync(path.join(pkg, 'deps', 'include', 'tensorflow', 'c', 'eager', 'c_api.h'))
    && existsSync(path.join(pkg, 'scripts', 'custom-binary.json'));
}

function linkOrCopy(src, dst) {
  try {
    linkSync(src, dst);
    return 'link';
  } catch (e) {
    if (!['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP'].includes(e.code)) throw e;
    copyFileSync(src, dst);
    return 'copy';
  }
}

function stepStage(pkg) {
  if (!force && depsInPlace(pkg)) {
    line('stage', `${path.relative(root, path.join(pkg, 'deps'))} in place`);
    return false;
  }
  const deps = path.join(pkg, 'deps');
  rmSync(deps, { recursive: true, force: true });
  mkdirSync(path.join(deps, 'lib'), { recursive: true });
  const how = new Set();
  for (const l of LIBS) how.add(linkOrCopy(path.join(libCache, 'lib', l), path.join(deps, 'lib', l)));
  for (const [name, target] of Object.entries(LINKS)) symlinkSync(target, path.join(deps, 'lib', name));
  const incSrc = path.join(libCache, 'include');
  for (const f of walk(incSrc)) {
    const dst = path.join(deps, 'include', path.relative(incSrc, f));
    mkdirSync(path.dirname(dst), { recursive: true });
    how.add(linkOrCopy(f, dst));
  }
  // tfjs-node's install.js: with deps/lib/libtensorflow.so.2.9.1 present it downloads nothing, and with a custom
  // `tf-lib` and no `addon` entry `npm rebuild @tensorflow/tfjs-node` builds the addon from source.
  writeJsonAtomic(path.join(pkg, 'scripts', 'custom-binary.json'), {
    'tf-lib': `spark-setup-native://tensorflow-cpu-${TF_VERSION} (deps/ staged by scripts/setup-native.mjs: run \`npm run setup:native\`)`,
  });
  line('stage', `${path.relative(root, deps)}/{lib,include} (${[...how].join('+') === 'link' ? 'hard links' : [...how].join(' + ')}) + symlinks + custom-binary.json`);
  return true;
}

// 5. JS fixes ------------------------------------------------------------------------------------------------------
const PATCHES = [
  {
    file: 'dist/kernels/Round.js',
    what: 'Round int32 → Identity',
    from: 'return backend.executeSingleInput(tfjs_1.Round, x);',
    to: `/* ${PATCH_MARK}: TF >= 2.17's raw Round kernel returns 0 for integer tensors */\n` +
      `        if (x.dtype === 'int32') {\n            return backend.executeSingleInput('Identity', x);\n        }\n` +
      '        return backend.executeSingleInput(tfjs_1.Round, x);',
  },
  {
    file: 'dist/nodejs_kernel_backend.js',
    what: 'histogram stack of scalars',
    from: 'return tf.concat([bucketStart, bucketEnd, bucketCounts_1]).reshape([1, 3]);',
    to: `/* ${PATCH_MARK}: TF 2.21 ConcatV2 rejects scalars */ return tf.stack([bucketStart, bucketEnd, bucketCounts_1]).reshape([1, 3]);`,
  },
];

function stepPatch(pkg) {
  const done = [];
  for (const p of PATCHES) {
    const file = path.join(pkg, p.file);
    const src = readFileSync(file, 'utf8');
    if (src.includes(`${PATCH_MARK}`) && src.includes(p.to)) continue;
    if (!src.includes(p.from)) {
      throw new StepError(`cannot apply the fix "${p.what}": ${p.file} does not contain the expected code`,
        'this script supports @tensorflow/tfjs-node 4.22.0 only (check package.json, then `npm ci`)');
    }
    writeTextAtomic(file, src.replace(p.from, p.to));
    done.push(p.what);
  }
  line('patch', done.length ? `applied: ${done.join('; ')}` : `${PATCHES.length} JS fixes in place`);
}

// 6. build the addon -----------------------------------------------------------------------------------------------
function addonPath(pkg) {
  const pj = JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8'));
  const napi = Math.max(...pj.binary.napi_versions.filter((v) => v <= Number(process.versions.napi)));
  return path.join(pkg, pj.binary.module_path.replace('{napi_build_version}', String(napi)), `${pj.binary.module_name}.node`);
}

function nodeDir() {
  const given = process.env.npm_config_nodedir;
  if (given) {
    if (existsSync(path.join(given, 'include', 'node', 'node_api.h'))) return given;
    throw new StepError(`npm_config_nodedir=${given} has no include/node/node_api.h (Node headers)`,
      'point npm_config_nodedir (or nodedir in .npmrc) at the folder holding include/node, e.g. /usr, or unset it');
  }
  const prefix = path.dirname(path.dirname(process.execPath));
  if (existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  const gypCache = path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node', 'node_api.h');
  if (existsSync(gypCache)) return null; // node-gyp's own header cache
  throw new StepError(`Node ${process.version} headers not found (looked in ${prefix}/include/node and ~/.cache/node-gyp)`,
    'install them (Debian/Ubuntu: apt-get install libnode-dev, or use an official Node tarball) or set npm_config_nodedir=<dir with include/node>');
}

function buildStampOk(pkg, addon) {
  const stamp = readJson(path.join(pkg, 'deps', 'spark-build.json'));
  if (!stamp || !existsSync(addon)) return false;
  const a = fileSig(addon);
  return stamp.node === process.versions.modules && stamp.tf === TF_VERSION && stamp.addon?.size === a.size && stamp.addon?.mtimeMs === a.mtimeMs;
}

function stepBuild(pkg, restaged) {
  const addon = addonPath(pkg);
  if (!force && !restaged && buildStampOk(pkg, addon)) {
    line('build', `${path.relative(root, addon)} in place`);
    return false;
  }
  const missingTools = ['g++', 'make'].filter((c) => !have(c));
  if (!have('python3') && !have('python')) missingTools.push('python3');
  if (missingTools.length) {
    throw new StepError(`cannot build the addon: ${missingTools.join(', ')} not found`, 'install a C++ toolchain (Debian/Ubuntu: apt-get install g++ make python3)');
  }
  const preGyp = path.join(root, 'node_modules', '.bin', 'node-pre-gyp');
  if (!existsSync(preGyp)) throw new StepError('node_modules/.bin/node-pre-gyp not found', 'run `npm ci` first');
  const nd = nodeDir();
  const args = ['install', '--build-from-source', ...(nd ? [`--nodedir=${nd}`] : [])];
  rmSync(path.join(pkg, 'build'), { recursive: true, force: true });
  const r = run(preGyp, args, { cwd: pkg, env: { ...process.env, JOBS: String(Math.max(1, os.availableParallelism())) } });
  if (!r.ok || !existsSync(addon)) {
    const out = tail(`${r.out}\n${r.err}`, 25);
    const hint = /gyp.*(download|ENOTFOUND|EAI_AGAIN)|getaddrinfo/i.test(out)
      ? 'node-gyp tried to download Node headers: set npm_config_nodedir to a folder with include/node'
      : /cannot find -ltensorflow|tensorflow\/c\/.*No such file/.test(out)
        ? 're-run `npm run setup:native -- --force` (deps/ is incomplete)'
        : 'install g++, make and python3; see the compiler output above';
    throw new StepError(`node-pre-gyp ${args.join(' ')} failed in ${pkg}:\n${out}`, hint);
  }
  writeJsonAtomic(path.join(pkg, 'deps', 'spark-build.json'), { node: process.versions.modules, tf: TF_VERSION, addon: fileSig(addon) });
  line('build', `${path.relative(root, addon)} built from source (nodedir=${nd ?? '~/.cache/node-gyp'})`);
  return true;
}

// 6b. spark's own TensorFlow ops (native/tf/spark_tf_ops.cc) ------------------------------------------------------
/**
 * A small Node addon that registers spark's ops (fused LAMB / AdamW / global norm, exact GELU) with the TensorFlow
 * that tfjs-node loads, through TensorFlow's C op/kernel API (src/backend/tf-native-ops.ts loads it). Built with the
 * system g++ against the staged deps/lib and Node's headers; rebuilt when the source, TensorFlow or Node changes.
 * Optional: when it cannot be built the backend works without it (slower optimizer and GELU), with a warning here.
 */
function stepOps(pkg, force) {
  const src = path.join(root, 'native', 'tf', 'spark_tf_ops.cc');
  // the .cc and the optimizer loops it shares with the torch addon (as src/backend/tf-native-ops.ts hashes them)
  const sources = ['native/tf/spark_tf_ops.cc', 'native/torch/spark_fused_optim.h', 'native/torch/spark_gelu.h', 'native/torch/spark_simd.h'];
  if (!sources.every((f) => existsSync(path.join(root, f)))) return;
  const out = path.join(pkg, 'deps', 'spark-ops');
  const addon = path.join(out, 'spark_tf_ops.node');
  const hash = createHash('sha256');
  for (const f of sources) hash.update(f).update('\0').update(readFileSync(path.join(root, f))).update('\0');
  const sourceHash = hash.digest('hex');
  const stamp = readJson(path.join(out, 'stamp.json'));
  const lib = path.join(pkg, 'deps', 'lib');
  if (!force && stamp && existsSync(addon) && stamp.sourceHash === sourceHash && stamp.tf === TF_VERSION && stamp.node === process.versions.modules && stamp.lib === lib) {
    line('ops', `${path.relative(root, addon)} in place`);
    return;
  }
  const warn = (why) => line('ops', `WARNING: spark's TensorFlow ops not built (${why}); the tensorflow backend runs without them (slower optimizer and GELU)`);
  if (!have('g++')) return warn('g++ not found; install a C++ toolchain');
  let nd;
  try {
    nd = nodeDir();
  } catch (e) {
    return warn(e.message);
  }
  const nodeInclude = nd ? path.join(nd, 'include', 'node') : path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node');
  mkdirSync(out, { recursive: true });
  const tmp = path.join(out, `.tmp-${process.pid}.node`);
  // -march=native: built and run on this machine; -ffp-contract=off keeps the reference chains' rounding (no fused
  // multiply-add); -fno-math-errno lets sqrt vectorise, -fno-trapping-math compare-and-select loops
  const args = ['-std=c++17', '-O3', '-march=native', '-ffp-contract=off', '-fno-math-errno', '-fno-trapping-math', '-fPIC', '-shared', '-DNODE_GYP_MODULE_NAME=spark_tf_ops',
    `-I${nodeInclude}`, `-I${path.join(pkg, 'deps', 'include')}`, src, '-o', tmp, `-L${lib}`, '-l:libtensorflow_framework.so.2', `-Wl,-rpath,${lib}`];
  const r = run('g++', args);
  if (!r.ok || !existsSync(tmp)) {
    rmSync(tmp, { force: true });
    return warn(`g++ failed: ${tail(r.err || r.out, 6)}`);
  }
  renameSync(tmp, addon);
  writeJsonAtomic(path.join(out, 'stamp.json'), { sourceHash, tf: TF_VERSION, node: process.versions.modules, lib, command: `g++ ${args.join(' ')}` });
  line('ops', `${path.relative(root, addon)} built (g++, ${((Date.now() - t0) / 1000).toFixed(1)}s since start)`);
}

// 7. verify --------------------------------------------------------------------------------------------------------
const VERIFY = `
const t0 = Date.now();
const tf = require('@tensorflow/tfjs-node');
const b = tf.getBackend();
if (b !== 'tensorflow') throw new Error('backend is ' + b);
const ver = tf.backend().binding.TF_Version;
const full = process.argv[1] === 'full';
function rel(a, b) { let m = 0, s = 0; for (let i = 0; i < a.length; i++) { m = Math.max(m, Math.abs(a[i] - b[i])); s = Math.max(s, Math.abs(b[i])); } return m / (s || 1); }
function data(seed, n) { let x = seed >>> 0; const out = new Float32Array(n); for (let i = 0; i < n; i++) { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; out[i] = x / 4294967296 - 0.5; } return out; }
function work() {
  const A = tf.tensor2d(data(1, 64 * 48), [64, 48]), B = tf.tensor2d(data(2, 48 * 32), [48, 32]);
  const mm = tf.matMul(A, B).dataSync();
  const x = tf.tensor4d(data(3, 2 * 9 * 9 * 3), [2, 9, 9, 3]);
  const w1 = tf.variable(tf.tensor4d(data(4, 3 * 3 * 3 * 8), [3, 3, 3, 8]));
  const w2 = tf.variable(tf.tensor4d(data(5, 3 * 3 * 8 * 4), [3, 3, 8, 4]));
  const g = tf.variableGrads(() => tf.conv2d(tf.relu(tf.conv2d(x, w1, 2, 'same')), w2, 1, 'valid').square().mean(), [w1, w2]);
  const out = { mm, loss: g.value.dataSync(), g1: g.grads[w1.name].dataSync(), g2: g.grads[w2.name].dataSync(), round: tf.round(tf.tensor1d([3, -2], 'int32')).dataSync() };
  w1.dispose(); w2.dispose();
  return out;
}
const n = work();
const msgs = [];
if (n.round[0] !== 3 || n.round[1] !== -2) throw new Error('Round int32 gives ' + Array.from(n.round) + ' (JS fix missing)');
if (full) {
  tf.setBackend('cpu');
  const c = work();
  for (const k of ['mm', 'loss', 'g1', 'g2']) { const e = rel(n[k], c[k]); if (!(e < 1e-4)) throw new Error(k + ' differs from the cpu backend: rel err ' + e); msgs.push(k + ' ' + e.toExponential(1)); }
}
console.log(JSON.stringify({ backend: b, tf: ver, checks: msgs.join(', '), ms: Date.now() - t0 }));
`;

function stepVerify(pkg, changed) {
  if (opt['skip-verify']) {
    line('verify', 'skipped (--skip-verify)');
    return;
  }
  const env = { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2', TF_NUM_INTRAOP_THREADS: process.env.TF_NUM_INTRAOP_THREADS ?? '2', TF_NUM_INTEROP_THREADS: '1' };
  const r = run(process.execPath, ['-e', VERIFY, changed ? 'full' : 'quick'], { cwd: root, env });
  let res = null;
  try {
    res = JSON.parse(r.out.trim().split('\n').pop());
  } catch {
    /* reported below */
  }
  if (!r.ok || !res) {
    throw new StepError(`loading @tensorflow/tfjs-node failed:\n${tail(r.err || r.out, 12)}`, 're-run `npm run setup:native -- --force`; if it still fails, report the message above');
  }
  if (res.tf !== TF_VERSION) throw new StepError(`the addon reports TensorFlow ${res.tf}, expected ${TF_VERSION}`, 're-run `npm run setup:native -- --force`');
  line('verify', `backend 'tensorflow', TF ${res.tf}${res.checks ? `; vs cpu max rel err: ${res.checks}` : '; Round int32, matmul and conv2d gradients run'}`);
}

// -----------------------------------------------------------------------------------------------------------------
try {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new StepError(`this script supports linux x64 only (this is ${process.platform} ${process.arch})`,
      'on other platforms install @tensorflow/tfjs-node the official way (npm rebuild @tensorflow/tfjs-node with scripts enabled)');
  }
  const pkg = findTfjsNode();
  let cached = force ? null : cacheComplete();
  const wheel = stepWheel(!!cached);
  if (!cached) {
    stepExtract(wheel);
    cached = cacheComplete();
  } else {
    line('extract', `libtensorflow ${TF_VERSION} in ${libCache}${cached.stripped ? ' (stripped)' : ''}`);
  }
  stepSymbols();
  const restaged = stepStage(pkg);
  stepPatch(pkg);
  const rebuilt = stepBuild(pkg, restaged);
  stepOps(pkg, restaged || rebuilt || force);
  stepVerify(pkg, restaged || rebuilt || force);
  process.stdout.write(`setup-native: done in ${((Date.now() - t0) / 1000).toFixed(1)}s — the 'tensorflow' backend is ready (spark doctor shows it)\n`);
} catch (e) {
  if (e instanceof StepError) {
    process.stderr.write(`setup-native: FAILED: ${e.message}\n  fix: ${e.fix}\n`);
  } else {
    process.stderr.write(`setup-native: FAILED (unexpected): ${e?.stack ?? e}\n  fix: re-run \`npm run setup:native -- --force\`; report the error if it persists\n`);
  }
  process.exit(1);
}
