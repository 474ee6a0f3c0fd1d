#!/usr/bin/env bash
# Builds and runs the probe on a GPU machine; outputs to $OUT (or ./probe-out).
# With --ncu also profiles the small and the large shape with Nsight Compute.
set -eu
OUT=${OUT:-$PWD/probe-out}
mkdir -p "$OUT"
cd "$(dirname "$0")"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
nvcc -O3 -std=c++17 -arch=sm_$arch -o "$OUT/probe" probe.cu probe_base.cu probe_test.cu -lcuda
PROBE_JSON=$OUT/probe.json "$OUT/probe" | tee "$OUT/probe.log"
if [ "${1:-}" = --ncu ] && command -v ncu > /dev/null; then
  ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section LaunchStats "$OUT/probe" ncu > "$OUT/ncu.txt" 2>&1 || echo "ncu failed: $(tail -3 "$OUT/ncu.txt")"
fi
rm -f "$OUT/probe"
