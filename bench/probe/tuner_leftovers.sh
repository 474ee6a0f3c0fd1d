#!/usr/bin/env bash
# Is what makes the narrow T=512 H=32 block slow on the H200 in a process
# that tuned (docs/perf-notes.md, fourteenth to sixteenth sessions) one of
# the things the tuner leaves behind: the graphs it captured and destroyed,
# or the modules it loaded and unloaded? One GPU call, about 4 minutes, on
# a build of kda-bench with bench/probe/patches/bench-process-probes.patch:
#   git apply bench/probe/patches/bench-process-probes.patch && cmake --build BUILD
#   OUT=... bash bench/probe/tuner_leftovers.sh BUILD [objects|streams|dose]
# objects: the graphs and modules (sixteenth session, call 7); streams: the
# streams each tuning run creates, and the driver's hardware queues
# (CUDA_DEVICE_MAX_CONNECTIONS), in processes that load and that tune;
# dose: how many streams, and made one at a time or all alive at once
# (LARGE=1 adds T=8192 without and with 12 streams).
# Every step is one kda-bench process (--groups matrix --tokens 512) on one
# database; the first tunes, the others load the winners. Prints the rows
# (fused_us, heur_us and plain_us are columns 8, 16 and 18).
set -u
build=${1:?usage: tuner_leftovers.sh BUILD_DIR [objects|streams]}
set_=${2:-objects}
OUT=${OUT:-$PWD/tuner-leftovers-out}
mkdir -p "$OUT"
db=$(mktemp -u /tmp/kda-leftovers-XXXXXX).db
step() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  env "$@" "$build/tools/kda-bench" --json-dir "$OUT/$name" --db "${STEP_DB:-$db}" --groups matrix \
    --tokens "${STEP_TOKENS:-512}" > "$OUT/$name.log" 2>&1
  echo "== $name ($*): exit $?, $(( $(date +%s) - t0 )) s"
  grep -E "^matrix|^probe" "$OUT/$name.log" | cut -c1-150
}
step 1-tune
step 2-cached
if [ "$set_" = dose ]; then
  step 3-one-stream PROBE_STREAM_CHURN=1,1
  step 4-twelve-in-turn PROBE_STREAM_CHURN=12,2
  step 5-four-kept PROBE_STREAM_CHURN=4,1
  step 6-cached
  step 7-thirty-two-kept PROBE_STREAM_CHURN=32,1
  step 8-twelve-kept PROBE_STREAM_CHURN=12,1
  step 9-cached
  if [ -n "${LARGE:-}" ]; then  # the same at T=8192 (rows of 4-33M elements)
    STEP_TOKENS=8192 step 10-cached-8192
    STEP_TOKENS=8192 step 11-twelve-kept-8192 PROBE_STREAM_CHURN=12,1
  fi
  exit 0
fi
if [ "$set_" = streams ]; then
  step 3-streams PROBE_STREAM_CHURN=12
  step 4-streams-kept PROBE_STREAM_CHURN=12,1
  step 5-conn1 CUDA_DEVICE_MAX_CONNECTIONS=1
  step 6-conn32 CUDA_DEVICE_MAX_CONNECTIONS=32
  STEP_DB=$db.c1 step 7-tune-conn1 CUDA_DEVICE_MAX_CONNECTIONS=1
  STEP_DB=$db.c32 step 8-tune-conn32 CUDA_DEVICE_MAX_CONNECTIONS=32
  step 9-cached
  exit 0
fi
step 3-graphs PROBE_GRAPH_CHURN=1000,64,2048,32
step 4-cached
step 5-modules PROBE_MODULE_CHURN=500
step 6-graphs-small PROBE_GRAPH_CHURN=1000,64,64,128
step 7-both PROBE_GRAPH_CHURN=1000,64,2048,32 PROBE_MODULE_CHURN=500
step 8-cached
