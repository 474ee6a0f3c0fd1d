set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt
export KDA_CACHE_DIR=$(mktemp -d)
# 1. the signed-input cumsum test: the tree's kernels, then HEAD's fp32 ones (must fail)
for kt in "" "$PWD/bench/probe/head_kt"; do
  echo "== KDA_KERNEL_DIR='$kt'"
  KDA_KERNEL_DIR=$kt KDA_TUNE=off KDA_TEST_FILTER=either_sign,vector_and_scalar timeout 60 ./build-gpu/tests/test_gpu_kernels; echo "rc $?"
done > $OUT/either-sign.log 2>&1
# 2. kda-bench round 2 of call 3's A/B (order reversed: the tree's kernels first)
OUT=$OUT/ab timeout 330 bash bench/probe/bench_ab.sh build-gpu "new=;head=$PWD/bench/probe/head_kt" 1 --groups matrix --tokens 8192,32768 --budget-ms 1500 > $OUT/ab.log 2>&1; echo "ab rc $?" >> $OUT/ab.log
tail -n 3 $OUT/*.log
