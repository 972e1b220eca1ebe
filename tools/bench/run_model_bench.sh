#!/usr/bin/env bash
# Model benchmark: training and prediction throughput (molecules/s) and peak RSS of the C++ FLT
# molecule model in its default configuration (attention near_far) against the PyTorch
# implementation of the same model in tools/bench/torch/, with 1 and 2 threads, interleaved in one
# run, median of the rounds and per-round ratios, and the prediction's fraction of the float32 FMA
# peak. Not part of ctest. Needs Debian's python3-torch (CPU).
#
#   tools/bench/run_model_bench.sh [--quick] [--repeats N] [--steps N] [--pred-molecules N]
#                                  [--threads 1,2] [--model TRAINED_NEAR_FAR.flt]
#
# Builds bench_model and flt in Release (build dir: $FLT_BENCH_BUILD_DIR, default build-bench-model/,
# configured only when it does not exist yet), then runs tools/bench/torch/run_model_bench.py,
# which prints the table and writes it to <build>/model_bench/table.md (raw runs: results.json).
# Without --model it predicts with models/default.flt if that is a near_far model, otherwise with
# a model it trains once for one epoch (flt train --config datasets/qm9/default_model.ini
# --attention near_far --epochs 1, a few minutes) and keeps in <build>/model_bench/near_far_run/.
# Full mode (3 rounds, 200 steps, 4096 molecules) takes tens of minutes on 2 cores, far longer when
# they are shared; --quick (1 round, 30 steps, 512 molecules) a few minutes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FLT_BENCH_BUILD_DIR:-$root/build-bench-model}"
python="${FLT_BENCH_PYTHON:-/usr/bin/python3}"

if ! "$python" -c "import torch" 2>/dev/null; then
  echo "run_model_bench.sh: $python cannot import torch (install Debian's python3-torch)" >&2
  exit 1
fi
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target bench_model flt -j2 >/dev/null

exec "$python" "$root/tools/bench/torch/run_model_bench.py" --build-dir "$build" \
  --command "tools/bench/run_model_bench.sh${*:+ $*}" "$@"
