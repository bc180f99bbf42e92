#!/usr/bin/env python3
"""Joins `metallic bench --json` lines with `pytorch_bench.py` lines into a Markdown table.

    python3 bench/compare.py metallic.jsonl pytorch.jsonl [--ceiling-gbs X] > table.md

One row per metallic record and PyTorch record of the same case, shape and dtype (a metallic
record without a peer gets a row of its own). Columns: the case, the shape, the dtype, which
metallic implementation and which PyTorch variant, both times per iteration, the ratio
metallic / PyTorch (below 1: metallic is faster), metallic's throughput, its % of the memory
ceiling (memory-bound rows; the ceiling is --ceiling-gbs, else the fastest copy in either file)
and its % of PyTorch's throughput. Standard library only.
"""

import argparse
import json
import sys


def load(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                print("compare: %s:%d: %s" % (path, n, err), file=sys.stderr)
    return rows


def key(r):
    return (r.get("case"), r.get("shape"), r.get("dtype"))


def fmt_ms(ms):
    if ms is None:
        return "—"
    return "%.4f" % ms if ms < 1 else "%.3f" % ms


def fmt_thr(value, unit):
    if value is None:
        return "—"
    return ("%.0f %s" if value >= 100 else "%.2f %s") % (value, unit)


def pct(x):
    return "—" if x is None else "%.1f%%" % x


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("metallic")
    p.add_argument("pytorch")
    p.add_argument("--ceiling-gbs", type=float, default=None, help="memory ceiling (default: fastest copy seen)")
    a = p.parse_args(argv)
    mine, peers = load(a.metallic), load(a.pytorch)
    if not mine:
        print("compare: no metallic records in %s" % a.metallic, file=sys.stderr)
        return 1

    ceiling, source = a.ceiling_gbs, "value given with --ceiling-gbs"
    if ceiling is None:
        copies = [r for r in mine + peers if r.get("case") == "copy" and r.get("gbs")]
        if copies:
            best = max(copies, key=lambda r: r["gbs"])
            ceiling = best["gbs"]
            source = "fastest copy measured (%s %s, %s)" % (best.get("tool"), best.get("impl"), best.get("shape"))

    by_key = {}
    for r in peers:
        by_key.setdefault(key(r), []).append(r)

    devices = sorted({r.get("device", "?") for r in mine}) + sorted({r.get("device", "?") for r in peers})
    print("Devices: " + "; ".join(devices))
    if ceiling:
        print("Memory ceiling: %.0f GB/s (%s), read + write bytes." % (ceiling, source))
    print()
    print(
        "| case | shape | dtype | metallic | PyTorch | metallic ms | PyTorch ms | ratio | "
        "metallic throughput | % of copy BW | % of PyTorch |"
    )
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for m in mine:
        unit = m.get("unit")
        thr = m.get("throughput")
        of_ceiling = None
        if unit == "GB/s" and ceiling and m.get("gbs") is not None:
            of_ceiling = 100.0 * m["gbs"] / ceiling
        impl = "%s (%s)" % (m.get("impl"), m.get("timer"))
        matches = by_key.get(key(m)) or [None]
        for t in matches:
            t_ms = t.get("ms") if t else None
            ratio = "%.2f" % (m["ms"] / t_ms) if t_ms else "—"
            of_peer = None
            if t:
                t_thr = t.get("tflops") if unit == "TFLOP/s" else t.get("gbs")
                if t_thr and thr is not None:
                    of_peer = 100.0 * thr / t_thr
            peer = "%s (%s)" % (t.get("impl"), t.get("timer")) if t else "—"
            print(
                "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
                % (
                    m.get("case"),
                    m.get("shape"),
                    m.get("dtype"),
                    impl,
                    peer,
                    fmt_ms(m.get("ms")),
                    fmt_ms(t_ms),
                    ratio,
                    fmt_thr(thr, unit),
                    pct(of_ceiling),
                    pct(of_peer),
                )
            )
    unmatched = [r for r in peers if key(r) not in {key(m) for m in mine}]
    if unmatched:
        print()
        print("PyTorch records with no metallic counterpart: %d (%s)" % (
            len(unmatched), ", ".join(sorted({"%s %s %s" % key(r) for r in unmatched}))))
    notes = sorted({r["note"] for r in mine + peers if r.get("note")})
    if notes:
        print()
        print("Notes: " + " | ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
