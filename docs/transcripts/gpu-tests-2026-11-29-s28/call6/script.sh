set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
( s=$(date +%s); cd build-gpu && timeout 300 ctest -L gpu --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
( s=$(date +%s); cd build-gpu && timeout 200 ctest -R '^(test_db_lookup|test_fake_driver|test_tuner_slot|test_store|test_db_api|test_kda_tune_cli|test_concurrent_api)$' -j8 --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-cpu-subset.log 2>&1
grep -E "tests passed|Failed|rc " $OUT/ctest-cpu-subset.log | tail -6
