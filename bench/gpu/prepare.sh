#!/usr/bin/env bash
# Prepares the GPU check's payload on THIS machine (it has Node, node_modules and esbuild; the GPU machine has
# none of them): bench/gpu/.out/ (git-ignored), carried to the GPU machine beside the checkout (< 64 MiB in all):
#   node.xz        this Node binary, xz-compressed (~24 MB)          node.version  its version and size
#   node-include/  the four N-API headers the addon compiles against
#   bench.mjs      bench/gpu/entry.ts as one esbuild bundle: tfjs + the torch backend + the trainer's step
#                  (native packages external and never loaded: tfjs-node, tfjs-node-gpu, sharp)
# Idempotent: the Node binary is recompressed only when it changed. Then see bench/gpu/README.md for the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=bench/gpu/.out
mkdir -p "$out/node-include"
fail() { echo "prepare: FAILED: $*" >&2; exit 1; }

node_bin=$(readlink -f "$(command -v node)") || fail "node not found"
stamp="$(node --version) $(stat -c %s "$node_bin")"
if [ ! -s "$out/node.xz" ] || [ "$(cat "$out/node.version" 2>/dev/null)" != "$stamp" ]; then
  command -v xz >/dev/null || fail "xz not found (apt-get install xz-utils)"
  echo "prepare: compressing $node_bin ($(node --version)) ..."
  xz -6 -T0 -c "$node_bin" >"$out/node.xz.tmp"
  mv "$out/node.xz.tmp" "$out/node.xz"
  echo "$stamp" >"$out/node.version"
fi
if ldd "$node_bin" 2>/dev/null | grep -q libnode; then
  fail "$node_bin links libnode.so dynamically; carry a static Node build (the official tarball's bin/node)"
fi

hdr="${SPARK_NODE_HEADERS:-$(dirname "$(dirname "$node_bin")")/include/node}"
for h in node_api.h node_api_types.h js_native_api.h js_native_api_types.h; do
  [ -f "$hdr/$h" ] || fail "$hdr/$h missing (set SPARK_NODE_HEADERS to Node's include/node)"
  cp "$hdr/$h" "$out/node-include/"
done

bash bench/gpu/bundle.sh "$out/bench.mjs" || fail "bundling bench/gpu/entry.ts failed (above)"

# Everything that travels: tracked + untracked-not-ignored files, plus this folder (carried).
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | du --files0-from=- -cb 2>/dev/null | tail -1 | cut -f1)
payload=$(du -sb "$out" | cut -f1)
total=$((tree + payload))
printf 'prepare: %s node.xz %s, bench.mjs %s; working tree %s MiB + payload %s MiB = %s MiB (limit 64)\n' \
  "$out" "$(du -h "$out/node.xz" | cut -f1)" "$(du -h "$out/bench.mjs" | cut -f1)" \
  $((tree / 1048576)) $((payload / 1048576)) $((total / 1048576))
[ "$total" -lt $((60 * 1048576)) ] || fail "payload too large: $((total / 1048576)) MiB (keep under 60 MiB)"
echo "prepare: done; run it as bench/gpu/README.md says"
