#!/usr/bin/env bash
# Issue-7 benchmark: 1-D FLT attention (variants bias and kronecker) against the exact FFTW
# Toeplitz path with the same FAVOR+ kernel (m = 32 features, d = dv = 16, 2 heads), forward and
# backward, L = 1e3, 1e4, 1e5, 1e6, one thread. Writes docs/benchmarks/seq_toeplitz.md
# (docs/benchmarks/seq_toeplitz_quick.md with --quick: L up to 1e5 only). Not part of ctest.
#
#   tools/bench/seq/run_seq_toeplitz.sh [--quick] [--threads T]
#
# Builds bench_seq_toeplitz in Release (build dir $FLT_BENCH_BUILD_DIR, default build-bench/,
# configured when it does not exist yet). Each configuration runs in its own process (peak RSS per
# configuration) under a 600 s limit; times are the minimum over 3 repetitions (2 at 1e5, 1 at 1e6).
# Takes about 5 minutes on a quiet 2-core machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
build="${FLT_BENCH_BUILD_DIR:-$root/build-bench}"
quick=0
threads=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --threads) threads="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--threads T]" >&2; exit 2 ;;
  esac
  shift
done

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFLT_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" --target bench_seq_toeplitz -j2 >/dev/null
bench="$build/tools/bench/seq/bench_seq_toeplitz"

lengths=(1000 10000 100000 1000000)
out_name=seq_toeplitz.md
command="tools/bench/seq/run_seq_toeplitz.sh"
if [[ $quick == 1 ]]; then
  lengths=(1000 10000 100000)
  out_name=seq_toeplitz_quick.md
  command="$command --quick"
fi
if [[ $threads != 1 ]]; then command="$command --threads $threads"; fi
mkdir -p "$root/docs/benchmarks"
out="$root/docs/benchmarks/$out_name"
results="$build/${out_name%.md}_results.txt"  # raw RESULT lines, kept next to the build
: >"$results"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
start="$(date -u '+%Y-%m-%d %H:%M UTC')"
for L in "${lengths[@]}"; do
  reps=3
  if [[ $L -ge 100000 ]]; then reps=2; fi
  if [[ $L -ge 1000000 ]]; then reps=1; fi
  for method in flt-bias flt-kronecker toeplitz; do
    echo "running $method L=$L ..." >&2
    if line="$(timeout 600 "$bench" "$method" "$L" --reps "$reps" --threads "$threads" | grep '^RESULT')"; then
      echo "$line" >>"$results"
    else
      echo "RESULT method=$method L=$L failed=1" >>"$results"
    fi
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"

tmp="$out.tmp.$$"
{
  echo "# 1-D FLT attention vs the exact FFTW Toeplitz path"
  echo
  echo "Measured by \`$command\` (bench_seq_toeplitz, tools/bench/seq/), started $start,"
  echo "commit $commit, $threads thread(s), CPU: $cpu."
  echo "Load average (1, 5, 15 min) before: $load_before; after: $load_after (2-core machine shared"
  echo "with other jobs: absolute times are inflated by the load, the ratios much less so)."
  echo
  echo "One attention layer, one sequence of L tokens at positions 0 .. L-1, 2 heads, d = dv = 16,"
  echo "m = 32 Performer (FAVOR+) features, float32, bidirectional. FLT: R = 16 random Fourier"
  echo "features of a learned 1-D Gaussian-mixture spectrum (bias: additive logit bias beta f,"
  echo "kronecker: multiplicative f). Toeplitz: the same FAVOR+ kernel with the exact mask"
  echo "exp(beta f(n)) on every offset, applied in O(L log L) with FFTW (method section 6)."
  echo "Backward = dQ, dK, dV and the RPE gradient. Times: minimum over repetitions, microseconds"
  echo "per token (whole layer, both heads). Ratio = Toeplitz time / FLT time (forward + backward)."
  echo
  echo "| L | FLT-bias fwd | FLT-bias bwd | FLT-kron fwd | FLT-kron bwd | Toeplitz fwd | Toeplitz bwd | Toeplitz / FLT-bias | Toeplitz / FLT-kron | peak RSS FLT-bias / Toeplitz (MB) |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk '
    function val(line, key,   n, i, kv, a) {
      n = split(line, a, " ");
      for (i = 1; i <= n; ++i) { split(a[i], kv, "="); if (kv[1] == key) return kv[2]; }
      return "";
    }
    /^RESULT/ {
      m = val($0, "method"); L = val($0, "L");
      if (!(L in seen)) { seen[L] = 1; order[++nl] = L; }
      if (val($0, "failed") == "1") {
        f[m, L] = "-"; b[m, L] = "-"; rss[m, L] = "-";
      } else {
        f[m, L] = val($0, "fwd_us_per_token"); b[m, L] = val($0, "bwd_us_per_token");
        rss[m, L] = val($0, "peak_rss_mb");
      }
    }
    END {
      for (i = 1; i <= nl; ++i) {
        L = order[i];
        tb = f["flt-bias", L] + b["flt-bias", L]; tk = f["flt-kronecker", L] + b["flt-kronecker", L];
        tt = f["toeplitz", L] + b["toeplitz", L];
        rb = (tb > 0 && f["toeplitz", L] != "-") ? sprintf("%.1fx", tt / tb) : "-";
        rk = (tk > 0 && f["toeplitz", L] != "-") ? sprintf("%.1fx", tt / tk) : "-";
        printf("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |\n", L,
               f["flt-bias", L], b["flt-bias", L], f["flt-kronecker", L], b["flt-kronecker", L],
               f["toeplitz", L], b["toeplitz", L], rb, rk, rss["flt-bias", L], rss["toeplitz", L]);
      }
    }' "$results"
  echo
  echo "Raw result lines:"
  echo
  echo '```'
  cat "$results"
  echo '```'
} >"$tmp"
mv "$tmp" "$out"
echo "wrote $out" >&2
