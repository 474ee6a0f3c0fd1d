"""The loaded library's version matches what the package expects."""

import re

import pytest

from conftest import header_path

import kda
from kda import _capi as C


def test_library_version_number(lib):
    n = int(lib.kda_version_number())
    assert n // 100 == C.EXPECTED_VERSION_NUMBER // 100, (
        "libkda %d, package expects %d.%d.x" % (n, C.EXPECTED_VERSION_MAJOR,
                                                C.EXPECTED_VERSION_MINOR))
    s, n2 = kda.library_version()
    assert n2 == n and s == "%d.%d.%d" % (n // 10000, n // 100 % 100, n % 100)


def test_header_version_matches_package():
    text = open(header_path()).read()
    v = {k: int(x) for k, x in re.findall(r"#define KDA_VERSION_(MAJOR|MINOR|PATCH) (\d+)", text)}
    assert (v["MAJOR"], v["MINOR"]) == (C.EXPECTED_VERSION_MAJOR, C.EXPECTED_VERSION_MINOR)
    assert v["MAJOR"] * 10000 + v["MINOR"] * 100 + v["PATCH"] >= C.EXPECTED_VERSION_NUMBER - 99


def test_version_mismatch_is_clear():
    with pytest.raises(kda.KdaVersionError, match=r"is version 1\.0\.0.*expects 0\.1\.x"):
        C.check_version(10000, "/x/libkda.so")
    with pytest.raises(kda.KdaVersionError):
        C.check_version(200)
    C.check_version(C.EXPECTED_VERSION_NUMBER + 7)  # patch releases are fine
