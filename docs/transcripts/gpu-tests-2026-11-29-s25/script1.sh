set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
{ nvidia-smi -L; nproc; command -v python3; } > $OUT/gpu.txt
PY=$(command -v python3 || echo /opt/torch/.venv/bin/python)
$PY tests/mutation/kernel_mutants.py run --build build-gpu --out $OUT/mutants --jobs 4 --minutes ${MINUTES:-6.5} --timeout 200 ${ONLY:+--only $ONLY} > $OUT/mutants.log 2>&1
echo "runner exit $?" >> $OUT/mutants.log
tail -n 90 $OUT/mutants.log
