#!/usr/bin/env bash
# Optional: the PyTorch reference used by the parity tests (model-parity, interop-export), in .venv-ref/.
# Installs torch 2.13.0+cpu, numpy and timm with pip (a local index / find-links is enough; PIP_RETRIES=0 skips
# pip's retries of an unreachable public index). Idempotent: an existing .venv-ref with all three is left alone.
# Without it those tests skip and print why. SPARK_PYTHON=<python> points the tests at another interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv-ref
TORCH_SPEC=${SPARK_TORCH_SPEC:-torch==2.13.0+cpu}
check() { "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in ("torch", "numpy", "timm")) else 1)' 2>/dev/null; }
if [ -x "$VENV/bin/python" ] && check; then
  echo "setup-reference: $VENV already has torch, numpy and timm ($("$VENV/bin/python" -c 'import importlib.metadata as m; print("torch", m.version("torch"))'))"
  exit 0
fi
PY=$(command -v python3 || command -v python || true)
if [ -z "$PY" ]; then
  echo "setup-reference: FAILED: python3 not found" >&2
  echo "  fix: install python3 with venv and pip (Debian: apt-get install python3-venv), or set SPARK_PYTHON" >&2
  exit 1
fi
"$PY" -m venv "$VENV" || { echo "setup-reference: FAILED: '$PY -m venv' failed; fix: apt-get install python3-venv" >&2; exit 1; }
export PIP_RETRIES=${PIP_RETRIES:-0} PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VENV/bin/pip" install -q "$TORCH_SPEC" numpy timm 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2; then :; fi
if ! check; then
  echo "setup-reference: FAILED: pip could not install $TORCH_SPEC, numpy and timm into $VENV" >&2
  echo "  fix: make the wheels reachable (pip index or PIP_FIND_LINKS), or set SPARK_TORCH_SPEC to an available torch" >&2
  exit 1
fi
echo "setup-reference: $VENV ready ($("$VENV/bin/python" -c 'import importlib.metadata as m; print("torch", m.version("torch"), "timm", m.version("timm"))'))"
