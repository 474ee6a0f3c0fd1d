#!/bin/sh
# Several processes prewarm overlapping shape sets into one database at the
# same time (kda-tune prewarm --compile-only, no GPU). Usage:
#   run_concurrent_prewarm.sh KDA_TUNE DB_CHECK
# KDA_STRESS_PROCS (default 8, 4 to 8 is the point) sets the process count.
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
set -u
TUNE=$1
CHECK=$2
N=${KDA_STRESS_PROCS:-8}
T=$(mktemp -d /tmp/kda_stress_conc.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HOME=$T/home KDA_CACHE_DIR=$T/cache
unset XDG_CACHE_HOME KDA_TUNE KDA_LOG
mkdir -p "$HOME"
fails=0
fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# json_field FILE NAME: the number after "NAME": in the prewarm summary.
json_field() { sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p" "$1" | tail -n 1; }

# A pool of shape lines, one specialization each; process p takes lines
# p .. p+5 (mod 12), so neighbours share five of six and all share some.
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
PER=6
p=0
while [ $p -lt "$N" ]; do
  j=0
  : >"$T/p$p.shapes"
  while [ $j -lt $PER ]; do
    sed -n "$(((p + j) % POOL + 1))p" "$T/pool.shapes" >>"$T/p$p.shapes"
    j=$((j + 1))
  done
  p=$((p + 1))
done

# Reference: the union, prewarmed alone.
t0=$(now)
"$TUNE" prewarm --db "$T/ref.db" --compile-only --arch sm_90 --shapes "$T/pool.shapes" --json \
  >"$T/ref.out" 2>"$T/ref.err" || fail "reference prewarm: $(cat "$T/ref.err")"
EXPECT=$(json_field "$T/ref.out" total)
"$CHECK" keys "$T/ref.db" | cut -d'|' -f1-3 >"$T/ref.keys"
echo "reference: $EXPECT specializations, $(wc -l <"$T/ref.keys") cubins, $(secs "$t0" "$(now)") s"
[ "$(wc -l <"$T/ref.keys")" = "$EXPECT" ] || fail "reference database has $(wc -l <"$T/ref.keys") cubins, expected $EXPECT"

DB=$T/shared.db
# run_round NAME EXTRA...: N prewarm processes at once; checks each one.
run_round() {
  name=$1
  shift
  p=0
  while [ $p -lt "$N" ]; do
    "$TUNE" prewarm --db "$DB" --compile-only --arch sm_90 --shapes "$T/p$p.shapes" --json "$@" \
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
    c=$(json_field "$T/$name.$p.out" compiled)
    s=$(json_field "$T/$name.$p.out" skipped)
    tot=$(json_field "$T/$name.$p.out" total)
    [ "${f:-x}" = 0 ] || fail "$name process $p: failed=${f:-?}"
    [ $((${c:-0} + ${s:-0})) = "${tot:-x}" ] && [ "$tot" = $PER ] ||
      fail "$name process $p: compiled ${c:-?} + skipped ${s:-?} != total ${tot:-?} ($PER)"
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
echo "round 1 (new database): $N processes x $PER specializations, $compiled compiled, $skipped skipped, $(secs "$t0" "$(now)") s"

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
echo "round 2 (--force, same rows): $N processes, $compiled compiled, $skipped skipped, $reads reader passes, $(secs "$t0" "$(now)") s"
[ -s "$T/readers.log" ] && fail "readers: $(cat "$T/readers.log")"

# --- the database afterwards ---------------------------------------------------
out=$("$CHECK" integrity "$DB")
rc=$?
echo "$out"
[ $rc = 0 ] || fail "db_check integrity"
"$CHECK" keys "$DB" | cut -d'|' -f1-3 >"$T/shared.keys"
rows=$(wc -l <"$T/shared.keys")
if ! diff -u "$T/ref.keys" "$T/shared.keys"; then
  fail "cubin rows differ from the sequential reference"
fi
"$TUNE" prewarm --db "$DB" --compile-only --arch sm_90 --shapes "$T/pool.shapes" --json \
  >"$T/union.out" 2>&1 || fail "union prewarm: $(cat "$T/union.out")"
s=$(json_field "$T/union.out" skipped)
[ "${s:-x}" = "$EXPECT" ] || fail "union prewarm skipped ${s:-?} of $EXPECT (a result was lost)"
"$TUNE" verify --db "$DB" --hash-only >"$T/verify.out" 2>&1 || fail "verify --hash-only: $(cat "$T/verify.out")"
echo "verify: $(cat "$T/verify.out")"
c=$("$TUNE" stats --db "$DB" --json | sed -n 's/.*"cubins": \([0-9]*\).*/\1/p')
[ "${c:-x}" = "$EXPECT" ] || fail "stats says ${c:-?} cubins, expected $EXPECT"

echo "concurrent prewarm: $N processes, $rows cubin rows (expected $EXPECT), union re-prewarm skipped ${s:-?}/$EXPECT, $fails failures"
[ "$fails" = 0 ]
