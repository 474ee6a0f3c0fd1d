set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
nvidia-smi --query-gpu=driver_version --format=csv,noheader >> $OUT/gpu.txt
( s=$(date +%s); cd build-gpu && timeout 300 ctest -L gpu --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
( s=$(date +%s); cd build-gpu && timeout 200 ctest -R '^(test_db_lookup|test_fake_driver|test_tuner_slot|test_no_device|test_validation|test_db_api|test_kda_tune_cli|test_hostile_args)$' -j8 --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-cpu-subset.log 2>&1
grep -E "tests passed|Failed|rc " $OUT/ctest-cpu-subset.log | tail -6
T=build-gpu/tools; DB=$(mktemp -d)/deploy.db
( set -x
  $T/kda-tune lookup --db $DB --heads 32 --varlen yes --seqs 8 --tokens 7353; echo "exit=$?"
  $T/kda-tune prewarm --db $DB --heads 32 --varlen yes --seqs 8 --tokens 7353 --budget-ms 3000
  $T/kda-tune prewarm --db $DB --heads 16 --tokens 3000,70000 --budget-ms 3000
  $T/kda-tune info --db $DB
  $T/kda-tune lookup --db $DB --heads 32 --varlen yes --seqs 8 --tokens 7353,5000,20000 --check; echo "exit=$?"
  $T/kda-tune lookup --db $DB --heads 16 --tokens 1500,3000,70000,100 --check; echo "exit=$?"
  $T/kda-tune lookup --db $DB --heads 16 --tokens 3000 --g-align 8; echo "exit=$?"
  $T/kda-tune lookup --db $DB --heads 16,8 --tokens 3000 --json; echo "exit=$?"
  $T/kda-demo --db $DB; echo "exit=$?"
) > $OUT/lookup.log 2>&1
tail -n 45 $OUT/lookup.log
( timeout 150 $T/kda-bench --quick --groups matrix --tokens 512 --db $(mktemp -d)/b.db --json-dir $OUT/bench ) > $OUT/bench.log 2>&1
grep -E "copy bandwidth|^matrix" $OUT/bench.log
