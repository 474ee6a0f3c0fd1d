set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt
(cd build-gpu && ctest -R "^(test_gpu_bad_seqlens|test_gpu_tuner)$" --output-on-failure -V) > $OUT/ctest.log 2>&1; echo "rc $?" >> $OUT/ctest.log
grep -E "Test #|tests passed|rc |damaged plan, chunk 256]" $OUT/ctest.log
