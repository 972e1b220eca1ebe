#!/usr/bin/env bash
# Issue-5 model benchmark: training and prediction throughput (molecules/s) and peak RSS of the C++
# FLT molecule model (default configuration) against the PyTorch implementation of the same model
# in tools/bench/torch/, with 1 and 2 threads, interleaved in one run, median of the rounds.
# Not part of ctest. Needs Debian's python3-torch (CPU).
#
#   tools/bench/run_model_bench.sh [--quick] [--repeats N] [--steps N] [--pred-molecules N] [--threads 1,2]
#
# Builds bench_model in Release (build dir: $FLT_BENCH_BUILD_DIR, default build-bench-model/,
# configured only when it does not exist yet), then runs tools/bench/torch/run_model_bench.py,
# which prints the table and writes it to <build>/model_bench/table.md (raw runs: results.json).
# docs/benchmarks/model_throughput.md quotes runs with reduced settings (named there). Full mode (3 rounds, 200 steps, 4096
# molecules) takes tens of minutes on 2 cores, far longer when they are shared (2-thread runs slow
# down about 8x under oversubscription); --quick (1 round, 30 steps, 512 molecules) about 6-10 min
# on the loaded machine of the first measurement.
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
cmake --build "$build" --target bench_model -j2 >/dev/null

exec "$python" "$root/tools/bench/torch/run_model_bench.py" --build-dir "$build" \
  --command "tools/bench/run_model_bench.sh${*:+ $*}" "$@"
