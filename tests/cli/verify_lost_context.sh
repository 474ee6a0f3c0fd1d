#!/bin/sh
# kda-tune verify when a re-run loses the CUDA context (its kernel faults,
# the worst a stored result can do), on the stand-in driver: the first
# launch faults (FAKE_CUDA_LOSE_AFTER_LAUNCHES=0), returning the error
# itself, or, as on a GPU, returning success with the error met at the
# synchronisation after it (FAKE_CUDA_LOSE_ASYNC=1). verify names that
# result with KDA_ERROR_CONTEXT_LOST either way, stops there (nothing after
# a lost context can run), says the rest were not re-run, exits 1, and its
# --json output stays one whole document. The stand-in poses as the H100
# whose rows make_test_db writes.
# Usage: verify_lost_context.sh KDA_TUNE MAKE_TEST_DB FAKE_LIBCUDA
set -u
TUNE=$1
MAKEDB=$2
FAKE=$3
T=$(mktemp -d /tmp/kda_verify_lost.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HOME=$T KDA_CACHE_DIR=$T/cache KDA_LIBCUDA=$FAKE KDA_TIMING_LOCK_DIR=off
export KDA_TEST_GPU_IDENTITY="name=NVIDIA H100 80GB HBM3;pci=0x2330;sms=132;l2=52428800"
export FAKE_CUDA_LOSE_AFTER_LAUNCHES=0
unset KDA_TUNE KDA_LOG
fails=0
fail() {
  echo "FAIL: $1"
  fails=$((fails + 1))
}

"$MAKEDB" "$T/t.db" || fail "make_test_db"

# check MODE: one verify run, its text and its --json, with
# FAKE_CUDA_LOSE_ASYNC=MODE.
check() {
  mode=async=$1
  export FAKE_CUDA_LOSE_ASYNC=$1
  "$TUNE" verify --db "$T/t.db" >"$T/out" 2>"$T/err"
  rc=$?
  cat "$T/out" "$T/err"
  [ $rc = 1 ] || fail "$mode: exit status $rc, not 1"
  [ "$(grep -c '^rerun  FAIL' "$T/out")" = 1 ] || fail "$mode: not exactly one result re-run and failed"
  grep -q '^rerun  FAIL .*KDA_ERROR_CONTEXT_LOST.*CUDA_ERROR_ILLEGAL_ADDRESS' "$T/out" ||
    fail "$mode: the re-run that faulted does not say so"
  grep -q '^rerun  1 results re-run, 1 failed' "$T/out" || fail "$mode: the summary counts other rows"
  grep -q 'lost the CUDA context .*the results after it were not re-run' "$T/err" ||
    fail "$mode: no note that the rest were not re-run"

  "$TUNE" verify --db "$T/t.db" --json >"$T/json" 2>/dev/null
  rc=$?
  [ $rc = 1 ] || fail "$mode: --json: exit status $rc, not 1"
  python3 - "$T/json" <<'PY' || fail "$mode: --json: not one document naming the lost context"
import json, sys
d = json.load(open(sys.argv[1]))
reruns = [c for c in d["checks"] if c["check"] == "rerun"]
assert len(reruns) == 1 and not reruns[0]["ok"], reruns
assert "KDA_ERROR_CONTEXT_LOST" in reruns[0]["problem"], reruns[0]
assert d["results_rerun"] == 1 and d["rerun_failures"] == 1, d
assert "not re-run" in d["note"], d["note"]
PY
}
check 0
check 1

[ $fails = 0 ] && echo "verify on a lost context: ok"
[ $fails = 0 ]
