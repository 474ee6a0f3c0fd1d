set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
cd new
export KDA_CACHE_DIR=$(mktemp -d)
timeout 575 ./build-gpu/tools/kda-bench --json-dir $OUT > $OUT/bench-full.log 2>&1; echo "bench rc $?" >> $OUT/bench-full.log
