"""Shared fixtures. CPU tests need only the built library (KDA_LIBRARY or
any other place kda.load_library() looks); torch-dependent tests skip
cleanly without torch; GPU tests skip cleanly without CUDA."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)
REPO_ROOT = os.path.dirname(PKG_ROOT)
if PKG_ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, PKG_ROOT)

# The GPU tests compile many specializations; benchmarking each one (the
# library's default tuning mode) would only make them slow. KDA_TUNE=on in
# the environment still wins.
os.environ.setdefault("KDA_TUNE", "off")

import kda  # noqa: E402


def header_path():
    return os.environ.get("KDA_HEADER", os.path.join(REPO_ROOT, "include", "kda", "kda.h"))


@pytest.fixture(scope="session")
def lib():
    try:
        return kda.load_library()
    except kda.KdaLibraryNotFoundError as e:
        if os.environ.get("KDA_LIBRARY"):
            raise
        pytest.skip("libkda not found (set KDA_LIBRARY=/path/to/libkda.so): %s" % e)


@pytest.fixture(scope="session")
def torch_mod():
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def cuda(torch_mod, lib):
    if not torch_mod.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    return torch_mod.device("cuda", torch_mod.cuda.current_device())
