#!/usr/bin/env bash
# One-call GPU check for a lent GPU machine (or any GPU box): unpack the
# carried -dev packages if the system lacks them, build, run the GPU tests,
# the demo, compute-sanitizer, and the benchmark when it exists. Logs go to
# $OUT (or ./gpu-out). Usage: bash tools/gpu_check.sh [--no-sanitizer] [--no-bench]
#   [--bench-only] [--build-only] [--prebuilt] [--no-ctest] [--mutants] [--bench-args "..."]
# --mutants runs the kernel mutants after the tests (tests/mutation/
# kernel_mutants.py: does some GPU test fail for each plausible kernel bug?
# About 10 minutes on an H200 with 4 at a time), then the host mutants
# whose breakage the kernels read (host_mutants.py run --gpu: the GPU tests
# see them too).
# --no-ctest skips `ctest -L gpu` and keeps the mutants, the demo and the
# stress test after it (on the H200 test_gpu_kernels alone took 391 s, so
# everything did not fit one 600 s call of a lent machine; since the
# sweeps share their references it takes 207 s on the H100, 2026-11-28).
# --prebuilt uses build-gpu as it is (built elsewhere at this same path, to
# spare a lent GPU machine the build).
set -u -o pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
root=$PWD
sanitizer=1
tests=1
ctest=1
bench_args=""
bench=1
prebuilt=0
mutants=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-sanitizer) sanitizer=0 ;;
    --bench-only) sanitizer=0; tests=0 ;;
    --build-only) sanitizer=0; tests=0; bench=0 ;;
    --bench-args) bench_args="$2"; shift ;;
    --no-bench) bench=0 ;;
    --no-ctest) ctest=0 ;;
    --mutants) mutants=1 ;;
    --prebuilt) prebuilt=1 ;;
    *)
      # A typo must not run the whole suite on a lent GPU.
      echo "gpu_check.sh: unknown option $1 (see the comment at the top of this script)" >&2
      exit 2 ;;
  esac
  shift
done

