#!/usr/bin/env bash
# The test command: installs what it needs, then builds three times and runs
# every test in each build: warnings as errors, AddressSanitizer + UBSan, and
# ThreadSanitizer (the host side's threads, locks and atomics).
# GPU tests (label gpu) run where there is a GPU and are reported as skipped
# where there is none.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
export PATH=/usr/local/cuda/bin:$PATH
jobs=$(nproc)
for variant in release asan tsan; do
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DKDA_WERROR=ON)
  [ $variant = asan ] && flags+=(-DKDA_SANITIZE=ON)
  [ $variant = tsan ] && flags+=(-DKDA_TSAN=ON)
  echo "=== $variant build"
  cmake -B build/$variant -S . "${flags[@]}" > /dev/null
  cmake --build build/$variant -j "$jobs"
  echo "=== $variant tests"
  (cd build/$variant && ctest --output-on-failure -j "$jobs")
done
echo "=== python package tests (against build/release)"
bash python/run_tests.sh build/release

# Fuzzing for a bounded time (about 30 s a target) where clang and its
# libFuzzer runtime are installed.
probe=$(mktemp -d)
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
  > "$probe/p.c"
if command -v clang > /dev/null && clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2> /dev/null; then
  echo "=== fuzz"
  FUZZ_SECONDS=30 bash fuzz/run_fuzz.sh
else
  echo "=== fuzz: skipped (no clang with libFuzzer here)"
fi
rm -rf "$probe"
