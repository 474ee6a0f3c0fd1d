#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build/fuzz) and runs each for a
# bounded time from its corpus in fuzz/corpus/<target>/. Fails if a target
# finds a crash, a leak, undefined behaviour or a timeout; the input is left
# in build/fuzz/artifacts/ (add it to the corpus once fixed).
#   FUZZ_SECONDS  seconds per target (default 60)
#   FUZZ_TARGETS  targets to run (default: all three)
#   CC            a clang (default clang)
# Seeds: fuzz_db holds databases written by tests/cli/make_test_db and
# `kda-tune prewarm --compile-only` (VACUUMed to 512-byte pages), plus damaged
# copies; fuzz_import holds `kda-tune export` output; regress_* are inputs
# that once failed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"fuzz_shapes fuzz_import fuzz_db"}
export PATH=/usr/local/cuda/bin:$PATH
build=build/fuzz
CC=${CC:-clang} cmake -B $build -S . -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKDA_FUZZ=ON \
  -DKDA_BUILD_TESTS=OFF -DKDA_WERROR=ON > /dev/null
# shellcheck disable=SC2086
cmake --build $build -j "$(nproc)" --target $targets
mkdir -p $build/artifacts
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Databases are written and fsynced for every input: tmpfs keeps that cheap.
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm
status=0
for t in $targets; do
  # New inputs go to a scratch corpus, never into the repository's.
  work=$build/corpus/$t
  mkdir -p "$work"
  case $t in
    fuzz_db) max_len=65536 ;;
    fuzz_import) max_len=32768 ;;
    *) max_len=4096 ;;
  esac
  echo "=== $t: ${seconds}s"
  log=$build/$t.log
  if "$build/fuzz/$t" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 \
      -max_len=$max_len -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
      "$work" "fuzz/corpus/$t" > "$log" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)" "$log" || true
  else
    status=1
    echo "FAIL: $t found a problem (log: $log)"
    grep -A40 -E "^==[0-9]+==ERROR|runtime error|deadly signal|ALARM|Test unit written" "$log" | head -80 || tail -40 "$log"
  fi
done
exit $status
