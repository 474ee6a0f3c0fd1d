"""kda: flash-linear-attention's KDA gate functions on libkda.

Drop-in replacements (same argument names, defaults, shapes and dtypes)::

    from kda import gate_chunk_cumsum as kda_gate_chunk_cumsum   # fla.ops.kda.gate
    from kda import chunk_local_cumsum                           # fla.ops.utils.cumsum
    from kda import gate as fused_kda_gate                       # fla.ops.kda.gate
    from kda import prepare_chunk_indices                        # fla.ops.utils.index

The package imports without torch, without a GPU and without the shared
library; the library is loaded (and checked) on first use. See README.md.
"""

from ._capi import (
    EXPECTED_VERSION_NUMBER,
    KdaCaptureColdError,
    KdaContextLostError,
    KdaDeviceError,
    KdaError,
    KdaLibraryNotFoundError,
    KdaOutOfMemoryError,
    KdaTypeError,
    KdaValueError,
    KdaVersionError,
    library_path,
    library_search_order,
    load_library,
)
from ._ops import (
    ChunkPlan,
    chunk_local_cumsum,
    context,
    device_info,
    fused_kda_gate,
    gate,
    gate_chunk_cumsum,
    kda_gate_chunk_cumsum,
    kda_gate_fwd,
    num_chunks_of,
    prepare_chunk_indices,
    stats,
)
from ._prewarm import prewarm

__version__ = "0.1.0"

__all__ = [
    "gate_chunk_cumsum", "kda_gate_chunk_cumsum", "chunk_local_cumsum", "gate", "fused_kda_gate",
    "kda_gate_fwd", "prepare_chunk_indices", "num_chunks_of", "ChunkPlan", "context", "stats",
    "device_info", "prewarm",
    "load_library", "library_path", "library_search_order", "library_version",
    "EXPECTED_VERSION_NUMBER", "KdaError", "KdaLibraryNotFoundError", "KdaVersionError",
    "KdaValueError", "KdaTypeError", "KdaDeviceError", "KdaCaptureColdError", "KdaContextLostError",
    "KdaOutOfMemoryError",
]


def library_version():
    """(version string, kda_version_number()) of the loaded library."""
    lib = load_library()
    return lib.kda_version().decode(), int(lib.kda_version_number())
