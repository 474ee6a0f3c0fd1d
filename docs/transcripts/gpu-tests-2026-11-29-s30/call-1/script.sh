set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt; cat /proc/driver/nvidia/version >> $OUT/gpu.txt 2>/dev/null; head -5 $OUT/gpu.txt
git log -1 --oneline 2>/dev/null
( s=$(date +%s); cd build-gpu && timeout 150 ctest -R 'test_gpu_lost_context' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-lost.log 2>&1
grep -E "scene|after scene|\[ +(OK|FAILED|PASSED|ERROR) |rc " $OUT/ctest-lost.log | cut -c1-300 | tail -30
( s=$(date +%s); cd build-gpu && timeout 120 ctest -R 'test_gpu_multi' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-multi.log 2>&1
grep -E "\[ +(OK|FAILED|PASSED|ERROR|SKIPPED) |rc |error" $OUT/ctest-multi.log | tail -20
( s=$(date +%s); cd python && KDA_LIBRARY=$PWD/../build-gpu/libkda.so KDA_HEADER=$PWD/../include/kda/kda.h PYTHONPATH=$PWD timeout 90 python3 -m pytest -q -rs -s -p no:cacheprovider tests/test_gpu_lost_context.py tests/test_gpu_multi_device.py; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python-gpu.log 2>&1
grep -E "torch:|LOST|passed|failed|rc " $OUT/python-gpu.log | cut -c1-400 | tail -8
( s=$(date +%s); cd build-gpu && timeout 220 ctest -L gpu -E 'test_gpu_multi|test_gpu_lost_context' --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
