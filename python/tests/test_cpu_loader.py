"""Library discovery: KDA_LIBRARY wins, then the package folder, then the
loader path; failures list every place tried."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import PKG_ROOT

import kda
from kda import _capi as C


def test_kda_library_wins(tmp_path, lib):
    real = os.path.realpath(kda.library_path())
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy(real, pkg / "libkda.so.0")
    order = kda.library_search_order({"KDA_LIBRARY": real}, str(pkg))
    assert order == [("KDA_LIBRARY", real)]
    assert C.load_library({"KDA_LIBRARY": real}, str(pkg), force=True) is not None


def test_package_folder_before_loader_path(tmp_path, lib):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy(os.path.realpath(kda.library_path()), pkg / "libkda.so.0.1.0")
    (pkg / "libkda.so").symlink_to("libkda.so.0.1.0")
    order = kda.library_search_order({}, str(pkg))
    origins = [o for o, _ in order]
    assert origins[:2] == ["package folder", "package folder"]
    assert order[0][1] == str(pkg / "libkda.so")  # unversioned name first
    assert all(o.startswith("loader path") for o in origins[2:])
    assert origins[2:], "the loader path comes after the package folder"
    loaded = C.load_library({}, str(pkg), force=True)
    assert loaded._name == str(pkg / "libkda.so")


def test_bogus_kda_library_names_it(tmp_path):
    bogus = str(tmp_path / "no" / "libkda.so")
    with pytest.raises(kda.KdaLibraryNotFoundError) as ei:
        C.load_library({"KDA_LIBRARY": bogus}, str(tmp_path), force=True)
    msg = str(ei.value)
    assert bogus in msg and "KDA_LIBRARY" in msg
    assert "no other place was tried" in msg
    assert isinstance(ei.value, OSError)


def test_not_libkda_is_rejected(tmp_path):
    import ctypes.util
    libc = ctypes.util.find_library("c") or "libc.so.6"
    with pytest.raises(kda.KdaLibraryNotFoundError, match="not libkda"):
        C.load_library({"KDA_LIBRARY": libc}, str(tmp_path), force=True)


def test_nothing_found_lists_every_place(tmp_path):
    # In a fresh process: this one already holds libkda, and the dynamic
    # loader would match "libkda.so.0" to it by SONAME.
    empty = tmp_path / "empty"
    empty.mkdir()
    code = (
        "import kda, kda._capi as C\n"
        "print('ORDER', repr(kda.library_search_order({}, %r)))\n"
        "try:\n"
        "    C.load_library({}, %r)\n"
        "    print('LOADED')\n"
        "except kda.KdaLibraryNotFoundError as e:\n"
        "    print('ERROR', e)\n" % (str(empty), str(empty)))
    env = {k: v for k, v in os.environ.items() if k not in ("KDA_LIBRARY", "LD_LIBRARY_PATH")}
    env["PYTHONPATH"] = PKG_ROOT
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    if "LOADED" in r.stdout:
        pytest.skip("libkda is installed on the loader path of this machine")
    order = eval(r.stdout.split("ORDER ", 1)[1].split("\n", 1)[0])
    msg = r.stdout.split("ERROR ", 1)[1]
    for origin, path in order:
        assert path in msg, (path, msg)
    assert "package folder" in msg and "loader path" in msg
    assert "KDA_LIBRARY" in msg  # the hint says how to point at a build


def test_loader_path_is_used(lib, tmp_path):
    """With nothing in KDA_LIBRARY or the package folder, LD_LIBRARY_PATH finds it."""
    real = os.path.realpath(kda.library_path())
    d = tmp_path / "ld"
    d.mkdir()
    shutil.copy(real, d / "libkda.so.0")
    empty = tmp_path / "empty"
    empty.mkdir()
    code = ("import kda._capi as C; lib = C.load_library({}, %r); print('LOADED', C.library_path())"
            % str(empty))
    env = {k: v for k, v in os.environ.items() if k != "KDA_LIBRARY"}
    env["LD_LIBRARY_PATH"] = str(d)
    env["PYTHONPATH"] = PKG_ROOT
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LOADED libkda.so.0" in r.stdout or "LOADED " in r.stdout and "kda" in r.stdout
