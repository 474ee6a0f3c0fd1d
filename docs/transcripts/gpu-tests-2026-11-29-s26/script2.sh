set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
ln -sf /usr/lib/x86_64-linux-gnu/libsqlite3.so.0 "$libdir/libsqlite3.so"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export CMAKE_PREFIX_PATH=$PWD/.deps/root/usr
export PATH=/usr/local/cuda/bin:$PATH
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
# 1. Every CPU test, on a machine that has a GPU (they must pass on both kinds).
( s=$(date +%s); cd build-gpu && timeout 240 ctest -LE gpu -j8 --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-cpu-on-gpu.log 2>&1
grep -E "Test +#|tests passed|rc " $OUT/ctest-cpu-on-gpu.log | grep -vE " Passed " | tail -20
grep -cE " Passed " $OUT/ctest-cpu-on-gpu.log
# 2. The host mutants only a GPU can see (a Release copy built here).
rm -rf /tmp/hm
( s=$(date +%s); timeout 200 python3 tests/mutation/host_mutants.py run --gpu --work /tmp/hm --jobs 16; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/host-mutants-gpu.log 2>&1
cp /tmp/hm/results.txt /tmp/hm/results.json $OUT/ 2>/dev/null
grep -E "^control|^[a-z_]+ +(killed|survived|stillborn)|^rc |; " $OUT/host-mutants-gpu.log
# 3. The GPU tests.
( s=$(date +%s); cd build-gpu && timeout 240 ctest -L gpu --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
