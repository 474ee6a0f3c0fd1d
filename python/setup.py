"""Build hook: with KDA_BUILD_DIR set, copy the built libkda.so* into
kda/_lib/ so the installed package finds it next to itself.

    KDA_BUILD_DIR=build/release pip install ./python
    KDA_BUILD_DIR=$PWD/build/release pip install -e ./python

Without KDA_BUILD_DIR nothing is copied: the package then finds the library
through KDA_LIBRARY or the loader path (see README.md). The package has no
compiled extension either way.
"""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _built_libraries():
    d = os.environ.get("KDA_BUILD_DIR")
    if not d:
        return []
    if not os.path.isabs(d):
        # Relative to where pip was run, else to the repository root.
        cands = [os.path.abspath(d), os.path.join(HERE, "..", d)]
        d = next((c for c in cands if os.path.isdir(c)), cands[0])
    libs = sorted(glob.glob(os.path.join(d, "libkda.so*")))
    if not libs:
        raise SystemExit("KDA_BUILD_DIR=%s holds no libkda.so*; build the library first "
                         "(cmake -B build -S . && cmake --build build)" % d)
    return libs


def _copy_into(dest_dir):
    """Copies the real file behind libkda.so (one file: wheels cannot carry
    symlinks), replacing any libkda.so* already there."""
    libs = _built_libraries()
    os.makedirs(dest_dir, exist_ok=True)
    for old in glob.glob(os.path.join(dest_dir, "libkda.so*")):
        os.remove(old)
    real = sorted({os.path.realpath(p) for p in libs})[-1]
    shutil.copyfile(real, os.path.join(dest_dir, os.path.basename(real)))


class BuildPy(build_py):
    def run(self):
        editable = getattr(self, "editable_mode", False)
        if os.environ.get("KDA_BUILD_DIR") and editable:
            # An editable install imports kda/ from the source tree.
            _copy_into(os.path.join(HERE, "kda", "_lib"))
        super().run()
        if os.environ.get("KDA_BUILD_DIR") and not editable:
            _copy_into(os.path.join(self.build_lib, "kda", "_lib"))


setup(cmdclass={"build_py": BuildPy})
