set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
# The final tree: every GPU test, and the CPU tests except the five that
# only fail on this carried build's recorded paths (python3, cmake).
( s=$(date +%s); cd build-gpu && timeout 300 ctest -L gpu --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "Test +#[0-9]+: |tests passed|rc " $OUT/ctest-gpu.log | tail -12
( s=$(date +%s); cd build-gpu && timeout 200 ctest -LE gpu -E '^(kernel_mutants_apply|host_mutants_apply|bench_to_markdown|bench_to_markdown_merge|test_install)$' -j8 --output-on-failure; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-cpu-on-gpu.log 2>&1
grep -E "tests passed|Failed|rc " $OUT/ctest-cpu-on-gpu.log | tail -6
