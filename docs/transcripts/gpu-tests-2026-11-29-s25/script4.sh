set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt
PY=$(command -v python3 || echo /opt/torch/.venv/bin/python)
ONLY=segmented_form2,pdl_wait_removed,varlen_few_last_bound,compare_seen_dropped
$PY tests/mutation/kernel_mutants.py run --build build-gpu --out /tmp/mutants --jobs 4 --minutes 5 --timeout 200 --only $ONLY > $OUT/mutants.log 2>&1
echo "runner exit $?" >> $OUT/mutants.log
cp /tmp/mutants/results.json /tmp/mutants/results.txt $OUT/ 2>/dev/null
tar -czf $OUT/mutant-logs.tgz -C /tmp mutants
cat $OUT/mutants.log
