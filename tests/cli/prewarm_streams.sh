#!/bin/sh
# kda-tune prewarm --streams, on the stand-in driver (no GPU): the streams a
# prewarm makes before tuning, counted by the driver at exit
# (FAKE_CUDA_STATS_FILE); none by default. Two more in every case: the
# tuner's own stream and the one the prewarm uploads its inputs on (never
# the legacy stream, which would wait for another thread's graph capture).
# The fake driver cannot validate a tuning run, so every prewarm here ends
# with exit status 1 after making its streams; --budget-ms 1 keeps each run
# to one candidate. Usage: prewarm_streams.sh KDA_TUNE FAKE_LIBCUDA
set -u
TUNE=$1
FAKE=$2
T=$(mktemp -d /tmp/kda_streams_test.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HOME=$T KDA_CACHE_DIR=$T/cache KDA_LIBCUDA=$FAKE KDA_TIMING_LOCK_DIR=off
unset KDA_TUNE KDA_LOG
fails=0

# made NAME [FLAGS...]: streams the driver made in one prewarm.
made() {
  name=$1
  shift
  rm -f "$T/stats"
  FAKE_CUDA_STATS_FILE=$T/stats "$TUNE" prewarm --db "$T/$name.db" --heads 4 --tokens 512 \
    --budget-ms 1 "$@" > "$T/$name.log" 2>&1
  sed -n 's/^streams_made //p' "$T/stats"
}

# expect NAME GOT WANT
expect() {
  if [ "$2" != "$3" ]; then
    echo "FAIL: $1: got '$2', want '$3'"
    sed 's/^/  | /' "$T/$1.log" 2>/dev/null | tail -5
    fails=$((fails + 1))
  else
    echo "ok: $1 ($2)"
  fi
}

expect none "$(made none --streams 0)" 2
expect five "$(made five --streams 5)" 7
expect default "$(made default)" 2

# Refused before anything runs: a negative count, and --streams where
# nothing is tuned.
"$TUNE" prewarm --heads 4 --tokens 512 --streams -1 > "$T/neg.log" 2>&1
expect negative_exit "$?" 2
expect negative_says "$(grep -c -- '--streams -1: expected an integer in \[0, 1024\]' "$T/neg.log")" 1
"$TUNE" prewarm --heads 4 --tokens 512 --compile-only --arch sm_90 --streams 8 > "$T/co.log" 2>&1
expect compile_only_exit "$?" 2
expect compile_only_says "$(grep -c -- '--streams applies to tuning on a GPU' "$T/co.log")" 1

[ $fails -eq 0 ] || exit 1
