set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
cd new
PY=/opt/torch/.venv/bin/python
PYTHON=$PY timeout 250 bash python/run_tests.sh build-gpu -v -s -k prewarm > $OUT/python-prewarm.log 2>&1; echo "rc $?" >> $OUT/python-prewarm.log
PYTHON=$PY timeout 250 bash python/run_tests.sh build-gpu -q > $OUT/python-gpu.log 2>&1; echo "rc $?" >> $OUT/python-gpu.log
