#!/bin/sh
# The README's test command: installs the Debian packages (as root), configures, builds and runs
# the whole test suite through ctest. Exits non-zero when any step or any test fails.
# Environment: FLT_BUILD_DIR (default build), FLT_WERROR=ON to treat warnings as errors (CI),
# FLT_JOBS (default: number of cores), FLT_WITH_MPI (default ON: builds the MPI support and runs
# its tests under mpiexec; OFF tests the build without MPI).
set -eu
cd "$(dirname "$0")/.."
build_dir="${FLT_BUILD_DIR:-build}"
jobs="${FLT_JOBS:-$(nproc)}"
if [ "$(id -u)" -eq 0 ]; then tools/install-deps.sh; else sudo tools/install-deps.sh; fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DFLT_WERROR="${FLT_WERROR:-OFF}" \
  -DFLT_WITH_MPI="${FLT_WITH_MPI:-ON}" >/dev/null
cmake --build "$build_dir" --parallel "$jobs"
ctest --test-dir "$build_dir" --output-on-failure --parallel "$jobs"
