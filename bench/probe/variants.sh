#!/usr/bin/env bash
# Several kernel variants against one base in one GPU session: builds the
# base object once and each variant's object in parallel, then runs the
# probe once per variant (and the list twice, so that each comparison is
# seen on two rounds). Outputs under $OUT/<name>-<round>.{log,json}.
#   PROBE_VARIANTS="name=-DFLAG -DFLAG2;name2=..."   (';' separates variants)
#   PROBE_BASE_FLAGS (default: none, the kernel as the library compiles it);
#     -I<dir> there (or in a variant) compiles from the kernel sources in
#     <dir>, e.g. another commit's: mkdir bench/probe/head_kt && git show
#     HEAD:kernel_templates/gate_cumsum.cu > bench/probe/head_kt/gate_cumsum.cu
#     (and kda_common.cuh). bench/probe/*_kt/ is git-ignored: name the folder
#     in the device tool's carry.
#   PROBE_BUILD_FLAGS, e.g. -DPROBE_VARLEN_BUILD with PROBE_VARLEN_ONLY=1
#   PROBE_ROUNDS (default 2)
set -eu
OUT=${OUT:-$PWD/probe-out}
mkdir -p "$OUT"
cd "$(dirname "$0")"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
build=${PROBE_BUILD_FLAGS-}
obj=$(mktemp -d)
# A variant's own -I<dir> comes before kernel_templates, so it compiles from <dir>.
cc() { nvcc -O3 -std=c++17 -arch=sm_$arch $build "$@" -I../../kernel_templates; }
cc -c probe_base.cu -o "$obj/base.o" ${PROBE_BASE_FLAGS-} &
IFS=';' read -ra vars <<< "${PROBE_VARIANTS:?set PROBE_VARIANTS}"
for v in "${vars[@]}"; do
  name=${v%%=*}
  cc -c probe_test.cu -o "$obj/$name.o" ${v#*=} &
done
wait
for v in "${vars[@]}"; do
  name=${v%%=*}
  cc -o "$obj/probe-$name" probe.cu "$obj/base.o" "$obj/$name.o" -lcuda
  echo "$name: base [${PROBE_BASE_FLAGS-}] test [${v#*=}] build [$build]" >> "$OUT/variants.txt"
done
for round in $(seq 1 "${PROBE_ROUNDS:-2}"); do
  for v in "${vars[@]}"; do
    name=${v%%=*}
    PROBE_JSON=$OUT/$name-$round.json "$obj/probe-$name" > "$OUT/$name-$round.log" 2>&1 || echo "$name failed"
    echo "== $name round $round"; grep -E "best|bare" "$OUT/$name-$round.log" | grep -v bare || true
  done
done
rm -rf "$obj"
