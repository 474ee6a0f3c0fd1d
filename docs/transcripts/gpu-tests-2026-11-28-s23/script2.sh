set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
PY=/opt/torch/.venv/bin/python
L=$OUT/other-build.log
# NVRTC copies on this machine, with their build IDs
for f in $(find / -xdev -name 'libnvrtc.so*' -not -type l 2>/dev/null); do echo "$f $(readelf -n $f 2>/dev/null | grep 'Build ID' | awk '{print $3}')"; done > $OUT/nvrtc-copies.txt 2>&1
# 1. prewarm with the toolkit's NVRTC (kda-tune), relabel as another build
D=$(mktemp -d)
./new/build-gpu/tools/kda-tune prewarm --db $D/tune.db --heads 32,16 --tokens 2048,8192 > $OUT/prewarm.log 2>&1
./new/build-gpu/tools/kda-tune prewarm --db $D/tune.db --varlen yes --heads 32,16 --tokens 8192 >> $OUT/prewarm.log 2>&1
./new/build-gpu/tools/kda-tune prewarm --db $D/tune.db --varlen yes --heads 32 --tokens 7353 --seqs 8 >> $OUT/prewarm.log 2>&1
$PY relabel.py $D/tune.db >> $L 2>&1
for tree in main new; do
  if [ $tree = new ]; then R=$PWD/new; else R=$PWD; fi
  for mode in on cached; do
    E=$(mktemp -d); cp $D/tune.db $E/tune.db
    echo "== $tree KDA_TUNE=$mode, PyTorch process, relabelled database" >> $L
    KDA_TUNE=$mode KDA_CACHE_DIR=$E KDA_LIBRARY=$R/build-gpu/libkda.so PYTHONPATH=$R/python $PY check_other_build.py >> $L 2>&1
  done
  E=$(mktemp -d); cp $D/tune.db $E/tune.db
  echo "== $tree kda-demo, relabelled database" >> $L
  (cd $R && KDA_CACHE_DIR=$E ./build-gpu/tools/kda-demo) >> $L 2>&1
done
E=$(mktemp -d); cp $D/tune.db $E/tune.db
echo "== new KDA_CUBIN_NVRTC=exact, KDA_TUNE=on" >> $L
KDA_CUBIN_NVRTC=exact KDA_TUNE=on KDA_CACHE_DIR=$E KDA_LIBRARY=$PWD/new/build-gpu/libkda.so PYTHONPATH=$PWD/new/python $PY check_other_build.py >> $L 2>&1
# 2. GPU tests of the new tree
cd new
export KDA_CACHE_DIR=$(mktemp -d)
(cd build-gpu && timeout 200 ctest -L gpu -V) > $OUT/ctest-gpu.log 2>&1; echo "ctest rc $?" >> $OUT/ctest-gpu.log
PYTHON=$PY timeout 200 bash python/run_tests.sh build-gpu -q > $OUT/python-gpu.log 2>&1; echo "python rc $?" >> $OUT/python-gpu.log
