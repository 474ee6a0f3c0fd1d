set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt; cat /proc/driver/nvidia/version >> $OUT/gpu.txt 2>/dev/null; echo "tree $(cat TREE)" >> $OUT/gpu.txt; cat $OUT/gpu.txt
( s=$(date +%s); cd build-gpu && timeout 100 ctest -R 'test_gpu_lost_context' --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-lost.log 2>&1
grep -E "scene (prewarm|background): the|after scene|\[ +(OK|FAILED|PASSED|ERROR) |rc " $OUT/ctest-lost.log | cut -c1-200 | tail -12
( s=$(date +%s); cd build-gpu && timeout 230 ctest -L gpu -E 'test_gpu_lost_context' --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
( s=$(date +%s); cd python && KDA_LIBRARY=$PWD/../build-gpu/libkda.so KDA_HEADER=$PWD/../include/kda/kda.h PYTHONPATH=$PWD timeout 200 python3 -m pytest -q -rs -p no:cacheprovider tests/; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python-gpu.log 2>&1
tail -4 $OUT/python-gpu.log
T=build-gpu/tools
( timeout 60 $T/kda-bench --quick --groups matrix --tokens 512 --db $(mktemp -d)/b.db --json-dir $OUT/bench ) > $OUT/bench.log 2>&1
grep -E "^ *(fused|matrix)|us|copy" $OUT/bench.log | head -14
