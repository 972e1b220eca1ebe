#!/bin/sh
# Builds the libFuzzer targets with clang (AddressSanitizer + UndefinedBehaviorSanitizer) and runs
# each for SECONDS seconds, one after the other, seeded with the repository's test
# files. Usage: tools/fuzz/run_fuzz.sh SECONDS [TARGET...]   (targets: fuzz_xyz fuzz_sdf)
# Environment: FLT_FUZZ_BUILD_DIR (default build-fuzz), FLT_FUZZ_WORK (default $BUILD/fuzz-work),
# FLT_JOBS (default 2). Needs clang and libclang-rt-14-dev (Debian). Exit status non-zero when a
# target found a crash; the reproducer is left in the work folder (crash-*).
set -eu
cd "$(dirname "$0")/../.."
seconds="${1:?usage: tools/fuzz/run_fuzz.sh SECONDS [TARGET...]}"
shift
targets="${*:-fuzz_xyz fuzz_sdf}"
build="${FLT_FUZZ_BUILD_DIR:-build-fuzz}"
work="${FLT_FUZZ_WORK:-$build/fuzz-work}"
cases="$(pwd)/tests/data/parser-cases"
command -v clang++ >/dev/null || { echo "run_fuzz.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
      -DFLT_FUZZ=ON -DFLT_BUILD_TESTS=OFF >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" --target $targets -j "${FLT_JOBS:-2}"

status=0
for target in $targets; do
  corpus="$work/$target/corpus"
  mkdir -p "$corpus" "$work/$target/artifacts"
  case "$target" in
    fuzz_xyz) pattern='*.xyz' ;;
    fuzz_sdf) pattern='*.sd[f]' ;;
  esac
  # Seeds: the first byte selects the reader options, so prefix each file with one. SDF files are
  # split into single records (at most 20 per file): small inputs keep the executions fast.
  for dir in tests/chem/data "$cases"; do
    [ -d "$dir" ] || continue
    find "$dir" -name "$pattern" | while read -r f; do
      name="$corpus/seed_$(echo "$f" | tr '/' '_')"
      [ -e "$name" ] || [ -e "${name}_1" ] && continue
      if [ "$target" = fuzz_sdf ]; then
        awk -v base="$name" 'BEGIN { n = 1; printf "%c", 0 > (base "_" n) }
             { print > (base "_" n) }
             /^\$\$\$\$/ { close(base "_" n); n++; if (n > 20) exit; printf "%c", 0 > (base "_" n) }' "$f"
      elif [ "$(wc -c < "$f")" -le 65536 ]; then
        { printf '\000'; cat "$f"; } > "$name"
      fi
    done
  done
  if [ "$target" = fuzz_sdf ]; then
    find "$cases" -name '*.mol' | while read -r f; do
      name="$corpus/seed_$(echo "$f" | tr '/' '_')"
      [ -e "$name" ] || { printf '\000'; cat "$f"; } > "$name"
    done
  fi
  max_len=65536
  [ "$target" = fuzz_sdf ] && max_len=16384
  echo "run_fuzz.sh: $target for $seconds s"
  if ! ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
       "$build/tools/fuzz/$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=30 \
       -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/$target/artifacts/" \
       "$corpus" > "$work/$target/log.txt" 2>&1; then
    echo "run_fuzz.sh: $target FAILED, see $work/$target/log.txt and $work/$target/artifacts/" >&2
    status=1
  else
    tail -n 12 "$work/$target/log.txt" | grep -E 'stat::number_of_executed_units|stat::peak_rss|cov:' | tail -n 3
    echo "run_fuzz.sh: $target: no crash in $seconds s"
  fi
done
exit $status
