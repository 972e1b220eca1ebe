#!/bin/sh
# The README's main-job command: installs the Debian packages (as root), builds flt, and predicts
# the properties of the example molecules in molecules/ with the bundled default model
# (models/default.flt). Prints a table with units and writes the annotated SDF
# out/predictions.sdf (every input record with its tags, plus one SD tag per prediction).
set -eu
cd "$(dirname "$0")/.."
build_dir="${FLT_BUILD_DIR:-build}"
jobs="${FLT_JOBS:-$(nproc)}"
if [ "$(id -u)" -eq 0 ]; then tools/install-deps.sh; else sudo tools/install-deps.sh; fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" --parallel "$jobs" --target flt
mkdir -p out
"$build_dir/tools/flt" predict molecules/qm9_test_examples.xyz molecules/cdk2_ligands.sdf \
    --table -o out/predictions.sdf
