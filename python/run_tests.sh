#!/usr/bin/env bash
# Runs the Python package's tests against a built libkda.
#
#   bash python/run_tests.sh [BUILD_DIR] [pytest args...]
#
# BUILD_DIR defaults to build/release (relative to the repository root);
# KDA_LIBRARY, if already set, wins. Installs pytest with pip when it is
# missing. Without torch the torch-dependent tests are skipped; without a
# GPU the GPU tests are skipped. The package is used from the source tree
# (PYTHONPATH), not installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-build/release}
[ $# -gt 0 ] && shift
case "$build" in /*) ;; *) build=$root/$build ;; esac
py=${PYTHON:-python3}
export KDA_LIBRARY=${KDA_LIBRARY:-$build/libkda.so}
if [ ! -e "$KDA_LIBRARY" ]; then
  echo "run_tests.sh: $KDA_LIBRARY does not exist; build the library first" >&2
  exit 1
fi
if ! "$py" -c "import pytest" 2>/dev/null; then
  echo "run_tests.sh: installing pytest"
  "$py" -m pip install -q pytest 2>/dev/null || "$py" -m pip install -q --user pytest \
    || "$py" -m pip install -q --break-system-packages pytest
fi
export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}
export KDA_HEADER=${KDA_HEADER:-$root/include/kda/kda.h}
cd "$here"
exec "$py" -m pytest -q -rs -p no:cacheprovider tests "$@"
