set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
( cd build-gpu && timeout 100 ctest -R 'test_gpu_lost_context' --output-on-failure -V ) > $OUT/ctest-lost.log 2>&1
grep -E "other_device|\[ +(OK|FAILED|PASSED|ERROR|SKIPPED) " $OUT/ctest-lost.log | cut -c1-400 | tail -10
