set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt
export KDA_CACHE_DIR=$(mktemp -d) KDA_TUNE=off
( s=$(date +%s); timeout 140 ./build-gpu/tests/test_gpu_large; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/large.log 2>&1
tail -n 12 $OUT/large.log
