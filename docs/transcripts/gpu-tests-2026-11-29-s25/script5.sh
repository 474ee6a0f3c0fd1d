set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
( s=$(date +%s); cd build-gpu && timeout 400 ctest -L gpu --output-on-failure -V; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/ctest-gpu.log 2>&1
grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |damaged plan|huge bounds|past the count|Test #|tests passed|rc " $OUT/ctest-gpu.log | tail -80
