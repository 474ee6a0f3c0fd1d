#!/usr/bin/env bash
# Installs the build and test dependencies on Debian or Ubuntu (apt), as root
# or through sudo. The CUDA toolkit (NVRTC, cuda.h) is not an apt package of
# these distributions: it must already be there (/usr/local/cuda).
set -euo pipefail
need=()
command -v cmake > /dev/null || need+=(cmake)
command -v gcc > /dev/null || need+=(gcc)
command -v make > /dev/null || need+=(make)
[ -f /usr/include/cmocka.h ] || need+=(libcmocka-dev)
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
command -v sqlite3 > /dev/null || need+=(sqlite3)
command -v pkg-config > /dev/null || need+=(pkg-config)
# A locale with a decimal comma, for test_db_api (export/import whatever the
# host process's locale): localedef builds it from these sources.
[ -f /usr/share/i18n/locales/de_DE ] || need+=(locales)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" > /dev/null
fi
if [ ! -f /usr/local/cuda/include/nvrtc.h ] && ! command -v nvcc > /dev/null; then
  echo "error: the CUDA toolkit (12.x or 13.x, for NVRTC and cuda.h) is not installed;" >&2
  echo "       install it from NVIDIA and re-run (see README.md)" >&2
  exit 1
fi
