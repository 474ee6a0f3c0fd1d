#!/usr/bin/env bash
# The main job: build, then on a GPU machine prewarm the tuning database and
# run a varlen layer checked against float64; on a machine without a GPU say
# so and compile the kernels with NVRTC for sm_90 instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
export PATH=/usr/local/cuda/bin:$PATH
cmake -B build/release -S . -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/release -j "$(nproc)"
./build/release/tools/kda-demo
