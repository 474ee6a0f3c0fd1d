set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
# The Python package's CPU tests on a machine with a GPU (and torch).
( s=$(date +%s); PYTHON=/opt/torch/.venv/bin/python timeout 240 bash python/run_tests.sh build-gpu -k cpu; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python-cpu-on-gpu.log 2>&1
tail -n 15 $OUT/python-cpu-on-gpu.log
