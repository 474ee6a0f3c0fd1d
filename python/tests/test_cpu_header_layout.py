"""The ctypes structures in kda/_capi.py mirror include/kda/kda.h exactly:
field names, order and types from parsing the header, and (where a C
compiler is available) sizes and offsets from compiling against it."""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

from conftest import header_path

from kda import _capi as C

MIRRORED = {
    "kda_gate_args": C.KdaGateArgs,
    "kda_options": C.KdaOptions,
    "kda_stats": C.KdaStats,
    "kda_device_info": C.KdaDeviceInfo,
    "kda_prewarm_result": C.KdaPrewarmResult,
}

SCALARS = {
    "uint32_t": ctypes.c_uint32, "int32_t": ctypes.c_int32, "uint64_t": ctypes.c_uint64,
    "int64_t": ctypes.c_int64, "float": ctypes.c_float, "double": ctypes.c_double,
    "size_t": ctypes.c_size_t, "int": ctypes.c_int,
}


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parse_header(path):
    """{struct name: [(field, kind, detail)]}; kind in scalar/enum/ptr/array."""
    text = _strip_comments(open(path).read())
    enums = set(re.findall(r"typedef\s+enum\s+\w*\s*\{[^}]*\}\s*(\w+)\s*;", text))
    fnptrs = set(re.findall(r"typedef\s+[\w\s\*]+\(\s*\*\s*(\w+)\s*\)\s*\(", text))
    structs = {}
    for name, body, alias in re.findall(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;",
                                        text, flags=re.S):
        assert name == alias
        fields = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            m = re.match(r"^((?:const\s+)?(?:struct\s+)?\w+)\s*(.*)$", decl)
            assert m, decl
            base = m.group(1).replace("const ", "").replace("struct ", "")
            for d in m.group(2).split(","):
                dm = re.match(r"^\s*(\**)\s*(\w+)\s*(?:\[(\d+)\])?\s*$", d)
                assert dm, (decl, d)
                stars, fname, arr = dm.groups()
                if stars:
                    fields.append((fname, "ptr", base))
                elif arr:
                    fields.append((fname, "array", (base, int(arr))))
                elif base in enums:
                    fields.append((fname, "enum", base))
                elif base in fnptrs:
                    fields.append((fname, "ptr", base))
                else:
                    assert base in SCALARS, "unknown C type %r in %s" % (base, name)
                    fields.append((fname, "scalar", base))
        structs[name] = fields
    return structs


@pytest.fixture(scope="module")
def header():
    path = header_path()
    if not os.path.exists(path):
        pytest.skip("header not found at %s (set KDA_HEADER)" % path)
    return parse_header(path)


@pytest.mark.parametrize("struct", sorted(MIRRORED))
def test_fields_match_header(header, struct):
    assert struct in header, "struct %s is not in the header" % struct
    c_fields = header[struct]
    py_fields = MIRRORED[struct]._fields_
    assert [f for f, _, _ in c_fields] == [f for f, _ in py_fields], (
        "%s: field names/order differ from kda.h" % struct)
    for (fname, kind, detail), (_, ptype) in zip(c_fields, py_fields):
        if kind == "scalar":
            assert ptype is SCALARS[detail], (struct, fname, detail, ptype)
        elif kind == "enum":
            assert ptype is ctypes.c_int, (struct, fname, "enum must be c_int", ptype)
        elif kind == "ptr":
            want = (ctypes.c_char_p,) if detail == "char" else (ctypes.c_void_p,)
            assert ptype in want, (struct, fname, detail, ptype)
        else:
            base, n = detail
            assert base == "char" and issubclass(ptype, ctypes.Array), (struct, fname)
            assert ptype._type_ is ctypes.c_char and ptype._length_ == n, (struct, fname)


def test_every_mirrored_struct_parsed(header):
    # The parser sees the structs it should (guards against a silent no-op).
    for s in MIRRORED:
        assert len(header[s]) >= 3


def test_offsets_match_compiler(tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler to compute offsetof()")
    inc = os.path.dirname(os.path.dirname(header_path()))
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <kda/kda.h>",
             "int main(void) {"]
    for s, cls in MIRRORED.items():
        lines.append('printf("%s sizeof %%zu\\n", sizeof(%s));' % (s, s))
        for f, _ in cls._fields_:
            lines.append('printf("%s %s %%zu\\n", offsetof(%s, %s));' % (s, f, s, f))
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    r = subprocess.run([cc, "-I", inc, str(src), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    got = {}
    for line in out.splitlines():
        s, f, v = line.split()
        got[(s, f)] = int(v)
    for s, cls in MIRRORED.items():
        assert got[(s, "sizeof")] == ctypes.sizeof(cls), s
        for f, _ in cls._fields_:
            assert got[(s, f)] == getattr(cls, f).offset, (s, f)


def test_library_defaults_match(lib):
    a = C.gate_args()
    assert a.struct_size == ctypes.sizeof(C.KdaGateArgs)
    assert (a.g_dtype, a.out_dtype, a.chunk_size, a.gate) == (C.KDA_DTYPE_F32, C.KDA_DTYPE_F32,
                                                               64, C.KDA_GATE_NONE)
    assert a.scale == 1.0 and a.has_scale == 0 and a.reverse == 0
    assert a.cu_seqlens_dtype == C.KDA_DTYPE_I32 and not a.g and not a.chunk_indices


def test_status_table_matches_header():
    text = open(header_path()).read()
    pairs = re.findall(r"X\((KDA_\w+), (\d+),", text)
    assert pairs, "KDA_STATUS_MAP not found"
    for name, value in pairs:
        assert getattr(C, name) == int(value), name
        assert C.STATUS_NAMES[int(value)] == name
    for name in ("KDA_DTYPE_F32", "KDA_DTYPE_F16", "KDA_DTYPE_BF16", "KDA_DTYPE_I32",
                 "KDA_DTYPE_I64", "KDA_GATE_NONE", "KDA_GATE_SOFTPLUS", "KDA_GATE_LOWER_BOUND",
                 "KDA_MAX_HEAD_DIM", "KDA_MAX_HEADS", "KDA_MIN_CHUNK", "KDA_MAX_CHUNK",
                 "KDA_MAX_HOST_ROWS"):
        m = re.search(r"\b%s\s*=?\s*(\d+)" % name, text)
        assert m and getattr(C, name) == int(m.group(1)), name


def test_capi_names_the_test_that_checks_it():
    m = re.search(r"tests/(test_\w+\.py)", C.__doc__)
    assert m and os.path.basename(__file__) == m.group(1), C.__doc__


def test_status_names_from_library(lib):
    for code, name in C.STATUS_NAMES.items():
        assert lib.kda_status_name(code).decode() == name


def test_packed_args_match_ctypes_layout():
    """_ops packs kda_gate_args with struct.pack; it must equal the ctypes
    struct (and so the header) byte for byte."""
    from kda import _ops
    assert _ops._ARGS.size == ctypes.sizeof(C.KdaGateArgs)
    names = [f for f, _ in C.KdaGateArgs._fields_]
    values = []
    for i, (f, t) in enumerate(C.KdaGateArgs._fields_):
        values.append(float(i) + 0.5 if t is ctypes.c_float else 1000 + i)
    packed = _ops._ARGS.pack(*values)
    a = C.KdaGateArgs.from_buffer_copy(packed)
    for f, v in zip(names, values):
        assert getattr(a, f) == v, f
