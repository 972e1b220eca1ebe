#!/bin/sh
# The README's main-job command: installs the Debian packages (as root), builds flt and predicts
# properties for the example molecules in molecules/ with the bundled default model.
set -eu
cd "$(dirname "$0")/.."
build_dir="${FLT_BUILD_DIR:-build}"
jobs="${FLT_JOBS:-$(nproc)}"
if [ "$(id -u)" -eq 0 ]; then tools/install-deps.sh; else sudo tools/install-deps.sh; fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" --parallel "$jobs" --target flt
"$build_dir/flt" --help
