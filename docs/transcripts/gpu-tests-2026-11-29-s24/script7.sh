set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d) KDA_TUNE=off
# the mutant: element offsets wrapped to 32 bits in the loads and stores (must fail)
( s=$(date +%s); KDA_KERNEL_DIR=$PWD/bench/probe/wrap_kt timeout 100 ./build-gpu/tests/test_gpu_large; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/large-mutant.log 2>&1
tail -n 20 $OUT/large-mutant.log
