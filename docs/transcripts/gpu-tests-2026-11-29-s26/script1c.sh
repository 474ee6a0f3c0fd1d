set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
ln -sf /usr/lib/x86_64-linux-gnu/libsqlite3.so.0 "$libdir/libsqlite3.so"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export CMAKE_PREFIX_PATH=$PWD/.deps/root/usr
export PATH=/usr/local/cuda/bin:$PATH
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
# 1. The GPU stress test, now with a bf16-output line that kda-tune verify re-runs.
#( s=$(date +%s); cd build-gpu && timeout 200 ctest -R '^test_stress_concurrent_prewarm_gpu$' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/stress-gpu.log 2>&1
#grep -E "rerun|concurrent prewarm|FAIL|tests passed|rc " $OUT/stress-gpu.log | tail -30
# 2. The host mutants only a GPU can see (a Release copy built here).
rm -rf /tmp/hm
( s=$(date +%s); timeout 420 python3 tests/mutation/host_mutants.py run --gpu --work /tmp/hm --jobs 16; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/host-mutants-gpu.log 2>&1
cp /tmp/hm/results.txt /tmp/hm/results.json $OUT/ 2>/dev/null
tail -n 12 $OUT/host-mutants-gpu.log
