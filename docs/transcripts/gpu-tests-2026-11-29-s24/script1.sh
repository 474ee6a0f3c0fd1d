set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt; nvidia-smi --query-gpu=driver_version,name --format=csv >> $OUT/gpu.txt
export KDA_CACHE_DIR=$(mktemp -d)
# 1. every GPU test through ctest (the kernels test now shares gpu_case.c; the random one draws a seed)
(cd build-gpu && timeout 200 ctest -L gpu -V) > $OUT/ctest-gpu.log 2>&1; echo "ctest rc $?" >> $OUT/ctest-gpu.log
export KDA_TUNE=off KDA_TEST_KERNEL_DIR=$PWD/kernel_templates
# 2. random cases: more fresh seeds of 96
for i in 1 2; do
  echo "== run $i (96 cases)"; s=$(date +%s)
  timeout 100 ./build-gpu/tests/test_gpu_random; echo "rc $? wall $(( $(date +%s) - s )) s"
done > $OUT/random.log 2>&1
# 3. under compute-sanitizer memcheck: out-of-bounds reads the poison cannot see
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
( s=$(date +%s); KDA_TEST_RANDOM_CASES=16 timeout 140 $CS --tool memcheck --error-exitcode 9 ./build-gpu/tests/test_gpu_random; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/random-memcheck.log 2>&1
tail -3 $OUT/*.log
