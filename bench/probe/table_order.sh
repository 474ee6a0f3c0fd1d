#!/usr/bin/env bash
# The chunk table's order, A/B on one GPU: builds the varlen probe once and
# runs it with the table in sequence order (the builders'), with the partial
# chunks first and with them last, twice in turn (PROBE_TABLE_ORDER in
# probe.cu; base and test are the same kernel). Logs under $OUT.
set -eu
OUT=${OUT:-$PWD/probe-out}
mkdir -p "$OUT"
cd "$(dirname "$0")"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
obj=$(mktemp -d)
cc() { nvcc -O3 -std=c++17 -arch=sm_$arch -DPROBE_VARLEN_BUILD "$@" -I../../kernel_templates; }
cc -c probe_base.cu -o "$obj/base.o" &
cc -c probe_test.cu -o "$obj/test.o" &
wait
cc -o "$obj/probe" probe.cu "$obj/base.o" "$obj/test.o" -lcuda
for round in 1 2; do
  for ord in seq partial-first partial-last; do
    if [ "$ord" = seq ]; then unset PROBE_TABLE_ORDER; else export PROBE_TABLE_ORDER=$ord; fi
    PROBE_EXTREME=0 PROBE_VARLEN_ONLY=1 PROBE_JSON="$obj/$ord-$round.json" "$obj/probe" > "$OUT/order-$ord-$round.log" 2>&1
    echo "== $ord round $round"
    grep best "$OUT/order-$ord-$round.log"
  done
done
rm -rf "$obj"
