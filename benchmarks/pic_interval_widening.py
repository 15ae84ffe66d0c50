"""How much of `pair_frequencies`' interval coverage comes from widening the unmixed
composition's bootstrap interval to hold the reported (blended) fraction.

    python benchmarks/pic_interval_widening.py pbmc4k 41 100

Builds the PICs as `pic_frequencies.py` does (held-out sources, 1,500 PICs, ml), then runs
`pair_frequencies(pics, singlets)` with the module's numpy.minimum / numpy.maximum wrapped so
that the bounds before widening are recorded (the widening is the only use of the two there),
and prints one JSON line: TV distance, the coverage of the reported interval and of the
bootstrap interval alone, and how many pairs were widened.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sc as gsc
import gpu_sc.pic._frequencies as frequencies
from pic_frequencies import _aligned, _truth
from pic_validate import DEFAULT_DATA, build

_bounds = {}


class _RecordingNumpy:
    """numpy, except that minimum / maximum record their first argument (the bootstrap bound)."""

    def __getattr__(self, name):
        return getattr(numpy, name)

    def minimum(self, a, b):
        _bounds["lo"], _bounds["fit"] = numpy.array(a), numpy.array(b)
        return numpy.minimum(a, b)

    def maximum(self, a, b):
        _bounds["hi"] = numpy.array(a)
        return numpy.maximum(a, b)


def main(name: str, seed: int, group_size: int) -> dict:
    built, _ = build(name, Path(DEFAULT_DATA), seed, 1500, group_size)
    ref, p, groups = built["ref"], built["pics"].copy(), built["groups"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pic.deconvolve(p, ref, groupby="grp", a=groups["A"], b=groups["B"], method="ml",
                           n_umis=built["info"]["n_umis"], seed=0, n_train=20000)
        truth = _truth(p, (p.obs["pic_status"] == "ok").to_numpy())
        frequencies.np = _RecordingNumpy()
        try:
            tab = gsc.pic.pair_frequencies(p, ref, n_sim=400, n_boot=500)
        finally:
            frequencies.np = numpy
    # the table is sorted by fraction (stable), the bounds are in the order before: sort them alike
    order = pd.Series(_bounds["fit"]).sort_values(ascending=False, kind="stable").index.to_numpy()
    lo, hi = _bounds["lo"][order], _bounds["hi"][order]
    true = _aligned(truth, tab["pic_a"], tab["pic_b"])
    f = tab["fraction"].to_numpy()
    assert numpy.array_equal(_bounds["fit"][order], f)  # aligned with the table's rows
    return {"dataset": name, "seed": seed, "group_size": group_size, "n_pairs": len(tab),
            "mean_weight": float(tab["mean_weight"].iloc[0]), "tv": float(0.5 * numpy.abs(f - true).sum()),
            "coverage_reported": float(((tab["ci_low"] <= true) & (true <= tab["ci_high"])).mean()),
            "coverage_bootstrap_alone": float(((lo <= true) & (true <= hi)).mean()),
            "pairs_widened": int(((lo > f) | (hi < f)).sum())}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
