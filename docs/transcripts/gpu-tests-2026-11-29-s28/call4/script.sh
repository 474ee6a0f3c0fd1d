set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
( s=$(date +%s); cd build-gpu && timeout 120 ctest -R '^(test_gpu_tuner|test_tuner_slot)$' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc |where_it|prewarm_tunes" $OUT/ctest.log | tail -8
T=build-gpu/tools; DB=$(mktemp -d)/fleet.db
( set -x
  $T/kda-tune prewarm --db $DB --heads 8 --tokens 3000 --budget-ms 3000
  $T/kda-tune show --db $DB 1 | sed -n 14,18p
  python3 -c "import sqlite3; c=sqlite3.connect('$DB'); [print(r) for r in c.execute('select id,tokens,config,pct_of_copy,tuned_on,driver,source from results_readable')]"
) > $OUT/provenance.log 2>&1
tail -n 12 $OUT/provenance.log
