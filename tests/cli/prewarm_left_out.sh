#!/bin/sh
# The block shapes the tuner leaves out because PyTorch servers run them
# slower than it measures (kda__tune_unsafe_in_servers, tuner/tuner.h), on
# the stand-in driver (no GPU): counted from the debug log of a prewarm,
# which gets as far as choosing its candidates (the stand-in driver cannot
# validate a tuning run, so each prewarm ends with exit status 1).
#   - T=512 H=16 (bucket 0 reaches 256 chunks x heads): every vec=1 shape
#     and vec=2,tx=8,seg=16;
#   - T=32768 H=16 (bucket 3, past the window): one fewer, the same space;
#   - head dim 32: none.
# Usage: prewarm_left_out.sh KDA_TUNE FAKE_LIBCUDA
set -u
TUNE=$1
FAKE=$2
T=$(mktemp -d /tmp/kda_left_out_test.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HOME=$T KDA_CACHE_DIR=$T/cache KDA_LIBCUDA=$FAKE KDA_TIMING_LOCK_DIR=off KDA_LOG=debug
unset KDA_TUNE
fails=0

# left NAME FLAGS...: the count in the "configs left out" line (none: 0).
left() {
  name=$1
  shift
  "$TUNE" prewarm --db "$T/$name.db" --budget-ms 1 "$@" > "$T/$name.log" 2>&1
  n=$(sed -n 's/.*\]: \([0-9]*\) configs left out: they run slower in PyTorch servers.*/\1/p' "$T/$name.log" | head -1)
  echo "${n:-0}"
}

# expect NAME GOT WANT
expect() {
  if [ "$2" != "$3" ]; then
    echo "FAIL: $1: got '$2', want '$3'"
    tail -5 "$T/$1.log" 2>/dev/null | sed 's/^/  | /'
    fails=$((fails + 1))
  else
    echo "ok: $1 ($2)"
  fi
}

small=$(left small --heads 16 --tokens 512)
large=$(left large --heads 16 --tokens 32768)
narrow=$(left narrow --heads 16 --head-dim 32 --tokens 512)
if [ "$small" -lt 10 ]; then
  echo "FAIL: small: $small shapes left out; every vec=1 shape (dozens) should be"
  fails=$((fails + 1))
else
  echo "ok: small ($small)"
fi
expect large "$large" $((small - 1))
expect narrow "$narrow" 0

[ $fails -eq 0 ] || exit 1
