set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt; nvidia-smi --query-gpu=driver_version,name --format=csv >> $OUT/gpu.txt
export KDA_CACHE_DIR=$(mktemp -d) KDA_TUNE=off KDA_TEST_KERNEL_DIR=$PWD/kernel_templates
# 1. the fixed sweeps on the new run_case (offsets 0, guards checked)
( s=$(date +%s); timeout 150 ./build-gpu/tests/test_gpu_kernels; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/kernels.log 2>&1
# 2. random cases: two fresh seeds of 1000
for i in 1 2; do
  echo "== run $i (1000 cases)"; s=$(date +%s)
  KDA_TEST_RANDOM_CASES=1000 timeout 150 ./build-gpu/tests/test_gpu_random; echo "rc $? wall $(( $(date +%s) - s )) s"
done > $OUT/random.log 2>&1
# 3. memcheck on 64 random cases
( s=$(date +%s); KDA_TEST_RANDOM_CASES=64 timeout 120 /usr/local/cuda/bin/compute-sanitizer --tool memcheck --error-exitcode 9 ./build-gpu/tests/test_gpu_random; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/random-memcheck.log 2>&1
# 4. python: views off alignment, and the rest of the function tests
unset KDA_TUNE
( s=$(date +%s); PYTHON=/opt/torch/.venv/bin/python timeout 150 bash python/run_tests.sh build-gpu -k test_gpu_functions; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python.log 2>&1
tail -n 3 $OUT/*.log
