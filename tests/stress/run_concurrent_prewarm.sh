#!/bin/sh
# Several processes prewarm overlapping shape sets into one database at the
# same time. Usage:
#   run_concurrent_prewarm.sh KDA_TUNE DB_CHECK [compile|gpu]
# compile (default; also KDA_STRESS_MODE): kda-tune prewarm --compile-only,
# no GPU. gpu: full tuning on the GPU (small shapes, a short budget), 4
# processes by default. KDA_STRESS_PROCS sets the process count (default 8
# in compile mode, 4 in gpu mode; 4 to 8 is the point).
#
# Round 1: N processes on a database that does not exist yet (they race to
# create it). Round 2: N processes with --force on the same keys (they race
# to replace the same rows) while readers run stats and verify --hash-only
# in a loop. Then: every process exited 0 with no failed specialization and
# no warning ("database is locked", "kept in memory", ...); PRAGMA
# integrity_check is ok and every cubin's sha256 matches (db_check, straight
# through SQLite); the cubin rows are exactly those of a reference database
# prewarmed sequentially; a prewarm of the union skips everything;
# kda-tune verify --hash-only passes.
# In gpu mode there is no sequential reference (tuning picks winners by
# timing); instead: round 1 tunes each key exactly once across all processes
# (the others wait for its row), db_check results finds one whole winner per
# key and none lost, and kda-tune verify re-runs every winner on the GPU
# against float64.
set -u
TUNE=$1
CHECK=$2
MODE=${3:-${KDA_STRESS_MODE:-compile}}
case $MODE in
  compile)
    N=${KDA_STRESS_PROCS:-8}
    PREWARM="--compile-only --arch sm_90"
    DONE=compiled
    VERIFY=--hash-only
    ;;
  gpu)
    N=${KDA_STRESS_PROCS:-4}
    PREWARM="--budget-ms 300"
    DONE=tuned
    VERIFY=
    ;;
  *)
    echo "usage: $0 KDA_TUNE DB_CHECK [compile|gpu]" >&2
    exit 2
    ;;
