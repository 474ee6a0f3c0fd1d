#!/usr/bin/env python3
"""Prints the rows of kda-bench JSON files as one Markdown table.

The tables in docs/PERFORMANCE.md are this script's output over the
committed results they name, so each figure there can be traced to a file:

  python3 bench/to_markdown.py bench/results/NVIDIA-H200-2026-11-29-s26.json
  python3 bench/to_markdown.py A.json B.json --groups matrix,varlen

Rows keep their order; with several files, a later file's row of the same
shape (group, T, H, K, chunk, sequences, bias) replaces an earlier one's in
place, so a file of a few re-measured rows can follow a whole table. A
`source` column names each row's file when there is more than one.
"""
import argparse
import json
import os
import sys

COLUMNS = [
    ("group", "group"), ("T", "T"), ("H", "H"), ("K", "K"), ("chunk", "chunk"), ("seqs", "seqs"),
    ("elements", "elements"), ("fused us", "us_median"), ("single us", "us_single"), ("GB/s", "gbps"),
    ("% copy", "pct_of_copy_bw"), ("% convert", "pct_of_convert"), ("unfused us", "unfused_us_median"),
    ("speedup", "speedup_vs_unfused"), ("heuristic us", "heuristic_us_median"), ("config", "config"),
]


def shape_key(r):
    return (r.get("group"), r.get("T"), r.get("H"), r.get("K"), r.get("chunk"), r.get("num_seqs"),
            r.get("dt_bias"))


def cell(r, field):
    v = r.get(field if field != "seqs" else "num_seqs")
    if v is None:
        return "-"
    if field in ("pct_of_copy_bw", "pct_of_convert"):
        return "%.1f%%" % v
    if field == "speedup_vs_unfused":
        return "%.2fx" % v
    if field == "gbps":
        return "%.0f" % v
    if isinstance(v, float):
        return "%.2f" % v
    if field == "group" and not r.get("dt_bias", True) and v != "no-bias":
        return v + " (no dt_bias)"
    return str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--groups", default="", help="comma-separated groups to keep (default: all)")
    args = ap.parse_args()
    keep = set(filter(None, args.groups.split(",")))
    rows, where, heads = [], {}, []
    for path in args.files:
        with open(path) as fh:
            d = json.load(fh)
        heads.append("%s: %s, driver %s, NVRTC %s, copy %.0f GB/s" %
                     (os.path.basename(path), d.get("gpu"), d.get("driver"), d.get("nvrtc"),
                      d.get("copy_bw_gbps", 0)))
        for r in d.get("rows", []):
            if keep and r.get("group") not in keep:
                continue
            # The file's name without the card's prefix and ".json".
            label = os.path.basename(path)[:-5] if path.endswith(".json") else os.path.basename(path)
            prefix = str(d.get("gpu", "")).replace(" ", "-") + "-"
            r = dict(r, source=label[len(prefix):] if label.startswith(prefix) else label)
            k = shape_key(r)
            if k in where:
                rows[where[k]] = r
            else:
                where[k] = len(rows)
                rows.append(r)
    if not rows:
        print("no rows", file=sys.stderr)
        return 1
    cols = COLUMNS + ([("source", "source")] if len(args.files) > 1 else [])
    for h in heads:
        print("<!-- %s -->" % h)
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "|".join("---" if f in ("group", "config", "source") else "---:" for _, f in cols) + "|")
    for r in rows:
        print("| " + " | ".join(cell(r, f) for _, f in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
