#!/usr/bin/env bash
# The main job. Builds, then:
#  - on a GPU machine: `kda-tune prewarm` for the kimi-linear preset at
#    tensor-parallel 1,2,4,8 (what a deployment runs once), then kda-demo (a
#    varlen layer through the library, checked against float64);
#  - without a GPU: says so, stores sm_90 cubins of the preset at
#    tensor-parallel 8 with `kda-tune prewarm --compile-only`, and kda-demo
#    compiles the kernels.
# The tuning database, for the prewarm and kda-demo alike, is the library's
# default ($KDA_CACHE_DIR/tune.db, else $XDG_CACHE_HOME/kda/tune.db, else ~/.cache/kda/tune.db) unless KDA_DB
# names one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
export PATH=/usr/local/cuda/bin:$PATH
cmake -B build/release -S . -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/release -j "$(nproc)"
bin=build/release/tools
db_args=()
[ -n "${KDA_DB:-}" ] && db_args=(--db "$KDA_DB")
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
  "$bin/kda-tune" prewarm --model kimi-linear --tp 1,2,4,8 "${db_args[@]}"
else
  echo "NO GPU on this machine: nothing will run on a device. Exercising compilation instead."
  "$bin/kda-tune" prewarm --compile-only --arch sm_90 --model kimi-linear --tp 8 "${db_args[@]}"
fi
"$bin/kda-demo" "${db_args[@]}"
