set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt; cat $OUT/gpu.txt
cat /proc/driver/nvidia/version >> $OUT/gpu.txt 2>/dev/null
# 1. the two-GPU test and the view prewarm test first (new), then all GPU tests
( s=$(date +%s); cd build-gpu && timeout 200 ctest -R 'test_gpu_multi' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-multi.log 2>&1
grep -E "device [01]|SKIPPED|OK|FAILED|PASSED|rc " $OUT/ctest-multi.log | tail -20
( s=$(date +%s); cd build-gpu && timeout 330 ctest -L gpu -E test_gpu_multi --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
# 2. kda-tune on device 1: prewarm a view and an aligned shape, lookup --check both
T=build-gpu/tools/kda-tune; D=$(mktemp -d)/t.db
( $T prewarm --db $D --device 1 --heads 16 --tokens 3000 --g-align 8 --budget-ms 2000;
  $T prewarm --db $D --device 1 --heads 16 --tokens 3000 --budget-ms 2000;
  $T lookup --db $D --device 1 --heads 16 --tokens 3000,2000 --g-align 8 --check; echo "lookup view rc $?";
  $T lookup --db $D --device 1 --heads 16 --tokens 3000 --check; echo "lookup aligned rc $?";
  $T lookup --db $D --device 1 --heads 16 --tokens 3000 --out-align 16 --check; echo "lookup other view rc $?";
  $T list --db $D ) > $OUT/tune-device1.log 2>&1
tail -30 $OUT/tune-device1.log
# 3. Python: the two-device tests and prewarm on device 1 (torch)
( s=$(date +%s); cd python && KDA_LIBRARY=$PWD/../build-gpu/libkda.so KDA_HEADER=$PWD/../include/kda/kda.h PYTHONPATH=$PWD timeout 150 python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu_multi_device.py tests/test_gpu_prewarm.py tests/test_gpu_functions.py; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python-gpu.log 2>&1
tail -5 $OUT/python-gpu.log
# 4. the GPU-only host mutant: prewarm's inputs aligned whatever the view
export CMAKE_PREFIX_PATH=$PWD/.deps/root/usr
( s=$(date +%s); timeout 200 python3 tests/mutation/host_mutants.py run --gpu --only prewarm_inputs_aligned --work /tmp/hm --jobs 16; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/host-mutants-gpu.log 2>&1
tail -5 $OUT/host-mutants-gpu.log
