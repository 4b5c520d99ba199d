#!/usr/bin/env bash
# The GPU check (issue 11): runs on a machine with an NVIDIA GPU and a CUDA build of PyTorch but no Node and no
# package registry, from the checkout plus bench/gpu/.out (made by bench/gpu/prepare.sh). In order:
#   1. unpack the carried Node; 2. build the torch addon against this machine's torch (scripts/setup-torch.mjs
#   under the carried Node, the carried N-API headers); 3. self-check (conv + gradients vs the cpu backend);
#   4. a few small SparK steps on the GPU (TF32 off) whose losses must equal bench/gpu/cpu-losses.json (recorded on
#   torch CPU) within relative 1e-4; 5. the SparK step in PyTorch (bench/torch_spark.py --device cuda, nchw and
#   channels_last; the predictable part first) and 6. the same step on the torch backend (TF32 on, PyTorch's
#   default), for each model and batch; 7. one table. All inside --budget seconds (default 450 s; each stage gets what is left).
# Outputs go to $OUT (the device tool's folder, which returns at most 8 files) or --out: run.log (every stage's
# output), losses.json, spark.json, torch.json, table.md (+ losses-vs-cpu-here.json when the recorded losses differ:
# the same steps on this machine's CPU, in case the recording is stale).
#
#   bash bench/gpu/run.sh [--device cuda:0] [--models resnet50,convnext_small] [--batches 32,64] [--size 224]
#        [--warmup 3] [--iters 10] [--python python3] [--budget 450] [--out DIR]
# A CPU rehearsal of the whole pipeline (any machine with torch): --device cpu --models resnet_mini --batches 2 --size 64
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
T0=$SECONDS
device=cuda:0 models=resnet50,convnext_small batches=32,64 size=224 warmup=3 iters=10 budget=450
python="${SPARK_TORCH_PYTHON:-python3}" outdir="${OUT:-/tmp/spark-gpu-check}"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2 ;; --models) models=$2 ;; --batches) batches=$2 ;; --size) size=$2 ;;
    --warmup) warmup=$2 ;; --iters) iters=$2 ;; --python) python=$2 ;; --budget) budget=$2 ;; --out) outdir=$2 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
payload=bench/gpu/.out
mkdir -p "$outdir"
work=$(mktemp -d /tmp/spark-gpu.XXXXXX)
exec > >(tee -a "$outdir/run.log") 2>&1
log() { echo "[gpu-check $((SECONDS - T0))s] $*"; }
left() { echo $((budget - (SECONDS - T0))); }
# stage <name> <cap seconds> <command...>: run with min(cap, time left - 10 s); output to the console and $work/<name>.log
stage() {
  local name=$1 cap=$2 t
  shift 2
  t=$(left); t=$((t - 10)); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -le 5 ]; then log "$name: SKIPPED (budget of ${budget}s spent)"; return 124; fi
  log "$name (limit ${t}s): $*"
  timeout --kill-after=5 "$t" "$@" 2>&1 | tee "$work/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] && log "$name: ok" || log "$name: FAILED (exit $rc)"
  return "$rc"
}
fail() { log "FAILED: $*"; exit 1; }

[ -s "$payload/node.xz" ] && [ -s "$payload/bench.mjs" ] || fail "$payload is missing: run bash bench/gpu/prepare.sh where Node is, and carry bench/gpu/.out"
xz -dc "$payload/node.xz" >"$work/node" && chmod +x "$work/node" || fail "cannot unpack $payload/node.xz"
export PATH="$work:$PATH" SPARK_NODE_HEADERS="$PWD/$payload/node-include" TF_CPP_MIN_LOG_LEVEL=2
log "node $(node --version) ($(command -v node)); $("$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/[gpu-check] gpu: /'

stage setup 240 node scripts/setup-torch.mjs --python "$python" --skip-check || fail "the addon did not build (above)"
addon=$(grep -o 'setup-torch: done in [0-9.]*s: [^ ]*' "$work/setup.log" | awk '{print $NF}')
[ -n "$addon" ] && export SPARK_TORCH_ADDON="$addon"
bench=(node "$payload/bench.mjs")
stage check 90 "${bench[@]}" check --device "$device" || fail "self-check failed (above)"
stage losses 120 "${bench[@]}" losses --device "$device" --expect bench/gpu/cpu-losses.json --out "$outdir/losses.json"
losses_rc=$?
if [ "$losses_rc" -ne 0 ] && [ "$device" != cpu ]; then
  # The recorded CPU losses may be stale (the backend's numerics changed since): compare with this machine's CPU too.
  stage losses-cpu 120 "${bench[@]}" losses --device cpu --out "$work/cpu-here.json" &&
    stage losses-here 90 "${bench[@]}" losses --device "$device" --expect "$work/cpu-here.json" --out "$outdir/losses-vs-cpu-here.json"
fi
"${bench[@]}" cases --models "$models" --batches "$batches" --size "$size" >"$work/cases.json" || fail "cases"
threads=$(nproc)
# its JSON (stdout) goes to torch.json, its progress (stderr) to the console and torch.log
stage torch 150 bash -c 'PYTHONUNBUFFERED=1 "$@" >"'"$outdir"'/torch.json"' _ "$python" bench/torch_spark.py --device "$device" \
  --cases "$(cat "$work/cases.json")" --modes sparse --formats nchw,channels_last --warmup "$warmup" --iters "$iters" \
  --threads "$threads"
torch_rc=$?
stage spark 240 "${bench[@]}" bench --device "$device" --models "$models" --batches "$batches" --size "$size" \
  --warmup "$warmup" --iters "$iters" --out "$outdir/spark.json"
spark_rc=$?
echo
table_args=(--spark "$outdir/spark.json" --torch "$outdir/torch.json" --out "$outdir/table.md")
[ -s "$outdir/losses.json" ] && table_args+=(--losses "$outdir/losses.json")
if [ -s "$outdir/spark.json" ] && [ -s "$outdir/torch.json" ]; then
  "${bench[@]}" table "${table_args[@]}"
  table_rc=$?
else
  log "no table: spark.json or torch.json missing (see the spark and torch stages above)"; table_rc=1
fi
log "done in $((SECONDS - T0))s (budget ${budget}s): losses rc=$losses_rc spark rc=$spark_rc torch rc=$torch_rc table rc=$table_rc; outputs in $outdir"
rm -rf "$work"
[ $losses_rc -eq 0 ] && [ $spark_rc -eq 0 ] && [ $torch_rc -eq 0 ] && [ $table_rc -eq 0 ]
