"""Shared fixtures. CPU tests need only the built library (KDA_LIBRARY or
any other place kda.load_library() looks); torch-dependent tests skip
cleanly without torch; GPU tests skip cleanly without CUDA."""

import os
import subprocess
import sys
import textwrap

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


def stand_in_driver_path():
    """The tests' stand-in CUDA driver, built with the C tests next to
    KDA_LIBRARY (build/tests/libkda_fake_cuda.so); skips when it is absent."""
    lib = os.environ.get("KDA_LIBRARY")
    path = os.path.join(os.path.dirname(lib), "tests", "libkda_fake_cuda.so") if lib else ""
    if not os.path.exists(path):
        pytest.skip("the stand-in driver is built with the tests (build/tests/"
                    "libkda_fake_cuda.so next to KDA_LIBRARY); not found: %r" % path)
    return path


@pytest.fixture
def run_fake_torch(tmp_path):
    """Runs a script in a fresh interpreter on tests/fake_torch (CUDA tensors
    are host buffers) and the stand-in driver (it takes them as device
    memory and runs no kernel), so the tensor functions run end to end with
    neither torch nor a GPU; a fresh process because kda binds torch at
    import. The script starts with torch, kda, _ops and C (kda._capi)
    imported; an AssertionError in it fails the test with its output. The
    script may come in parts, each indented its own way."""
    driver = stand_in_driver_path()

    def run(*parts):
        env = dict(os.environ, KDA_LIBCUDA=driver, KDA_TUNE="off",
                   KDA_CACHE_DIR=str(tmp_path),
                   PYTHONPATH=os.pathsep.join([os.path.join(HERE, "fake_torch"), PKG_ROOT]))
        code = "import torch, kda\nfrom kda import _ops, _capi as C\n" + "".join(
            textwrap.dedent(p) for p in parts)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, "script failed:\n%s%s" % (r.stdout, r.stderr)
        return r.stdout
    return run
