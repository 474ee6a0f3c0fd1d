#!/bin/sh
# Installs the build into a temporary prefix and uses it the way a user's
# project would: find_package(kda) (examples/, shared and static), a
# pkg-config build (shared and static), the example server (which, without
# a GPU, must say "no GPU" and exit 0), and the installed kda-tune.
# Usage: run_install_test.sh <build dir> <source dir> <cmake> <cc> <libdir> [<extra flags>]
# (extra flags: the sanitizer flags the library was built with, if any).
set -eu
build=$1 src=$2 cmake=$3 cc=$4 libdir=$5 extra=${6:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kda-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
prefix=$tmp/prefix
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
flags="-Wall -Wextra -Werror $extra"

step "cmake --install $build --prefix <tmp>"
"$cmake" --install "$build" --prefix "$prefix" > "$tmp/install.log" || { cat "$tmp/install.log"; fail "install"; }
for f in include/kda/kda.h include/kda/kda_db.h "$libdir/libkda.so" "$libdir/libkda.a" \
         "$libdir/cmake/kda/kdaConfig.cmake" "$libdir/cmake/kda/kdaConfigVersion.cmake" \
         "$libdir/cmake/kda/kdaTargets.cmake" "$libdir/pkgconfig/kda.pc" \
         bin/kda-tune bin/kda-bench bin/kda-demo; do
  [ -e "$prefix/$f" ] || fail "the install lacks $f"
done
# Nothing from the source or build tree may leak into the package's files.
if grep -l -e "$src" -e "$build" "$prefix/$libdir/cmake/kda/"*.cmake "$prefix/$libdir/pkgconfig/kda.pc"; then
  fail "package files name the source or build tree"
fi

step "find_package(kda) from examples/"
"$cmake" -S "$src/examples" -B "$tmp/examples" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$flags" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  > "$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; fail "configure examples/"; }
"$cmake" --build "$tmp/examples" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "build examples/"; }

for exe in server_example server_example_static; do
  step "$exe"
  out=$("$tmp/examples/$exe" --workers 4 --requests 4 2>&1) || { echo "$out"; fail "$exe exited $?"; }
  echo "$out"
  case $out in
    *"no GPU: "*) ;;                                    # CPU machine: nothing created
    *"float64"*": OK"*) ;;                              # GPU machine: every check passed
    *) fail "$exe said neither 'no GPU' nor OK" ;;
  esac
done

step "pkg-config --cflags --libs kda"
PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
export PKG_CONFIG_PATH
command -v pkg-config > /dev/null || fail "pkg-config is not installed (tools/install_deps.sh)"
[ "$(pkg-config --modversion kda)" = "$(sed -n 's/^project(kda VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")" ] \
  || fail "pkg-config --modversion kda: $(pkg-config --modversion kda)"
pc_libdir=$(pkg-config --variable=libdir kda)
# shellcheck disable=SC2046  # word splitting of pkg-config's flags is intended
"$cc" $flags -o "$tmp/tiny" "$src/tests/install/tiny.c" $(pkg-config --cflags --libs kda) \
  -Wl,-rpath,"$pc_libdir" || fail "build with pkg-config"
"$tmp/tiny" || fail "tiny (shared)"
# The static library with Libs.private: -lkda taken as libkda.a.
static_libs=$(pkg-config --static --libs kda | sed 's/\(^\| \)-lkda\( \|$\)/\1-l:libkda.a\2/')
rpaths=""
for d in $(pkg-config --static --libs-only-L kda); do rpaths="$rpaths -Wl,-rpath,${d#-L}"; done
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/tiny_static" "$src/tests/install/tiny.c" $(pkg-config --cflags kda) \
  $static_libs $rpaths || fail "static build with pkg-config --static"
"$tmp/tiny_static" || fail "tiny (static)"
if command -v readelf > /dev/null && readelf -d "$tmp/tiny_static" | grep -q 'NEEDED.*libkda'; then
  fail "tiny_static needs libkda.so"
fi

step "installed kda-tune --help (RPATH, no LD_LIBRARY_PATH)"
out=$(env -u LD_LIBRARY_PATH "$prefix/bin/kda-tune" --help 2>&1) || { echo "$out"; fail "kda-tune --help exited $?"; }
echo "$out" | head -3
if command -v ldd > /dev/null; then
  lib=$(env -u LD_LIBRARY_PATH ldd "$prefix/bin/kda-tune" | sed -n 's/.*libkda\.so[.0-9]* => \([^ ]*\).*/\1/p')
  case $lib in
    "$prefix/"*) ;;
    *) fail "installed kda-tune loads libkda from '$lib', not from the prefix" ;;
  esac
fi
echo "install test: OK"
