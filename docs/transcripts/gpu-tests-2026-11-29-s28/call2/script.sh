set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
libdir=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$libdir:${LD_LIBRARY_PATH:-}
export KDA_CACHE_DIR=$(mktemp -d)
nvidia-smi -L > $OUT/gpu.txt
python3 -c "import torch; print('torch', torch.__version__)" >> $OUT/gpu.txt 2>&1
T=build-gpu/tools; DB=$(mktemp -d)/demo.db
( set -x
  $T/kda-demo --db $DB; echo "exit=$?"
  $T/kda-tune prewarm --db $DB --heads 32 --varlen yes --seqs 8 --tokens 7353 --scale yes --budget-ms 3000
  $T/kda-tune lookup --db $DB --heads 32 --varlen yes --seqs 8 --tokens 7353 --scale yes --check; echo "exit=$?"
  $T/kda-tune lookup --db $DB --model kimi-linear --tp 1,4 --tokens 7353; echo "exit=$?"
  $T/kda-demo --db $DB; echo "exit=$?"
) > $OUT/demo.log 2>&1
cat $OUT/demo.log | grep -vE "^\+ " | head -60
( s=$(date +%s); timeout 420 bash python/run_tests.sh build-gpu -q; echo "rc $? wall $(( $(date +%s) - s )) s" ) > $OUT/python.log 2>&1
tail -n 4 $OUT/python.log
