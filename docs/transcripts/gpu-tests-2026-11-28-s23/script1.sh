set -u
[ -d .deps/root ] || { mkdir -p .deps/root && for d in .debs/*.deb; do dpkg -x "$d" .deps/root; done; }
S=$(find .deps/root -name 'libsqlite3.so.0*' | head -1); true
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi -L > $OUT/gpu.txt; nvidia-smi --query-gpu=driver_version,name --format=csv >> $OUT/gpu.txt
PY=/opt/torch/.venv/bin/python
# 1. CACHED on a compile-only database, new tree vs 41387f0
for tree in new old; do
  if [ $tree = new ]; then R=$PWD; else R=$PWD/old; fi
  D=$(mktemp -d); cp dbs/offline.db $D/tune.db
  echo "== $tree: kda-demo, KDA_TUNE=cached, offline db" >> $OUT/cached.log
  (cd $R && KDA_TUNE=cached KDA_CACHE_DIR=$D ./build-gpu/tools/kda-demo) >> $OUT/cached.log 2>&1
  echo "== $tree: python dense, KDA_TUNE=cached, offline db" >> $OUT/cached.log
  KDA_TUNE=cached KDA_CACHE_DIR=$D KDA_LIBRARY=$R/build-gpu/libkda.so PYTHONPATH=$R/python $PY check_cached.py >> $OUT/cached.log 2>&1
  D2=$(mktemp -d)
  echo "== $tree: python dense, KDA_TUNE=cached, EMPTY db (control)" >> $OUT/cached.log
  KDA_TUNE=cached KDA_CACHE_DIR=$D2 KDA_LIBRARY=$R/build-gpu/libkda.so PYTHONPATH=$R/python $PY check_cached.py >> $OUT/cached.log 2>&1
done
# 2. GPU tests on the current tree
export KDA_CACHE_DIR=$(mktemp -d)
(cd build-gpu && timeout 280 ctest -L gpu -V) > $OUT/ctest-gpu.log 2>&1; echo "ctest rc $?" >> $OUT/ctest-gpu.log
# 3. benchmark rows at 8192 and 32768
B=$(mktemp -d)
timeout 200 ./build-gpu/tools/kda-bench --json-dir $OUT --groups matrix,varlen,varlen-host,varlen-plan --tokens 8192,32768 > $OUT/bench.log 2>&1; echo "bench rc $?" >> $OUT/bench.log