prefix_args=()
if [ ! -f /usr/include/cmocka.h ] && [ -d .debs ]; then
  # No package registry on the GPU machine: use packages downloaded here.
  mkdir -p .deps/root
  for f in .debs/*.deb; do dpkg -x "$f" .deps/root; done
  libdir=$root/.deps/root/usr/lib/x86_64-linux-gnu
  # The -dev symlinks point at the system's runtime libraries.
  [ -e /usr/lib/x86_64-linux-gnu/libsqlite3.so.0 ] && ln -sf /usr/lib/x86_64-linux-gnu/libsqlite3.so.0 "$libdir/libsqlite3.so"
  export LD_LIBRARY_PATH=$libdir:${LD_LIBRARY_PATH:-}
  prefix_args=(-DCMAKE_PREFIX_PATH=$root/.deps/root/usr)
  export CMAKE_PREFIX_PATH=$root/.deps/root/usr  # for host_mutants.py's own build
fi

# Tests and tools write their tuning databases here, not in ~/.cache.
export KDA_CACHE_DIR=${KDA_CACHE_DIR:-$(mktemp -d /tmp/kda-cache-XXXXXX)}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
if [ $prebuilt = 1 ]; then
  [ -x build-gpu/tests/test_gpu_kernels ] || { echo "--prebuilt: no build-gpu here"; exit 1; }
  echo "build: prebuilt"
else
  cmake -B build-gpu -S . -DCMAKE_BUILD_TYPE=Release "${prefix_args[@]}" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build build-gpu -j16 > "$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -30; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi

status=0
if [ $tests = 1 ]; then
  # The GPU stress test runs on its own below, with its own log.
  if [ $ctest = 1 ]; then
    (cd build-gpu && ctest -L gpu -LE stress --output-on-failure -V) > "$OUT/ctest-gpu.log" 2>&1 || status=1
    grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |device:|cases:|checked|threads,|graph:|model \(|destroy after|tests passed|FAILED|Failed|Skipped|SKIP" "$OUT/ctest-gpu.log" | head -80
  fi
  # Each mutant below runs tests on a changed copy of the kernel templates
  # (KDA_KERNEL_DIR): a test that cannot fail when its race exists proves
  # nothing, and the unchanged control must still pass.
  templates_copy() { local d; d=$(mktemp -d); cp kernel_templates/* "$d/"; echo "$d"; }
  without_wait() { sed -i 's/asm volatile("griddepcontrol.wait;" ::: "memory");//' "$1/kda_common.cuh"; }
  # The plan's builder (build_chunk_plan) or the table's (build_rows) sleeps
  # 200 us after its trigger, before its writes, so that a race with it is
  # certain. A sed that no longer finds its place stops the check: a mutant
  # that is not applied would pass or fail for nothing.
  slow_builder() {
    sed -i "/$2(/,/grid_dependents_launch();/ s/grid_dependents_launch();/&\n  for (int i = 0; i < 200; ++i) __nanosleep(1000);/" "$1/chunk_indices.cu"
    [ "$(grep -c __nanosleep "$1/chunk_indices.cu")" = 1 ] || { echo "slow_builder $2: not applied"; exit 1; }
  }
  must_pass() {  # what log command...
    local what=$1 log=$2; shift 2
    if "$@" > "$log" 2>&1; then echo "$what: passed"; else
      echo "$what: FAILED"; grep -E "out of budget" "$log" | head -5; status=1; fi
  }
  must_fail() {  # what log command...
    local what=$1 log=$2; shift 2
    if "$@" > "$log" 2>&1; then echo "mutant, $what: PASSED (it cannot see the race)"; else
      echo "mutant, $what: failed, as it must:"; grep -E "out of budget" "$log" | head -10; fi
  }
  # The overlap test: with the kernels' wait removed (griddepcontrol.wait)
  # a consumer may read its producer's unfinished writes.
  mutant=$(templates_copy)
  without_wait "$mutant"
  must_fail "no griddepcontrol.wait, test_gpu_overlap" "$OUT/overlap-mutant.log" \
    env KDA_KERNEL_DIR="$mutant" ./build-gpu/tests/test_gpu_overlap
  rm -rf "$mutant"
  # Chunk plans: with the plan's builder and the first read after a build
  # launched with overlap instead of plainly, a kernel may read the plan
  # before the build has written it; with the plain launches the same slow
  # builder must pass.
  mutant=$(templates_copy)
  slow_builder "$mutant" build_chunk_plan
  must_pass "slow plan builder, plain launches, the rebuilt-plan test" "$OUT/plan-slow-builder.log" \
    env KDA_KERNEL_DIR="$mutant" KDA_TEST_FILTER=chunk_plan_rebuilt ./build-gpu/tests/test_gpu_kernels
  must_fail "slow plan builder and the first read overlapped, the rebuilt-plan test" "$OUT/plan-mutant.log" \
    env KDA_KERNEL_DIR="$mutant" KDA_TEST_PLAN_ALWAYS_OVERLAP=1 KDA_TEST_FILTER=chunk_plan_rebuilt \
    ./build-gpu/tests/test_gpu_kernels
  rm -rf "$mutant"
  # A caller's chunk table, which the gate kernels read after their wait:
  # with the table's builder slowed the rebuilt-table tests must pass, and
  # fail once the wait is gone (the kernel after the builder then reads the
  # previous batch's rows).
  mutant=$(templates_copy)
  slow_builder "$mutant" build_rows
  must_pass "slow table builder, the rebuilt-table tests" "$OUT/table-slow-builder.log" \
    env KDA_KERNEL_DIR="$mutant" KDA_TEST_FILTER=chunk_table_rebuilt ./build-gpu/tests/test_gpu_kernels
  without_wait "$mutant"
  must_fail "slow table builder and no wait, the rebuilt-table tests" "$OUT/table-mutant.log" \
    env KDA_KERNEL_DIR="$mutant" KDA_TEST_FILTER=chunk_table_rebuilt ./build-gpu/tests/test_gpu_kernels
  rm -rf "$mutant"
  ./build-gpu/tools/kda-demo 2>&1 | tee "$OUT/demo.log" || status=1
  # 4 processes tuning overlapping shape sets into one database (tests/stress).
  (cd build-gpu && ctest -R '^test_stress_concurrent_prewarm_gpu$' --output-on-failure -V) > "$OUT/stress-gpu.log" 2>&1 || status=1
  echo "stress (gpu): $(grep -E "concurrent prewarm|tests passed" "$OUT/stress-gpu.log" | tr '\n' ' ')"
  grep -E "FAIL" "$OUT/stress-gpu.log" | head -10
fi

if [ $mutants = 1 ]; then
  python3 tests/mutation/kernel_mutants.py run --build build-gpu --out "$OUT/mutants" --jobs 4 \
    > "$OUT/mutants.log" 2>&1 || status=1
  tail -n 3 "$OUT/mutants.log"
  grep -E " (survived|timeout|stillborn) " "$OUT/mutants.log" && status=1
  # The host mutants whose breakage the kernels read, against their GPU
  # tests too (a Release copy of the tree, built here: about 2 minutes).
  python3 tests/mutation/host_mutants.py run --gpu --work "${TMPDIR:-/tmp}/kda-host-mutants-gpu" \
    > "$OUT/host-mutants-gpu.log" 2>&1 || status=1
  tail -n 2 "$OUT/host-mutants-gpu.log"
  grep -E " (survived|stillborn) " "$OUT/host-mutants-gpu.log" && status=1
fi

if [ $sanitizer = 1 ] && command -v compute-sanitizer > /dev/null; then
  # KDA_SANITIZER_FILTER limits memcheck to some tests (KDA_TEST_FILTER
  # syntax) where time is short; KDA_SANITIZER_TIMEOUT bounds each tool.
  KDA_TUNE=off KDA_TEST_SANITIZER=1 KDA_TEST_FILTER=${KDA_SANITIZER_FILTER:-} \
    timeout ${KDA_SANITIZER_TIMEOUT:-1800} compute-sanitizer --tool memcheck --error-exitcode 9 \
    ./build-gpu/tests/test_gpu_kernels > "$OUT/memcheck.log" 2>&1
  echo "compute-sanitizer memcheck exit: $?"; tail -4 "$OUT/memcheck.log"
  # Shared-memory races (the block scans, the chunk-table builder): the
  # tests that reach every block shape, the device table and the plan's
  # builder; bounded time.
  KDA_TUNE=off KDA_TEST_SANITIZER=1 \
    KDA_TEST_FILTER=every_config,every_plan_config,device_chunk_table,device_chunk_plan \
    timeout ${KDA_SANITIZER_TIMEOUT:-180} compute-sanitizer --tool racecheck --error-exitcode 9 \
    ./build-gpu/tests/test_gpu_kernels > "$OUT/racecheck.log" 2>&1
  echo "compute-sanitizer racecheck exit: $?"; tail -4 "$OUT/racecheck.log"
fi

if [ $bench = 1 ] && [ -x build-gpu/tools/kda-bench ]; then
  ./build-gpu/tools/kda-bench --json-dir "$OUT" $bench_args 2>&1 | tee "$OUT/bench.log" || status=1
fi
exit $status