esac
T=$(mktemp -d /tmp/kda_stress_conc.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HOME=$T/home KDA_CACHE_DIR=$T/cache
unset XDG_CACHE_HOME KDA_TUNE KDA_LOG
mkdir -p "$HOME"
if [ "$MODE" = gpu ] && "$TUNE" info | grep -q '^gpu *none'; then
  echo "SKIPPED: gpu mode needs a GPU: $("$TUNE" info | sed -n 's/^gpu *//p')"
  exit 77
fi
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# json_field FILE NAME: the number after "NAME": in the prewarm summary.
json_field() { sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p" "$1" | tail -n 1; }

# A pool of shape lines, one specialization each; process p takes PER
# lines from line p*STEP on (mod POOL), so neighbours share most of them
# and together they cover the pool.
if [ "$MODE" = compile ]; then
  cat >"$T/pool.shapes" <<'EOF'
heads=32 tokens=512
heads=16 tokens=512
heads=8 tokens=512
heads=4 tokens=512
heads=32 dtype=f32 tokens=512
heads=16 dtype=f16 tokens=512
heads=32 varlen=yes tokens=4096
heads=16 gate=lower-bound tokens=512
heads=8 gate=none tokens=512
heads=32 bias=no tokens=512
heads=64 tokens=512
heads=16 head-dim=64 tokens=512
EOF
  POOL=12
  # Cubins beyond one per specialization: the chunk-table builder of the
  # varlen line, which a server builds on the device.
  BUILDERS=1
  PER=6
  STEP=1
else
  # Small, so that tuning is quick; every line a distinct key.
  cat >"$T/pool.shapes" <<'EOF'
heads=4 head-dim=64 tokens=512
heads=8 head-dim=64 tokens=512
heads=4 head-dim=64 dtype=f32 tokens=512
heads=4 head-dim=32 dtype=f16 tokens=512
heads=4 head-dim=64 varlen=yes seqs=4 tokens=512
heads=4 head-dim=64 gate=lower-bound tokens=512
heads=8 head-dim=32 gate=none tokens=512
heads=4 head-dim=64 chunk=32 reverse=yes tokens=512
heads=4 head-dim=64 out-dtype=bf16 tokens=512
EOF
  POOL=9
  PER=4
  STEP=$((POOL / N))
  [ "$STEP" -ge 1 ] || STEP=1
fi
p=0
while [ $p -lt "$N" ]; do
  j=0
  : >"$T/p$p.shapes"
  while [ $j -lt $PER ]; do
    sed -n "$(((p * STEP + j) % POOL + 1))p" "$T/pool.shapes" >>"$T/p$p.shapes"
    j=$((j + 1))
  done
  p=$((p + 1))
done

if [ "$MODE" = compile ]; then
  # Reference: the union, prewarmed alone.
  t0=$(now)
  "$TUNE" prewarm --db "$T/ref.db" $PREWARM --shapes "$T/pool.shapes" --json \
    >"$T/ref.out" 2>"$T/ref.err" || fail "reference prewarm: $(cat "$T/ref.err")"
  EXPECT=$(json_field "$T/ref.out" total)
  "$CHECK" keys "$T/ref.db" | cut -d'|' -f1-3 >"$T/ref.keys"
  CUBINS=$((EXPECT + BUILDERS))
  echo "reference: $EXPECT specializations, $(wc -l <"$T/ref.keys") cubins, $(secs "$t0" "$(now)") s"
  [ "$(wc -l <"$T/ref.keys")" = "$CUBINS" ] || fail "reference database has $(wc -l <"$T/ref.keys") cubins, expected $CUBINS"
else
  EXPECT=$("$TUNE" prewarm --dry-run --shapes "$T/pool.shapes" | sed -n 's/^\([0-9]*\) specializations$/\1/p')
  [ "${EXPECT:-0}" = "$POOL" ] || fail "the pool has ${EXPECT:-?} specializations, expected $POOL"
fi

DB=$T/shared.db
# run_round NAME EXTRA...: N prewarm processes at once; checks each one.
run_round() {
  name=$1
  shift
  p=0
  while [ $p -lt "$N" ]; do
    "$TUNE" prewarm --db "$DB" $PREWARM --shapes "$T/p$p.shapes" --json "$@" \
      >"$T/$name.$p.out" 2>"$T/$name.$p.err" &
    eval "pid$p=\$!"
    p=$((p + 1))
  done
  compiled=0
  skipped=0
  p=0
  while [ $p -lt "$N" ]; do
    eval "wait \$pid$p"
    rc=$?
    [ $rc = 0 ] || fail "$name process $p exited $rc: $(cat "$T/$name.$p.err")"
    f=$(json_field "$T/$name.$p.out" failed)
    c=$(json_field "$T/$name.$p.out" $DONE)
    s=$(json_field "$T/$name.$p.out" skipped)
    tot=$(json_field "$T/$name.$p.out" total)
    [ "${f:-x}" = 0 ] || fail "$name process $p: failed=${f:-?}"
    [ $((${c:-0} + ${s:-0})) = "${tot:-x}" ] && [ "$tot" = $PER ] ||
      fail "$name process $p: $DONE ${c:-?} + skipped ${s:-?} != total ${tot:-?} ($PER)"
    if [ -s "$T/$name.$p.err" ]; then
      fail "$name process $p wrote to stderr: $(cat "$T/$name.$p.err")"
    fi
    compiled=$((compiled + ${c:-0}))
    skipped=$((skipped + ${s:-0}))
    p=$((p + 1))
  done
}

t0=$(now)
run_round create
echo "round 1 (new database): $N processes x $PER specializations, $compiled $DONE, $skipped skipped, $(secs "$t0" "$(now)") s"
# Tuning a key takes a lease: the others wait for its row, so each key is
# tuned once. (Compiling offline takes no lease: duplicates are allowed.)
[ "$MODE" = compile ] || [ "$compiled" = "$EXPECT" ] ||
  fail "round 1 tuned $compiled times for $EXPECT keys (a key tuned twice, or a waiter gave up)"

# Round 2: replace the same rows at once, with readers alongside.
: >"$T/readers.log"
reader() {
  while [ ! -e "$T/stop" ]; do
    "$TUNE" stats --db "$DB" --json >/dev/null 2>>"$T/readers.log" || echo "stats failed" >>"$T/readers.log"
    "$TUNE" verify --db "$DB" --hash-only >"$T/verify.$1" 2>>"$T/readers.log" ||
      { echo "verify failed:"; cat "$T/verify.$1"; } >>"$T/readers.log"
    echo x >>"$T/reads.$1"
  done
}
reader 0 &
r0=$!
reader 1 &
r1=$!
t0=$(now)
run_round force --force
touch "$T/stop"
wait $r0 $r1
reads=$(cat "$T"/reads.* 2>/dev/null | wc -l)
echo "round 2 (--force, same rows): $N processes, $compiled $DONE, $skipped skipped, $reads reader passes, $(secs "$t0" "$(now)") s"
[ -s "$T/readers.log" ] && fail "readers: $(cat "$T/readers.log")"

# --- the database afterwards ---------------------------------------------------
out=$("$CHECK" integrity "$DB")
rc=$?
echo "$out"
[ $rc = 0 ] || fail "db_check integrity"
if [ "$MODE" = compile ]; then
  "$CHECK" keys "$DB" | cut -d'|' -f1-3 >"$T/shared.keys"
  rows=$(wc -l <"$T/shared.keys")
  what="cubin rows"
  if ! diff -u "$T/ref.keys" "$T/shared.keys"; then
    fail "cubin rows differ from the sequential reference"
  fi
else
  # One whole winner per key, none lost.
  "$CHECK" results "$DB" >"$T/results.out"
  rc=$?
  tail -n 1 "$T/results.out"
  [ $rc = 0 ] || fail "db_check results: $(tail -n 1 "$T/results.out")"
  rows=$(($(wc -l <"$T/results.out") - 1))
  what="result rows"
  [ "$rows" = "$EXPECT" ] || fail "$rows result rows for $EXPECT keys"
fi
"$TUNE" prewarm --db "$DB" $PREWARM --shapes "$T/pool.shapes" --json \
  >"$T/union.out" 2>&1 || fail "union prewarm: $(cat "$T/union.out")"
s=$(json_field "$T/union.out" skipped)
[ "${s:-x}" = "$EXPECT" ] || fail "union prewarm skipped ${s:-?} of $EXPECT (a result was lost)"
"$TUNE" verify --db "$DB" $VERIFY >"$T/verify.out" 2>&1 || fail "verify $VERIFY: $(cat "$T/verify.out")"
echo "verify: $(cat "$T/verify.out")"
# The bf16-output line's winner is re-run too (its rule: the fp32 budget plus
# half a bf16 ulp), not only the fp32 ones.
[ "$MODE" = compile ] || grep -q '^rerun  ok .* out=bf16 H=4 K=64 ' "$T/verify.out" ||
  fail "verify did not re-run the bf16-output winner"
if [ "$MODE" = compile ]; then
  c=$("$TUNE" stats --db "$DB" --json | sed -n 's/.*"cubins": \([0-9]*\).*/\1/p')
  [ "${c:-x}" = "$CUBINS" ] || fail "stats says ${c:-?} cubins, expected $CUBINS"
fi

echo "concurrent prewarm ($MODE): $N processes, $rows $what (expected ${CUBINS:-$EXPECT}), union re-prewarm skipped ${s:-?}/$EXPECT, $fails failures"
[ "$fails" = 0 ]
