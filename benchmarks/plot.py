"""Bar charts of a benchmarks/run.py JSON-lines file: each step's seconds, and its ratio to the reference.

    python benchmarks/plot.py benchmarks/results/cpu-100k.jsonl -o benchmarks/results/cpu-100k.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("jsonl", type=Path)
    p.add_argument("-o", "--out", type=Path)
    args = p.parse_args(argv)
    rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
    # gpu_sc's time where it ran (a step without the reference, e.g. left out of a long Dask run,
    # keeps its bar above and gets "no ratio" below); not the wall time of a whole run
    rows = [r for r in rows if r.get("seconds") is not None and r.get("step") != "total"]
    labels = [f"{r['step']}\n{r['backend']} vs\n{r.get('reference') or '-'}\n{r['n_cells']:,} cells" for r in rows]
    ratios = [r.get("ratio") for r in rows]
    known = [x for x in ratios if x is not None]
    # above: the seconds themselves (what a user waits); below: the ratio to the reference
    fig, (top, ax) = plt.subplots(2, 1, figsize=(max(6, 1.2 * len(rows)), 7), sharex=True, layout="constrained")
    bars = top.bar(range(len(rows)), [r["seconds"] for r in rows], color="tab:blue")
    top.bar_label(bars, [f"{r['seconds']:.2g} s" for r in rows], fontsize=7)
    for i, r in enumerate(rows):  # the spread of the repeats, where the file keeps them
        for key, colour in (("seconds_runs", "black"), ("reference_seconds_runs", "tab:orange")):
            if r.get(key):
                top.plot([i, i], [min(r[key]), max(r[key])], color=colour, lw=1.5, marker="_")
    if any(r.get("reference_seconds_runs") for r in rows):
        top.plot([], [], color="black", marker="_", label="gpu_sc repeats (min-max)")
        top.plot([], [], color="tab:orange", marker="_", label="reference repeats (min-max)")
        top.legend(fontsize=7, loc="upper left")
    top.set_yscale("log")
    top.set_ylabel("gpu_sc seconds")
    at = [i for i, x in enumerate(ratios) if x is not None]
    bars = ax.bar(at, known, color=["tab:green" if x >= 1 else "tab:red" for x in known])
    ax.bar_label(bars, [f"{x:.2g}" for x in known], fontsize=7)
    for i in set(range(len(rows))) - set(at):  # placed on the axes, so a log scale keeps it
        ax.annotate("no ratio", (i, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=7)
    if known and max(known) / min(known) > 30:  # speed-ups and bandwidth fractions together
        ax.set_yscale("log")
    ax.axhline(1, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("reference time / gpu_sc time")
    devices = ", ".join(dict.fromkeys(r["device"] for r in rows))
    chunks = sorted({r["dask_chunk_rows"] for r in rows if r.get("dask_chunk_rows")})
    dask = f", X as Dask blocks of {', '.join(f'{c:,}' for c in chunks)} cells" if chunks else ""
    top.set_title(f"gpu_sc on {devices}{dask}" if rows else "no rows", fontsize=9)
    fig.savefig(args.out or args.jsonl.with_suffix(".png"), dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
