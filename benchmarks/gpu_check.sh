#!/usr/bin/env bash
# GPU check (issue 21, item 7): the GPU-marked tests, then the level-set throughput and peer benchmarks at
# N up to 65,536, on one CUDA machine, in under 8 minutes; every result lands in one folder.
#
# Usage (from anywhere):  bash benchmarks/gpu_check.sh [OUT_DIR]
#   OUT_DIR defaults to $OUT (the device machine's result folder), else benchmarks/results/gpu_check.
#   PYTHON overrides the interpreter (default: the repository's .venv/bin/python, else python3).
# Exit status: 0 when every step ran, 1 when a step failed or ran past its time, 2 without CUDA.
# The peers need the benchmark extra (pip install -e .[peers]); a peer not installed is a row saying so.
#
# Time plan (seconds, hard limits per step; 450 in all, under the 480 asked):
#   pytest -m gpu 90 | throughput (raw, prior IS, mh, smc at N = 4,096 / 16,384 / 65,536) 180 |
#   peers on house/rocket at concentration 1,000, one seed, 30 s budget a peer, SMC at N = 65,536: 180
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/benchmarks/results/gpu_check}}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
cd "$ROOT" || exit 1

if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device is visible to torch ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1)); nothing was run. Run this on a machine with an NVIDIA GPU and a CUDA build of torch." >&2
    exit 2
fi
mkdir -p "$OUT_DIR" || { echo "gpu_check: cannot create the output folder $OUT_DIR" >&2; exit 1; }
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
echo "gpu_check: $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0), "torch", torch.__version__)'); results in $OUT_DIR"

status=0
step() {  # step NAME SECONDS COMMAND...: run with a hard time limit, log to OUT_DIR/NAME.log
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
    local rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "gpu_check: $name ran past its ${limit}s limit (log: $OUT_DIR/$name.log)"; status=1
    elif [[ $rc -ne 0 ]]; then
        echo "gpu_check: $name failed with status $rc (log: $OUT_DIR/$name.log)"; tail -5 "$OUT_DIR/$name.log"; status=1
    else
        echo "gpu_check: $name ok in $((SECONDS - start)) s"
    fi
}

step pytest_gpu 90 "$PYTHON" -m pytest -q -m gpu -n 0 -p no:cacheprovider --junitxml="$OUT_DIR/pytest_gpu.xml"
# Throughput: a fresh process per row, so rows carry their own peak memory; NUTS (minutes) is left out.
step throughput 180 "$PYTHON" benchmarks/levelset_throughput.py --device cuda --methods raw is mh smc \
    --sizes 4096 16384 65536 --out "$OUT_DIR/levelset_throughput_cuda.json"
step peers 180 "$PYTHON" benchmarks/levelset_peers.py --device cuda --cases house-rocket-c1000 --seeds 0 \
    --max-seconds 30 --particles 65536 --out "$OUT_DIR/levelset_peers_cuda.json"
echo "gpu_check: done in $SECONDS s, status $status"
exit $status
