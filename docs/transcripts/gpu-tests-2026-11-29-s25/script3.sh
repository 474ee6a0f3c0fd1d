set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt
PY=$(command -v python3 || echo /opt/torch/.venv/bin/python)
ONLY=table_tiles_restart,table_fill_zero,table_count_unclamped,plan_granules_floor,plan_fill_short,plan_last_granule,plan_whole_rows,plan_unused_kept,plan_rank_carry,compare_tolerance_ignored,compare_unwritten_ignored,compare_half_warp,bf16_out_truncates,varlen_start_unclamped,varlen_count_ignored,plan_len_unclamped,plan_g0_unclamped
$PY tests/mutation/kernel_mutants.py run --build build-gpu --out /tmp/mutants --jobs 4 --minutes 5 --timeout 200 --only $ONLY > $OUT/mutants.log 2>&1
echo "runner exit $?" >> $OUT/mutants.log
cp /tmp/mutants/results.json /tmp/mutants/results.txt $OUT/ 2>/dev/null
tar -czf $OUT/mutant-logs.tgz -C /tmp mutants
grep -E "^\[ *(OK|FAILED|PASSED|RUN) |damaged plan|huge|past the count|stage" /tmp/mutants/control.log | head -60
cat $OUT/mutants.log
