"""How much of ml's pair error on fine groups the mixing itself costs: each PIC's two source
cells scored alone, at the UMIs each gave the PIC, against the same reference.

    python benchmarks/pic_side_ceiling.py --datasets pbmc4k_bnk,pbmc4k_cd8nk --seeds 71,72,73 \
        --out benchmarks/results/pic-side-ceiling-cpu-$(date +%F).jsonl

(the recorded run's three commands are in benchmarks/README.md).

For every data set and seed, the PICs of `pic_validate.py` (held-out sources, the same groups)
are deconvolved by ml; then every PIC's A source cell alone, thinned to round(true alpha x n_umis)
of its UMIs, and its B source cell alone, thinned to the rest, are deconvolved the same way (no
down-sampling: they already hold the PIC's share; temperatures fitted at the PIC depth; alpha
from the posterior, as the pair calls do not depend on alpha's model). A
cell alone is a PIC of alpha near 1 (or 0): its A (B) call is the search's call for that cell with
nothing mixed in. Where a side's accuracy in the PIC is close to its accuracy alone, the mixing
costs little and the pair error is the groups' own at that depth (one cell's UMIs, group
labels from full-depth clustering), which no better unmixing removes. One JSON row per data set
and seed; only the public ``gsc.pic`` API is called.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sc as gsc
from _common import cpu_name, versions
from pic_validate import DEFAULT_DATA, build


def thinned(cells: ad.AnnData, names, n_umis: np.ndarray, seed: int) -> ad.AnnData:
    """One row per entry of `names`: that cell of `cells` with `n_umis[i]` of its UMIs drawn
    without replacement (all of them where it holds fewer)."""
    x = sp.csr_matrix(cells.X)
    pos = cells.obs_names.get_indexer(names)
    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    for i, (r, n) in enumerate(zip(pos, n_umis, strict=True)):
        lo, hi = x.indptr[r], x.indptr[r + 1]
        counts = np.rint(x.data[lo:hi]).astype(np.int64)
        draw = rng.multivariate_hypergeometric(counts, int(min(n, counts.sum())))
        keep = draw > 0
        rows.append(np.full(keep.sum(), i))
        cols.append(x.indices[lo:hi][keep])
        vals.append(draw[keep])
    shape = (len(pos), x.shape[1])
    out = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                        shape=shape)  # fmt: skip
    return ad.AnnData(out, var=cells.var[[]].copy(), obs={"cell": np.asarray(names)})


def _deconvolve(p: ad.AnnData, ref, groups, **kw) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsc.pic.deconvolve(p, ref, groupby="grp", a=groups["A"], b=groups["B"], method="ml", seed=0, **kw)
    return p


def measure(name: str, seed: int, group_size: int, n_pics: int, data_dir: Path) -> dict | None:
    built, why = build(name, data_dir, seed, n_pics, group_size)
    if built is None:
        print(f"{name}: skipped ({why})", file=sys.stderr)
        return None
    ref, pics, groups, src = built["ref"], built["pics"].copy(), built["groups"], built["sources"]
    n_umis = built["info"]["n_umis"]
    t0 = time.perf_counter()
    _deconvolve(pics, ref, groups, n_umis=n_umis)
    seconds = time.perf_counter() - t0
    o = pics.obs
    ok = (o["pic_status"] == "ok").to_numpy()
    true_a, true_b = o["true_a"].astype(str).to_numpy(), o["true_b"].astype(str).to_numpy()
    hit_a = o["pic_a"].astype(str).to_numpy() == true_a
    hit_b = o["pic_b"].astype(str).to_numpy() == true_b
    share_a = np.rint(o["true_alpha"].to_numpy() * n_umis).astype(np.int64)
    alone = {}
    for side, col, n, truth in (("a", "source_a", share_a, true_a), ("b", "source_b", n_umis - share_a, true_b)):
        cells = thinned(src, o[col].astype(str).to_numpy(), n, seed)
        cells.obs_names = [f"{side}{i}" for i in range(cells.n_obs)]
        # alpha's regression changes no pair call: the cells alone skip it
        _deconvolve(cells, ref, groups, calibration_depth=n_umis, alpha_model="posterior")
        alone[side] = cells.obs[f"pic_{side}"].astype(str).to_numpy() == truth
        alone[side + "_ok"] = (cells.obs["pic_status"] == "ok").to_numpy()
    both = ok & alone["a_ok"] & alone["b_ok"]  # PICs scored in all three runs
    f = lambda v: round(float(v[both].mean()), 4)  # noqa: E731
    return {"mode": "side_ceiling", "dataset": name, "seed": seed, "group_size": group_size,
            "n_pics": int(pics.n_obs), "n_scored": int(both.sum()), "n_umis": n_umis,
            "n_groups_a": len(groups["A"]), "n_groups_b": len(groups["B"]),
            "pic_exact_pair": f(hit_a & hit_b), "pic_a": f(hit_a), "pic_b": f(hit_b),
            "alone_a": f(alone["a"]), "alone_b": f(alone["b"]),
            "alone_both": f(alone["a"] & alone["b"]), "ml_seconds": round(seconds, 2),
            "cpu": cpu_name(), "versions": versions()}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="pbmc4k,pbmc4k_bnk")
    p.add_argument("--seeds", default="51")
    p.add_argument("--group-size", type=int, default=75)
    p.add_argument("--n-pics", type=int, default=1500)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    n_rows = 0
    for name in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = measure(name, seed, args.group_size, args.n_pics, args.data_dir)
            if row is None:
                continue
            n_rows += 1
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with args.out.open("a") as fh:
                    fh.write(line + "\n")
    return 0 if n_rows else 1


if __name__ == "__main__":
    sys.exit(main())
