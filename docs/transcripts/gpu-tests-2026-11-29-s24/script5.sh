set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt
export KDA_CACHE_DIR=$(mktemp -d) KDA_TUNE=off KDA_TEST_KERNEL_DIR=$PWD/kernel_templates
CS=/usr/local/cuda/bin/compute-sanitizer
# 1. memcheck: the double-sum cumsum's fixed cases, then 64 random cases
( s=$(date +%s); KDA_TEST_FILTER=either_sign timeout 100 $CS --tool memcheck --error-exitcode 9 ./build-gpu/tests/test_gpu_kernels; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/memcheck-either-sign.log 2>&1
( s=$(date +%s); KDA_TEST_RANDOM_CASES=64 timeout 80 $CS --tool memcheck --error-exitcode 9 ./build-gpu/tests/test_gpu_random; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/memcheck-random.log 2>&1
# 2. one more fresh seed of 1000 cases
( s=$(date +%s); KDA_TEST_RANDOM_CASES=1000 timeout 90 ./build-gpu/tests/test_gpu_random; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/random.log 2>&1
tail -n 3 $OUT/*.log
