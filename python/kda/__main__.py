"""python -m kda prewarm ...: kda.prewarm from the command line (a
deployment step for an environment with this package and no kda-tune).
Exit status 0 when every shape was tuned or already stored, 1 when any
failed, 2 for a usage error (kda.prewarm checks every argument against
kda.h's limits before it touches a device) or a device that cannot be
used."""

import argparse
import json
import sys

from . import _capi as C
from ._prewarm import prewarm


def _int_list(text):
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a comma-separated list of integers" % text)
    if not vals:
        raise argparse.ArgumentTypeError("an empty list")
    return vals


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m kda",
        description="Tune and store the KDA gate kernels a server will meet (kda.prewarm).")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("prewarm", help="tune and store specializations in the tuning database")
    w.add_argument("--heads", type=_int_list, required=True, help="heads per GPU, e.g. 32,16")
    w.add_argument("--tokens", type=_int_list, default=[512, 2048, 8192, 32768, 65536],
                   help="token counts, one per bucket (default 512,2048,8192,32768,65536)")
    w.add_argument("--head-dim", type=int, default=128)
    w.add_argument("--chunk", type=int, default=64)
    w.add_argument("--dtype", default="bf16", help="bf16, f16 or f32 (default bf16)")
    w.add_argument("--out-dtype", default="f32", help="f32 or bf16 (default f32)")
    w.add_argument("--gate", default="softplus", help="softplus, lower_bound or none")
    w.add_argument("--no-bias", action="store_true", help="calls without dt_bias")
    w.add_argument("--kernel", default=None,
                   help="gate_chunk_cumsum (default), chunk_local_cumsum or gate")
    w.add_argument("--varlen", action="store_true", help="packed batches (cu_seqlens)")
    w.add_argument("--seqs", type=int, default=8, help="sequences of a varlen batch (default 8)")
    w.add_argument("--host-rows", action="store_true", help="varlen calls with cu_seqlens_cpu")
    w.add_argument("--chunk-plan", action="store_true",
                   help="varlen calls with a kda.ChunkPlan (not with --host-rows)")
    w.add_argument("--seqlens-dtype", default=None, metavar="int32|int64|both",
                   help="cu_seqlens' dtype of varlen calls (default int32)")
    w.add_argument("--scale", default=None, metavar="yes|no|both",
                   help="calls passing a scale (default yes for the cumsum kernels: upstream's "
                        "chunk_kda_fwd passes scale=RCP_LN2; no for --kernel gate)")
    w.add_argument("--reverse", default="no", metavar="yes|no|both",
                   help="reverse cumsum, chunk_local_cumsum only (default no)")
    w.add_argument("--a-log", default=None, metavar="yes|no|both",
                   help="calls passing A_log (default yes; no/both for lower_bound calls "
                        "with A_log=None)")
    w.add_argument("--g-align", type=int, default=256, metavar="BYTES",
                   help="alignment of the calls' g (default 256; a view at an offset has less, "
                        "and specializations of its own)")
    w.add_argument("--out-align", type=int, default=256, metavar="BYTES",
                   help="alignment of the calls' out (default 256)")
    w.add_argument("--force", action="store_true", help="tune again what is already stored")
    w.add_argument("--device", type=int, default=0)
    w.add_argument("--budget-ms", type=float, default=15000.0)
    w.add_argument("--db", default=None, help="tuning database (default: the library's)")
    w.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


# A pip install has no kda-tune: the way without a GPU here is a GPU
# elsewhere (the database is keyed by the GPU model, not the machine).
_NO_GPU_HINT = (
    "python -m kda prewarm: hint: tuning times the kernels on the GPU model the server will "
    "run on: run `python -m kda prewarm ... --db FILE` on a machine with that GPU, in the "
    "server's environment, and ship FILE as tune.db in the server's $KDA_CACHE_DIR. With no "
    "GPU at all, a source build of libkda (pip installs no kda-tune) has `kda-tune prewarm "
    "--compile-only --arch sm_90 ...`, which stores untuned heuristic cubins.")


def _words(r):
    """One shape in a table row, named as kda-tune names it."""
    w = ["%s H=%d K=%d chunk=%d" % (r["kernel"], r["heads"], r["head_dim"], r["chunk_size"])]
    if r["a_log"] is False:
        w.append("no A_log")
    w += [f for f in ("scale", "reverse") if r[f]]
    w.append("%s %s" % (r["path"], r["seqlens_dtype"]) if r["varlen"] else "dense")
    if r["g_align"] < 256 or r["out_align"] < 256:
        w.append("g-align=%d out-align=%d" % (r["g_align"], r["out_align"]))
    w.append("tokens=%d (bucket %d)" % (r["tokens"], r["bucket"]))
    return " ".join(w)


def main(argv=None):
    a = _parser().parse_args(argv)
    try:
        rows = prewarm(a.heads, a.tokens, head_dim=a.head_dim, chunk_size=a.chunk, dtype=a.dtype,
                       output_dtype=a.out_dtype, gate=a.gate, bias=not a.no_bias, kernel=a.kernel,
                       varlen=a.varlen, num_seqs=a.seqs, host_rows=a.host_rows,
                       chunk_plan=a.chunk_plan, scale=a.scale, reverse=a.reverse,
                       a_log=a.a_log, seqlens_dtype=a.seqlens_dtype, g_align=a.g_align,
                       out_align=a.out_align, force=a.force,
                       device=a.device, budget_ms=a.budget_ms, db_path=a.db)
    except C.KdaError as e:
        print("python -m kda prewarm: %s" % e, file=sys.stderr)
        if isinstance(e, C.KdaDeviceError):
            print(_NO_GPU_HINT, file=sys.stderr)
        return 2
    failed = sum(r["outcome"] == "failed" for r in rows)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            what = _words(r)
            if r["outcome"] == "failed":
                print("failed   %s: %s" % (what, r["error"]))
            else:
                print("%-8s %s  %s  %.2f us (heuristic %.2f us)" % (
                    r["outcome"], what, r["config"], r["median_us"], r["heuristic_us"]))
        print("%d tuned, %d skipped, %d failed; database %s" % (
            sum(r["outcome"] == "tuned" for r in rows),
            sum(r["outcome"] == "skipped" for r in rows), failed,
            rows[0]["db_path"] if rows else "-"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
