set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt; head -1 /proc/driver/nvidia/version >> $OUT/gpu.txt 2>&1
( s=$(date +%s); cd build-gpu && timeout 300 ctest -L gpu --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
( s=$(date +%s); cd build-gpu && timeout 200 ctest -R '^(test_db_lookup|test_fake_driver|test_tuner_slot|test_store|test_db_api|test_kda_tune_cli|test_validation)$' -j8 --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-cpu-subset.log 2>&1
grep -E "tests passed|Failed|rc " $OUT/ctest-cpu-subset.log | tail -6
T=build-gpu/tools; DB=$(mktemp -d)/fleet.db; EX=$(mktemp -d)
( set -x
  $T/kda-tune prewarm --db $DB --heads 16 --tokens 3000 --varlen both --budget-ms 3000
  $T/kda-tune show --db $DB 1 | head -16
  $T/kda-tune export --db $DB --output $EX/h200.json
  $T/kda-tune import --db $EX/other.db $EX/h200.json
  $T/kda-tune show --db $EX/other.db 1 | sed -n 14,17p
  $T/kda-tune lookup --db $DB --heads 16 --tokens 1200,3000,4000 --varlen both --check; echo "exit=$?"
  python3 -c "import sqlite3; c=sqlite3.connect('$DB'); [print(r) for r in c.execute('select id,tokens,config,pct_of_copy,tuned_on,driver,source from results_readable')]"
) > $OUT/provenance.log 2>&1
tail -n 40 $OUT/provenance.log
