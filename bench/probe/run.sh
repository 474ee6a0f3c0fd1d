#!/usr/bin/env bash
# Builds and runs the probe on a GPU machine; outputs to $OUT (or ./probe-out).
# PROBE_VARLEN_ONLY=1 and PROBE_BASE_DEPENDENT_BOUNDS=1: see probe.cu.
# With --ncu also profiles the small and the large shape with Nsight Compute.
# PROBE_BASE_FLAGS / PROBE_TEST_FLAGS: the macros of each variant (defaults:
# base without the streaming accesses, test as the library compiles it);
# -I<dir> there compiles that variant from the kernel sources in <dir>.
set -eu
OUT=${OUT:-$PWD/probe-out}
mkdir -p "$OUT"
cd "$(dirname "$0")"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
base_flags=${PROBE_BASE_FLAGS--DKDA_PLAIN_LOADS -DKDA_PLAIN_STORES}
test_flags=${PROBE_TEST_FLAGS-}
echo "probe variants: base [$base_flags] test [$test_flags]" | tee "$OUT/probe-variants.txt"
obj=$(mktemp -d)
nvcc -O3 -std=c++17 -arch=sm_$arch -c probe_base.cu -o "$obj/base.o" $base_flags -I../../kernel_templates
nvcc -O3 -std=c++17 -arch=sm_$arch -c probe_test.cu -o "$obj/test.o" $test_flags -I../../kernel_templates
nvcc -O3 -std=c++17 -arch=sm_$arch -o "$OUT/probe" probe.cu "$obj/base.o" "$obj/test.o" -lcuda
rm -rf "$obj"
PROBE_JSON=$OUT/probe.json "$OUT/probe" | tee "$OUT/probe.log"
if [ "${1:-}" = --ncu ] && command -v ncu > /dev/null; then
  ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section LaunchStats "$OUT/probe" ncu > "$OUT/ncu.txt" 2>&1 || echo "ncu failed: $(tail -3 "$OUT/ncu.txt")"
fi
rm -f "$OUT/probe"
