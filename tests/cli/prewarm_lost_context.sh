#!/bin/sh
# kda-tune prewarm when a tuning run loses the CUDA context (a kernel
# faults), on the stand-in driver: the first launch faults
# (FAKE_CUDA_LOSE_AFTER_LAUNCHES=0). Nothing after a lost context can run,
# so prewarm names the shape whose run met it, stops there, says how many
# were not attempted (rather than list each as failed), exits 1, and its
# --json output stays one whole document.
# Usage: prewarm_lost_context.sh KDA_TUNE FAKE_LIBCUDA
set -u
TUNE=$1
FAKE=$2
T=$(mktemp -d /tmp/kda_prewarm_lost.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HOME=$T KDA_CACHE_DIR=$T/cache KDA_LIBCUDA=$FAKE KDA_TIMING_LOCK_DIR=off
export FAKE_CUDA_LOSE_AFTER_LAUNCHES=0
unset KDA_TUNE KDA_LOG
fails=0
fail() {
  echo "FAIL: $1"
  fails=$((fails + 1))
}
SHAPES="--heads 4,8,16 --tokens 512 --budget-ms 1"

"$TUNE" prewarm --db "$T/t.db" $SHAPES >"$T/out" 2>"$T/err"
rc=$?
cat "$T/out" "$T/err"
[ $rc = 1 ] || fail "exit status $rc, not 1"
[ "$(grep -c '^\[[0-9]*/3\] failed' "$T/out")" = 1 ] || fail "not exactly one shape failed"
grep -q '^\[1/3\] failed .*KDA_ERROR_CONTEXT_LOST' "$T/out" || fail "the first shape's failure is not named"
grep -q 'not attempted *2' "$T/out" || fail "the summary does not count 2 shapes not attempted"
grep -q 'lost the CUDA context.*2 shapes after it were not attempted' "$T/err" ||
  fail "no note that the rest were not attempted"

"$TUNE" prewarm --db "$T/t.db" $SHAPES --json >"$T/json" 2>/dev/null
rc=$?
[ $rc = 1 ] || fail "--json: exit status $rc, not 1"
python3 - "$T/json" <<'PY' || fail "--json: not one document naming the lost context"
import json, sys
d = json.load(open(sys.argv[1]))
r = d["results"]
assert len(r) == 1 and r[0]["outcome"] == "failed", r
assert "KDA_ERROR_CONTEXT_LOST" in r[0]["error"], r[0]
s = d["summary"]
assert s["failed"] == 1 and s["not_attempted"] == 2 and s["total"] == 3, s
assert "not attempted" in s["note"], s
PY

[ $fails = 0 ] && echo "prewarm on a lost context: ok"
[ $fails = 0 ]
