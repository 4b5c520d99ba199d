#!/usr/bin/env bash
# bench/gpu/bundle.sh <out.mjs>: bench/gpu/entry.ts as one ES module for a machine without node_modules: tfjs, the
# torch backend and the trainer's step inside; the native packages (tfjs-node, tfjs-node-gpu, sharp) external and
# never loaded on that path. Fails when the torch backend could not be bundled.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:?usage: bench/gpu/bundle.sh <out.mjs>}
esb=node_modules/.bin/esbuild
[ -x "$esb" ] || { echo "bundle: $esb not found (npm ci installs it with tsx)" >&2; exit 1; }
"$esb" bench/gpu/entry.ts --bundle --platform=node --format=esm --target=node20 --outfile="$out" \
  --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu --external:sharp \
  "--banner:js=import { createRequire as __sparkRequire } from 'module'; const require = __sparkRequire(import.meta.url);" \
  --log-level=error
# A dynamic import esbuild could not resolve stays a runtime import: then the backend is not in the bundle.
if grep -q 'import("./torch/index.js")' "$out"; then
  echo "bundle: src/backend/torch/index.ts is not in this checkout: the bundle would have no torch backend" >&2
  exit 1
fi
