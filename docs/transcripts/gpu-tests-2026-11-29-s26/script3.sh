set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv > $OUT/gpu.txt
# The whole default table (31 rows, every output checked against float64 first).
( s=$(date +%s); timeout 560 ./build-gpu/tools/kda-bench --json-dir $OUT; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/bench.log 2>&1
tail -n 45 $OUT/bench.log | cut -c1-160
