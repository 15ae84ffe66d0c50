"""What a deconvolution found, in a few lines of text (`summary`), and how well it found it on
synthetic PICs whose partners are known (`accuracy`)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._validation import check_anndata, check_int
from ._expected import ok_mask


def accuracy(pics: AnnData) -> dict[str, float] | None:
    """Accuracy of the PICs with status 'ok' against their known partners (synthetic PICs with
    obs true_a, true_b, true_alpha): shares of right pairs, A and B groups, and the mean
    absolute alpha error; None for real PICs or when no PIC is 'ok'. PICs whose true_a or true_b
    is missing (real PICs among synthetic ones) are left out, as their alpha is."""
    check_anndata(pics, step="accuracy", name="pics")
    obs = pics.obs
    if not {K.OBS_TRUE_A, K.OBS_TRUE_B, K.OBS_PIC_A, K.OBS_PIC_B} <= set(obs.columns):
        return None
    ok = ok_mask(pics) & obs[K.OBS_TRUE_A].notna().to_numpy() & obs[K.OBS_TRUE_B].notna().to_numpy()
    if not ok.any():
        return None
    info = pics.uns.get(K.UNS_PIC)
    if isinstance(info, dict) and info.get("groups_a") is not None and info.get("groups_b") is not None:
        # truth named in another grouping than the deconvolution's (e.g. cell types, groups by
        # cluster): no call could match it, and a score of 0 would say the calls are wrong
        true_groups = set(obs[K.OBS_TRUE_A][ok].astype(str)) | set(obs[K.OBS_TRUE_B][ok].astype(str))
        if not true_groups & {str(g) for g in (*info["groups_a"], *info["groups_b"])}:
            return None
    hit_a = (obs[K.OBS_PIC_A].astype(str) == obs[K.OBS_TRUE_A].astype(str)).to_numpy()[ok]
    hit_b = (obs[K.OBS_PIC_B].astype(str) == obs[K.OBS_TRUE_B].astype(str)).to_numpy()[ok]
    res = {"pair": float((hit_a & hit_b).mean()), "a": float(hit_a.mean()), "b": float(hit_b.mean())}
    if {K.OBS_TRUE_ALPHA, K.OBS_PIC_ALPHA} <= set(obs.columns):
        err = np.abs(obs[K.OBS_PIC_ALPHA].to_numpy(float) - obs[K.OBS_TRUE_ALPHA].to_numpy(float))[ok]
        res["alpha_mae"] = float(np.nanmean(err))
    return res


def summary(pics: AnnData, n_top: int = 3) -> dict[str, str]:
    """Summary lines (label -> text) of a deconvolution: PICs deconvolved, status counts, the
    `n_top` most frequent pairs, median alpha, and the accuracy where the truth is known."""
    check_anndata(pics, step="summary", name="pics")
    n_top = check_int(n_top, step="summary", name="n_top")
    obs = pics.obs
    if not {K.OBS_PIC_A, K.OBS_PIC_B} <= set(obs.columns):
        msg = (f"summary: pics.obs has no {K.OBS_PIC_A!r} / {K.OBS_PIC_B!r} columns: these PICs were not "
               "deconvolved; run gsc.pic.deconvolve first.")  # fmt: skip
        raise ValueError(msg)
    status = obs[K.OBS_PIC_STATUS].astype(str) if K.OBS_PIC_STATUS in obs else None
    ok = ok_mask(pics)
    out = {"PICs deconvolved": f"{int(ok.sum()):,} of {pics.n_obs:,} (status 'ok')"}
    if status is not None:
        counts = status.value_counts()
        out["status counts"] = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    if ok.any():
        pairs = (obs[K.OBS_PIC_A].astype(str) + " + " + obs[K.OBS_PIC_B].astype(str))[ok].value_counts()
        out["top pairs (A + B)"] = "; ".join(f"{k} {v:,}" for k, v in pairs.head(n_top).items())
    if K.OBS_PIC_ALPHA in obs and ok.any():
        out["median alpha (A share)"] = f"{np.nanmedian(obs[K.OBS_PIC_ALPHA].to_numpy(float)[ok]):.3f}"
    truth = accuracy(pics)
    if truth is not None:
        text = f"pair {truth['pair']:.3f}, A {truth['a']:.3f}, B {truth['b']:.3f}"
        if "alpha_mae" in truth:
            text += f", alpha MAE {truth['alpha_mae']:.3f}"
        out["accuracy vs truth"] = text
    return out
