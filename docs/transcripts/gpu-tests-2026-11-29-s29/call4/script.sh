set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt; head -2 $OUT/gpu.txt
( s=$(date +%s); cd python && KDA_LIBRARY=$PWD/../build-gpu/libkda.so KDA_HEADER=$PWD/../include/kda/kda.h PYTHONPATH=$PWD timeout 200 python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu_multi_device.py tests/test_gpu_graph.py tests/test_gpu_prewarm.py tests/test_gpu_chunk_plan.py; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python-gpu.log 2>&1
tail -3 $OUT/python-gpu.log
