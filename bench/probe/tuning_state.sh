#!/usr/bin/env bash
# Why do rows timed in the process that tuned them read slow (docs/perf-notes.md,
# fourteenth session)? One GPU call, about 3 minutes, on a build of kda-bench
# with bench/probe/patches/bench-process-probes.patch applied:
#   git apply bench/probe/patches/bench-process-probes.patch && cmake --build BUILD
#   OUT=... bash bench/probe/tuning_state.sh BUILD
# 1. a fresh database: the process tunes, then times each row again 3 times,
#    a second apart (does the slowness fade?); every graph is also timed
#    back to back (PROBE_B2B: is it the wait for the host to submit each
#    replay, which the tuner's timing does not pay?);
# 2. the same database: a process that loads the winners (the fast reading);
# 3. the same database, the fused kernel tuned again in the process;
# 4. the same database, only the unfused path's kernels tuned again.
# Each prints the T=512 and 2048 rows; $OUT/<step>.log has everything.
set -u
build=${1:?usage: tuning_state.sh BUILD_DIR}
OUT=${OUT:-$PWD/tuning-state-out}
mkdir -p "$OUT"
db=$(mktemp -u /tmp/kda-state-XXXXXX).db
step() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  env "$@" "$build/tools/kda-bench" --json-dir "$OUT/$name" --db "$db" --groups matrix \
    --tokens 512,2048 > "$OUT/$name.log" 2>&1
  echo "== $name ($*): exit $?, $(( $(date +%s) - t0 )) s"
  grep -E "^matrix|^probe" "$OUT/$name.log" | cut -c1-150
}
step 1-tune PROBE_RETIME=3 PROBE_B2B=1
step 2-cached PROBE_RETIME=1 PROBE_B2B=1
step 3-retune-fused PROBE_FORCE_TUNE=fused
step 4-retune-unfused PROBE_FORCE_TUNE=unfused
