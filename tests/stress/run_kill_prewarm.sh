#!/bin/sh
# kill -9 a prewarm (kda-tune prewarm --compile-only, no GPU) at random
# moments, again and again, on one database. Usage:
#   run_kill_prewarm.sh KDA_TUNE DB_CHECK
# KDA_STRESS_KILLS (default 50) sets the number of kills, KDA_STRESS_SEED
# the random seed (printed, so a failure can be replayed).
#
# Each round starts a prewarm of a few specializations on a database in one
# of three states (rotating): no file yet (the kill may land while it is
# created), every cubin purged (rows being inserted), or complete with
# --force (rows being replaced), and sends SIGKILL after a random delay
# between 0 and a full prewarm's duration. Then, in this order:
#  - kda-tune verify --hash-only opens the file as the crash left it and
#    finds no bad cubin (no partly written row is ever served);
#  - kda-tune stats opens it;
#  - db_check (straight through SQLite): PRAGMA integrity_check ok and every
#    cubin's sha256 matches its bytes;
#  - a new prewarm completes what was missing, with no failure or warning;
#  - every expected cubin is present and sound (db_check again).
# Round 0 does the same checks on a zero-byte file, the state a kill leaves
# between creating the file and committing the schema. At the end a prewarm
# of the set skips everything.
set -u
TUNE=$1
CHECK=$2
KILLS=${KDA_STRESS_KILLS:-50}
SEED=${KDA_STRESS_SEED:-$(date +%s)}
T=$(mktemp -d /tmp/kda_stress_kill.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HOME=$T/home KDA_CACHE_DIR=$T/cache
unset XDG_CACHE_HOME KDA_TUNE KDA_LOG
mkdir -p "$HOME"
fails=0
fail() {
  echo "FAIL: round $i: $*"
  fails=$((fails + 1))
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
json_field() { sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p" "$1" | tail -n 1; }

cat >"$T/set.shapes" <<'EOF'
heads=32 tokens=512
heads=16 dtype=f32 tokens=512
heads=8 varlen=yes tokens=4096
heads=8 gate=none tokens=512
EOF
DB=$T/tune.db
PREWARM="$TUNE prewarm --db $DB --compile-only --arch sm_90 --shapes $T/set.shapes"

# A full prewarm's duration (the mean of two, new file and --force).
i=0
t0=$(now)
$PREWARM >"$T/first.out" 2>&1 || fail "first prewarm: $(cat "$T/first.out")"
t1=$(now)
$PREWARM --force >/dev/null 2>&1 || fail "second prewarm"
t2=$(now)
DUR=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.3f", (b - a) / 2 }')
EXPECT=$("$CHECK" integrity "$DB" | sed -n 's/.*cubins \([0-9]*\).*/\1/p')
[ "${EXPECT:-0}" -ge 3 ] || fail "expected cubins: ${EXPECT:-?}"
echo "kill test: $KILLS kills, seed $SEED, $EXPECT cubins per full prewarm, which takes $DUR s ($(secs "$t0" "$t1") s new, $(secs "$t1" "$t2") s --force)"

# The file as a crash left it, through the library first, then straight
# through SQLite.
check_crashed_file() {
  if ! "$TUNE" verify --db "$DB" --hash-only >"$T/verify.out" 2>&1 || [ "$(grep -c . "$T/verify.out")" != 1 ]; then
    fail "verify --hash-only after a kill ($1): $(cat "$T/verify.out")"
  fi
  "$TUNE" stats --db "$DB" --json >"$T/stats.out" 2>&1 || fail "stats after a kill ($1): $(cat "$T/stats.out")"
  "$CHECK" integrity "$DB" >"$T/check.out" || fail "db_check after a kill ($1): $(cat "$T/check.out")"
  grep -q "integrity ok empty" "$T/check.out" && noschema=$((noschema + 1)) # killed before the schema's commit
}
# A new prewarm completes what is missing, silently.
complete_again() {
  $PREWARM --json >"$T/again.out" 2>"$T/again.err" || fail "prewarm after a kill: $(cat "$T/again.err")"
  [ -s "$T/again.err" ] && fail "prewarm after a kill warned: $(cat "$T/again.err")"
  [ "$(json_field "$T/again.out" failed)" = 0 ] || fail "prewarm after a kill: failures"
  recompiled=$((recompiled + $(json_field "$T/again.out" compiled)))
  "$CHECK" integrity "$DB" >"$T/check.out" || fail "db_check after the new prewarm: $(cat "$T/check.out")"
  grep -q "cubins $EXPECT results" "$T/check.out" || fail "after the new prewarm: $(cat "$T/check.out"), expected $EXPECT cubins"
}

killed=0
finished=0
nofile=0
noschema=0
recompiled=0

# Round 0, not left to chance: a kill after the file was created and before
# the schema's transaction committed leaves a file with no tables (a zero-
# byte file is that state). CI once hit it at random.
i=0
rm -f "$DB" "$DB-wal" "$DB-shm"
: >"$DB"
check_crashed_file "no schema yet"
[ "$noschema" = 1 ] || fail "a file with no tables: db_check said $(cat "$T/check.out")"
complete_again

awk -v s="$SEED" -v n="$KILLS" -v d="$DUR" 'BEGIN { srand(s); for (k = 0; k < n; k++) printf "%.3f\n", rand() * d }' >"$T/delays"
tstart=$(now)
i=0
while [ $i -lt "$KILLS" ]; do
  i=$((i + 1))
  delay=$(sed -n "${i}p" "$T/delays")
  force=
  case $((i % 3)) in
    0) rm -f "$DB" "$DB-wal" "$DB-shm"; state=new ;;
    1) "$TUNE" purge --db "$DB" --all >/dev/null 2>&1 || fail "purge --all"; state=purged ;;
    2) force=--force; state=force ;;
  esac
  $PREWARM $force >"$T/killed.out" 2>&1 &
  pid=$!
  sleep "$delay"
  kill -9 $pid 2>/dev/null
  wait $pid
  rc=$?
  if [ $rc = 137 ]; then
    killed=$((killed + 1))
  elif [ $rc = 0 ]; then
    finished=$((finished + 1)) # ended before the kill
  else
    fail "prewarm ($state) exited $rc before the kill: $(cat "$T/killed.out")"
  fi
  if [ ! -e "$DB" ]; then
    nofile=$((nofile + 1)) # killed before it created the file
  else
    check_crashed_file "$state, ${delay} s"
  fi
  complete_again
done
elapsed=$(secs "$tstart" "$(now)")

i=end
$PREWARM --json >"$T/final.out" 2>&1 || fail "final prewarm: $(cat "$T/final.out")"
s=$(json_field "$T/final.out" skipped)
# Every shape skipped (EXPECT counts cubins: the varlen line adds its
# chunk-table builder's).
SHAPES=$(grep -c . "$T/set.shapes")
[ "${s:-x}" = "$SHAPES" ] || fail "final prewarm skipped ${s:-?} of $SHAPES"
"$TUNE" verify --db "$DB" --hash-only >"$T/verify.out" 2>&1 || fail "final verify: $(cat "$T/verify.out")"
final=$("$CHECK" integrity "$DB")
echo "$final"
echo "kill test: $KILLS rounds in $elapsed s (seed $SEED): $killed killed mid-run, $finished finished before the kill, $nofile before the file existed, $noschema before its schema was committed; $recompiled cubins recompiled afterwards; integrity and sha256 checked after every kill; final prewarm skipped ${s:-?}/$SHAPES; $fails failures"
[ "$fails" = 0 ]
