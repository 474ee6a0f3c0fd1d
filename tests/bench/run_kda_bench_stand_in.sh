#!/bin/sh
# kda-bench without a GPU: the tests' stand-in driver runs its host-cost
# modes and its GPU-mode set-up (NVRTC modules for the L2 flush, the empty
# reference kernels and the convert kernels loaded; the copy bandwidth
# timed), which then stops at the first row, whose prewarm cannot validate
# anything on a driver that runs no kernel; with no driver it says so.
# Every exit status is checked, so a sanitizer report (exit 66 under TSan,
# 1 under ASan with a report on stderr) or a crash fails the test.
# Usage: run_kda_bench_stand_in.sh KDA_BENCH FAKE_LIBCUDA
set -u
bench=$1
fake=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() {  # what want_rc got_rc pattern...
  what=$1 want=$2 got=$3
  shift 3
  if [ "$got" != "$want" ]; then
    echo "FAIL $what: exit $got, not $want"; sed 's/^/  | /' "$tmp/out"; fails=$((fails + 1)); return
  fi
  for p in "$@"; do
    if ! grep -q -- "$p" "$tmp/out"; then
      echo "FAIL $what: no line matching '$p'"; sed 's/^/  | /' "$tmp/out"; fails=$((fails + 1)); return
    fi
  done
  if grep -q "ERROR: AddressSanitizer\|WARNING: ThreadSanitizer\|runtime error:" "$tmp/out"; then
    echo "FAIL $what: a sanitizer report"; sed 's/^/  | /' "$tmp/out"; fails=$((fails + 1)); return
  fi
  echo "ok   $what"
}

KDA_LIBCUDA=$tmp/no-such-libcuda.so "$bench" > "$tmp/out" 2>&1
check "no driver" 1 $? "kda-bench needs a GPU: .*no-such-libcuda.so"

"$bench" --no-such-option > "$tmp/out" 2>&1
check "unknown option" 2 $? "usage: kda-bench"

"$bench" --help > "$tmp/out" 2>&1
check "--help" 0 $? "usage: kda-bench" "--groups LIST" "--extra-streams N"

KDA_LIBCUDA=$fake "$bench" --host-threads 2 --db "$tmp/h.db" > "$tmp/out" 2>&1
check "--host-only and --host-threads 2 on the stand-in" 0 $? \
  "host cost per warm call (tuning off): [0-9.]* us median" \
  "host cost per warm call (tuned-slot path, launch overlap off): [0-9.]* us median" \
  "2 threads on one context, a stream each: [0-9.]* us median"

"$bench" --extra-streams 257 > "$tmp/out" 2>&1
check "--extra-streams out of range" 2 $? "--extra-streams: 0 to 256"

KDA_LIBCUDA=$fake "$bench" --quick --extra-streams 4 --db "$tmp/s.db" --json-dir "$tmp/json" > "$tmp/out" 2>&1
check "--extra-streams 4 on the stand-in, before the first row" 1 $? \
  "extra streams: 4 created before the rows, one launch each, kept" "prewarm fused: "

# kda-tune bench passes --db on: the named file (any name) is the one the
# run opens. It used to set KDA_CACHE_DIR, which kda-bench's own fresh
# database overrode, and to require the name tune.db.
tune=$(dirname "$bench")/kda-tune
KDA_LIBCUDA=$fake "$tune" bench --quick --db "$tmp/prewarmed.db" --json-dir "$tmp/json2" > "$tmp/out" 2>&1
check "kda-tune bench --db on the stand-in, before the first row" 1 $? "prewarm fused: " \
  "kda-bench exited with status 1"
if [ -f "$tmp/prewarmed.db" ]; then echo "ok   kda-tune bench --db: the run used the named file"
else echo "FAIL kda-tune bench --db: $tmp/prewarmed.db was not used"; fails=$((fails + 1)); fi

# The JSON folder is made, parents too, before the run, or refused at once.
KDA_LIBCUDA=$fake "$bench" --quick --db "$tmp/j.db" --json-dir /proc/kda-no-such/dir > "$tmp/out" 2>&1
check "--json-dir that cannot be made: refused before the rows" 2 $? \
  "kda-bench: cannot create --json-dir /proc/kda-no-such/dir"
KDA_LIBCUDA=$fake "$bench" --quick --db "$tmp/j.db" --json-dir "$tmp/a/b/c" > "$tmp/out" 2>&1
check "--json-dir with missing parents" 1 $? "prewarm fused: "
if [ -d "$tmp/a/b/c" ]; then echo "ok   --json-dir: parents made"
else echo "FAIL --json-dir: $tmp/a/b/c not made"; fails=$((fails + 1)); fi

KDA_LIBCUDA=$fake "$bench" --groups no-such-group --db "$tmp/g.db" > "$tmp/out" 2>&1
check "a group with no row" 2 $? "no row is in the groups 'no-such-group'"

KDA_LIBCUDA=$fake "$bench" --groups varlen --tokens 512,2048 --db "$tmp/g.db" > "$tmp/out" 2>&1
check "token counts no row of the groups has" 2 $? \
  "no row is in the groups 'varlen' with the token counts '512,2048'"

KDA_LIBCUDA=$fake "$bench" --quick --db "$tmp/q.db" --json-dir "$tmp/json" > "$tmp/out" 2>&1
check "GPU-mode set-up on the stand-in, then the first row's prewarm refuses" 1 $? \
  "device copy bandwidth: [0-9]* GB/s" "convert_us: the fastest of 6 plain kernels" \
  "^group .*convert_us  %conv" "prewarm fused: " "each row is timed again at the end of its measurements"
if ls "$tmp/json"/*.json > /dev/null 2>&1; then
  echo "FAIL a run that stopped wrote a JSON file"; fails=$((fails + 1))
fi

[ $fails = 0 ] && echo "all kda-bench stand-in checks passed"
exit $fails
