"""Issue #16's done-when at a glance: one panel per criterion, one point per (data set, seed),
the criterion's bound drawn in, and in each title how many runs meet it.

    python benchmarks/pic_claims_plot.py \
        benchmarks/results/pic-claims-cpu-2026-12-06-new-populations.jsonl \
        benchmarks/results/pic-interaction-cpu-2026-12-07-true-pairs.jsonl \
        -o benchmarks/results/pic-claims-cpu-2026-12-07-new-populations.png

Reads the rows of `pic_validate.py --claims` (modes validate, compare, interaction, frequencies)
and of `pic_interaction.py` (with `--true-pairs`, its `matched_true_pairs` rows are drawn beside
the calls'). A row repeated in a later file (the same mode, data set, seed, method, scenario
and test) replaces the earlier one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: the done-when's bounds (issue #16); "a handful" of false calls read as at most 5 a run
BOUNDS = {"null_calls": 5, "recall": 0.8, "outside": 0.2, "tv": 0.1, "coverage": 0.85, "seconds": 30.0}


def read_rows(paths) -> list[dict]:
    """Rows of the JSON-lines files, a later file's row replacing an earlier one of the same key."""
    rows = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                key = tuple(r.get(k) for k in ("mode", "dataset", "seed", "method", "deconvolution", "scenario",
                                               "test", "backend"))  # fmt: skip
                rows[key] = r
    return list(rows.values())


def _run(r) -> str:
    return f"{r['dataset']} s{r['seed']}"


def series(rows, method: str = "ml") -> dict:
    """Per criterion, {label: [(run, value), ...]} for `method`'s deconvolution (picseq's where a
    criterion compares the two)."""
    def pick(mode, **want):
        return sorted((r for r in rows if r.get("mode") == mode and all(r.get(k) == v for k, v in want.items())),
                      key=_run)  # fmt: skip

    def points(found, field):
        return [(_run(r), r[field]) for r in found if r.get(field) is not None]

    inter = {"deconvolution": method}
    return {
        "null_calls": {"calls": points(pick("interaction", scenario="null", test="matched", **inter), "n_called"),
                       "true pairs": points(pick("interaction", scenario="null", test="matched_true_pairs", **inter),
                                            "n_called")},
        "recall": {"calls": points(pick("interaction", scenario="planted_3x", test="matched", **inter), "recall_up"),
                   "true pairs": points(pick("interaction", scenario="planted_3x", test="matched_true_pairs", **inter),
                                        "recall_up")},
        "outside": {"calls": points(pick("interaction", scenario="planted_3x", test="matched", **inter),
                                    "up_outside_share"),
                    "true pairs": points(pick("interaction", scenario="planted_3x", test="matched_true_pairs", **inter),
                                         "up_outside_share")},
        "tv": {method: points(pick("frequencies", method=method), "tv_corrected"),
               "picseq": points(pick("frequencies", method="picseq"), "tv_corrected") if method != "picseq" else []},
        "coverage": {method: points(pick("frequencies", method=method), "coverage_corrected")},
        "pair_diff": {"exact pair": [(_run(r), (r["pair_accuracy_diff"], r["pair_accuracy_se"]))
                                     for r in pick("compare")],
                      "subtype pair": [(_run(r), (r["subtype_pair_accuracy_diff"], r["subtype_pair_accuracy_se"]))
                                       for r in pick("compare") if r.get("subtype_pair_accuracy_diff") is not None]},
        "seconds": {method: points(pick("validate", method=method), "seconds")},
    }  # fmt: skip


def met(values, criterion: str) -> tuple[int, int]:
    """(runs meeting the criterion, runs) for one series' values."""
    if criterion == "pair_diff":
        ok = [v[0] >= 0 for v in values]
    elif criterion in ("recall", "coverage"):
        ok = [v >= BOUNDS[criterion] for v in values]
    else:
        ok = [v <= BOUNDS[criterion] for v in values]
    return sum(ok), len(ok)


_TITLES = {"null_calls": "false calls, nothing induced (FDR 0.1)", "recall": "3x programme: recall",
           "outside": "3x programme: share of up-calls outside it", "tv": "pair composition: TV distance",
           "coverage": "pair composition: 95 % interval coverage",
           "pair_diff": "ml - picseq pair accuracy (+- 2 SE)", "seconds": "ml seconds, 1,500 PICs, 2 cores"}
_BOUND_TEXT = {"null_calls": "<= 5", "recall": ">= 0.8", "outside": "<= 0.2", "tv": "<= 0.1", "coverage": ">= 0.85",
               "pair_diff": ">= 0", "seconds": "<= 30 s"}


def plot(rows, out: Path, method: str = "ml") -> dict:
    """Draw the panels into `out`; returns {criterion: {label: (met, runs)}}."""
    data = series(rows, method)
    runs = sorted({run for per in data.values() for pts in per.values() for run, _ in pts})
    at = {run: i for i, run in enumerate(runs)}
    # PICs per held-out source cell at most: where one cell stands in many PICs its own state
    # reads as induced (the nulls' false calls), which real PICs, each of two cells, never do
    reuse = {_run(r): r["source_uses_max"] for r in rows if r.get("mode") == "validate" and r.get("source_uses_max")}
    ticks = [f"{run} (<= {reuse[run]})" if run in reuse else run for run in runs]  # one line: 15 runs fit
    fig, axes = plt.subplots(2, 4, figsize=(16, 8), layout="constrained")
    counts = {}
    for ax, (criterion, per) in zip(axes.flat, data.items(), strict=False):
        counts[criterion] = {}
        parts = []
        for j, (label, pts) in enumerate((lab, p) for lab, p in per.items() if p):
            x = [at[r] + (j - 0.5) * 0.2 for r, _ in pts]
            if criterion == "pair_diff":
                y, se = [v[0] for _, v in pts], [2 * v[1] for _, v in pts]
                ax.errorbar(x, y, yerr=se, fmt="o", label=label, capsize=3)
            else:
                ax.plot(x, [v for _, v in pts], "o", label=label)
            counts[criterion][label] = met([v for _, v in pts], criterion)
            parts.append("{} {}/{}".format(label, *counts[criterion][label]))
        bound = 0 if criterion == "pair_diff" else BOUNDS[criterion]
        ax.axhline(bound, color="black", ls="--", lw=0.8)
        ax.set_title(f"{_TITLES[criterion]}\nmet ({_BOUND_TEXT[criterion]}): " + ", ".join(parts), fontsize=8)
        ax.set_xticks(range(len(runs)), ticks, rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
        if any(per.values()):
            ax.legend(fontsize=7)
        else:  # e.g. no picseq rows to compare with: say so rather than draw empty axes
            ax.cla()
            ax.axis("off")
            ax.text(0.5, 0.5, f"{_TITLES[criterion]}:\nno rows in these files", ha="center", va="center", fontsize=8)
    axes.flat[-1].axis("off")
    fig.suptitle(f"gsc.pic against issue #16's done-when ({method}; one point per data set and seed; in brackets, "
                 "the most PICs one held-out cell is in)", fontsize=10)  # fmt: skip
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="+", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--method", default="ml")
    args = ap.parse_args(argv)
    counts = plot(read_rows(args.jsonl), args.out, args.method)
    for criterion, per in counts.items():
        print(criterion, {k: f"{m}/{n}" for k, (m, n) in per.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
