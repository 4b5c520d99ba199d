#!/usr/bin/env bash
# Development build of the torch addon (the real, cached build is `npm run setup:torch`).
#   native/torch/build-dev.sh [out.node]     (default: native/torch/build/spark_torch.node)
# Uses $SPARK_TORCH_PYTHON, else .venv-ref/bin/python, else python3, to find PyTorch.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${SPARK_TORCH_PYTHON:-}"
[ -z "$py" ] && [ -x "$root/.venv-ref/bin/python" ] && py="$root/.venv-ref/bin/python"
[ -z "$py" ] && py=python3
out="${1:-$here/build/spark_torch.node}"
mkdir -p "$(dirname "$out")"
read -r abi inc lib cuda < <("$py" -c '
import torch, torch.utils.cpp_extension as c
print(int(torch.compiled_with_cxx11_abi()), ":".join(c.include_paths()), c.library_paths()[0], int(torch.version.cuda is not None))')
nodeinc="$(dirname "$(dirname "$(command -v node)")")/include/node"
incs=()
IFS=: read -ra parts <<<"$inc"
for p in "${parts[@]}"; do incs+=("-I$p"); done
libs=(-ltorch_cpu -lc10)
[ "$cuda" = 1 ] && libs+=(-Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed)
set -x
g++ -O3 -ffp-contract=off -fno-math-errno -fno-trapping-math -std=c++17 -shared -fPIC -DNODE_GYP_MODULE_NAME=spark_torch -D_GLIBCXX_USE_CXX11_ABI="$abi" -I"$nodeinc" "${incs[@]}" \
  "$here"/*.cc -o "$out" -L"$lib" -Wl,-rpath,"$lib" "${libs[@]}"
