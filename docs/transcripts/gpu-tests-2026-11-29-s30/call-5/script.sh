set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt; cat /proc/driver/nvidia/version >> $OUT/gpu.txt 2>/dev/null; echo "tree $(cat TREE)" >> $OUT/gpu.txt; cat $OUT/gpu.txt
( s=$(date +%s); cd build-gpu && timeout 100 ctest -R 'test_gpu_lost_context' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-lost.log 2>&1
grep -E "other_device|after scene|\[ +(OK|FAILED|PASSED|ERROR|SKIPPED) |rc " $OUT/ctest-lost.log | cut -c1-220 | tail -14
( s=$(date +%s); cd build-gpu && timeout 120 ctest -R 'test_gpu_multi' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-multi.log 2>&1
grep -E "\[ +(OK|FAILED|PASSED|ERROR|SKIPPED) |rc " $OUT/ctest-multi.log | tail -10
( s=$(date +%s); cd python && KDA_LIBRARY=$PWD/../build-gpu/libkda.so KDA_HEADER=$PWD/../include/kda/kda.h PYTHONPATH=$PWD timeout 90 python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu_multi_device.py tests/test_gpu_lost_context.py; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python-gpu.log 2>&1
tail -3 $OUT/python-gpu.log
