"""PIC deconvolution: which A group, which B group and what share alpha of UMIs from A.

`deconvolve` validates its arguments, fits the chosen method (`_methods.METHODS`) on the
singlets once, runs it on every block of PICs (the whole matrix, or each row block of a Dask
array as one task) and only then writes the results into the PICs' AnnData.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .._backend import blocks_like, gpu_available, is_dask, is_gpu
from .._settings import user_stacklevel
from .._validation import check_anndata, check_flag, check_int, check_number, check_seed
from . import _profiles
from ._args import names_list, population_groups
from ._expected import check_reference_counted, check_same_genes
from ._methods import METHODS, Options, Reference
from ._simulate import _counts_csr
from ._umi_draws import draw_rows, name_keys

_ALPHA_MODELS = ("regression", "posterior")
#: deconvolve's choices, for callers that check them before any work (the CLI)
CHOICES = {"method": tuple(METHODS), "alpha_model": _ALPHA_MODELS}
MAX_UMIS = 2**31 - 1  # n_umis above this is no depth a PIC has
_FLOAT_KEYS = (K.OBS_PIC_ALPHA, "pic_ll", "pic_p_pair", "pic_p_a", "pic_p_b")
# What an earlier run may have left: every method's own results, and what the steps that read
# them derived (expected layers, QC flags). A new run drops them, so that no column of another
# method's calls (mixture's weights beside ml's pairs) or layer of the old pairs (which chi2
# would read) stays beside the new calls.
_STALE_OBS = (K.OBS_PIC_A, K.OBS_PIC_B, K.OBS_PIC_STATUS, *_FLOAT_KEYS,
              *(k for m in METHODS.values() for k in m.own_obs), K.OBS_PIC_DOUBLET_LLR, K.OBS_PIC_DOUBLET_P,
              K.OBS_PIC_IS_DOUBLET, K.OBS_PIC_TRIPLET_LLR, K.OBS_PIC_TRIPLET_P, K.OBS_PIC_TRIPLET_SIDE,
              K.OBS_PIC_TRIPLET_GROUPS, K.OBS_PIC_IS_TRIPLET)  # fmt: skip
_STALE_OBSM = (*(k for m in METHODS.values() for k in m.own_obsm), K.OBSM_PAIR_POSTERIOR)
_STALE_LAYERS = (K.PIC_EXPECTED, f"{K.PIC_EXPECTED}_a", f"{K.PIC_EXPECTED}_b")
_STALE_UNS = K.UNS_PIC_STEPS


def deconvolve(pics: AnnData, singlets: AnnData, *, groupby: str, a, b, method: str = "ml",
               n_umis: int | None = None, markers=None,
               blacklist=_profiles.DEFAULT_BLACKLIST, eps: float = 1e-4, seed: int = 0,
               calibrate: bool = True, calibration_depth: int | None = None,
               alpha_model: str = "regression", n_train: int = 20000, cv: int = 10,
               rescale_to_1000: bool = True, search_genes: str | None = None,
               n_between: int = 50, concentration: float = 1.0, mixture_iter: int = 500,
               device: str | None = None, progress: bool = False) -> None:
    """Deconvolve PICs into an A group, a B group and the A share alpha.

    Parameters
    ----------
    pics, singlets
        AnnData of raw integer counts over the same genes.
    groupby
        singlets.obs column with the reference groups.
    a, b
        Group name(s) of population A and population B.
    method
        ``"ml"`` (joint maximum likelihood over pair and alpha; alpha then learned from the
        pair's likelihood and the PIC's composition, see ``alpha_model``), ``"picseq"`` (the
        published algorithm: LASSO alpha, then exhaustive pair search with fixed alpha) or
        ``"mixture"`` (soft weights over all groups by batched EM, MAP under a Dirichlet prior;
        flags triplets and contamination).
    n_umis
        Down-sample PICs to this many UMIs (dropping smaller ones); picseq default 1000,
        ml default no down-sampling.
    markers
        Gene names added to the footprint markers.
    blacklist
        Regexes of genes never used as markers.
    eps
        Pseudo-probability added inside the log (above 0: a gene no profile holds would
        otherwise make a PIC's likelihood -inf).
    seed
        Random seed, a non-negative integer (down-sampling, simulated PICs for training and
        calibration).
    calibrate
        ml: fit the temperatures of the pair posterior and of the alpha likelihood, and the
        alpha regression, on PICs simulated from half of the reference against profiles of the
        other half (else temperatures 1 and the posterior mean of alpha).
    calibration_depth
        ml: the UMIs of those simulated PICs (None: ``n_umis`` where set, else the PICs' median
        depth; ``uns['pic']['calibration_depth']`` records it). The temperatures move with depth
        (0.2 at 300 UMIs, 0.05 at 1,200), so pass it to deconvolve other PICs (a batch, or the
        simulated PICs of a confusion) exactly as these were. Other methods and
        ``calibrate=False`` calibrate nothing and refuse it.
    alpha_model
        ml: ``"regression"`` (gradient-boosted trees learned on ``n_train`` simulated PICs map
        the pair's alpha likelihood and the PIC's UMI shares in bins of genes, ordered from A-
        to B-specific, to alpha, with a 90 % prediction interval from two quantile models
        widened by split conformal prediction on PICs of held-out cells; it corrects what
        group-mean profiles get wrong about one particular cell, and needs scikit-learn) or
        ``"posterior"`` (the posterior mean of alpha under the cell-size prior, with a 90 %
        credible interval). With too few simulated PICs the posterior is used;
        ``uns['pic']['alpha_model']`` says which.
    n_train, cv
        Simulated training PICs: picseq's alpha LASSO (published: 20,000) and ml's alpha
        regression; cv: CV folds of the LASSO.
    rescale_to_1000
        picseq: scale real PIC features to 1000 UMIs (False reproduces the Cohen 2022 quirk).
    search_genes
        ml and mixture: the genes of the pair search. None: ``"informative"`` for ml, ``"all"``
        for mixture. ``"informative"``: the markers, the genes between the populations and per
        population the genes that best separate its groups (F statistic of log expression
        between groups over within groups), none blacklisted, without the other genes: the
        whole transcriptome lets highly expressed genes that vary from cell to cell
        (ribosomal, mitochondrial, TRBC1/TRBC2, ...) outvote the genes of fine groups.
        ``"all"``: the whole transcriptome. ``"markers"``: markers, genes between the
        populations and one bucket for the rest (several times fewer terms per PIC).
    n_between
        ml with ``search_genes="informative"`` or ``"markers"``: the top genes (each
        direction) between population A and B added to the markers.
    concentration, mixture_iter
        mixture: Dirichlet concentration of the prior on the weights (1: maximum likelihood;
        < 1: sparser weights) and the most EM iterations.
    device
        Where the pair search runs: ``"cpu"`` (Numba), ``"gpu"`` (our CUDA kernel) or None
        (where ``pics.X`` lives). ``pics.X`` may be a Dask array of PICs (rows in blocks):
        every row block is then one task of the active Dask scheduler (e.g. a dask-cuda
        cluster). Each PIC's down-sampling draw is keyed by the seed and its name (obs_names),
        so its calls do not depend on the order of the rows or on the blocks.
    progress
        Report the pair search's progress (PICs done, about every tenth; stderr, stdout in Jupyter) at
        ``gsc.settings.verbosity`` 2.

    Returns
    -------
    Nothing; sets in ``pics.obs``: ``pic_a``, ``pic_b`` (group names), ``pic_alpha``, ``pic_ll``
    (maximised log-likelihood of the chosen pair over the search genes), ``pic_p_pair``
    (posterior of the chosen pair), ``pic_p_a``, ``pic_p_b`` (marginal posteriors of the
    chosen A and B groups), ``pic_status`` ('ok', 'too_few_umis', 'alpha_out_of_range',
    'no_counts'; mixture with ``concentration < 1`` also 'one_sided': no weight left on one
    population's groups, a singlet rather than a pair); ml also ``pic_alpha_ml`` (alpha
    maximising the pair's LL: the A share of the UMIs on the search genes),
    ``pic_alpha_posterior`` (posterior mean under the size prior), ``pic_alpha_lo``,
    ``pic_alpha_hi`` (90 % interval of ``pic_alpha``); picseq also ``pic_alpha_hat`` (the
    regression's prediction, including dropped PICs); ml and picseq also
    ``pics.obsm['pic_pair_posterior']`` (CSR, PICs x A groups * B groups pairs: the pairs at
    1e-4 or more, at most 32 a PIC). ``pics.uns['pic']``: method, groupby,
    groups_a, groups_b, markers, n_umis, seed, device, eps and ``arguments`` (the call's
    arguments, which the later steps reuse); ml and mixture also ``search_genes`` and
    ``n_search_genes``, ml and picseq ``n_train``; picseq ``alpha_cv_r2``, ``alpha_genes``,
    ``lasso_lambda``; ml ``calibration_depth``, ``calibrated``, ``pair_temper``, ``alpha_temper``,
    ``alpha_calibration_r2`` (R^2 of the posterior mean on the calibration PICs),
    ``alpha_model`` (the one used) and, for the regression, ``alpha_regression_r2`` (on PICs
    from a fifth of the training cells held out of the fit) and ``alpha_interval_margin`` (the
    conformal widening of its interval, from the same PICs). mixture: ``pic_a`` and
    ``pic_b`` are the heaviest group of each side, ``pic_alpha`` the total A weight,
    ``pic_p_a`` / ``pic_p_b`` the chosen group's share of its side's weight, ``pic_p_pair``
    NaN, ``pic_n_major`` the number of groups with weight >= 0.1 (> 2: a triplet or
    contamination), ``pics.obsm['pic_weights']`` (PICs x groups, columns in
    ``uns['pic']['weight_groups']``; NaN rows for PICs not deconvolved).
    """
    check_anndata(pics, step="deconvolve", name="pics")
    check_anndata(singlets, step="deconvolve", name="singlets")
    if method not in METHODS:
        msg = f"deconvolve: method must be one of {tuple(METHODS)}, got {method!r}."
        raise ValueError(msg)
    if alpha_model not in _ALPHA_MODELS:
        msg = (
            f"deconvolve: alpha_model must be one of {_ALPHA_MODELS}, got "
                         f"{alpha_model!r}."
        )
        raise ValueError(msg)
    if device not in (None, "cpu", "gpu"):
        msg = f"deconvolve: device must be None, 'cpu' or 'gpu', got {device!r}."
        raise ValueError(msg)
    if device == "gpu" and not gpu_available():  # before the training, not at the first kernel
        msg = ("deconvolve: device='gpu' needs CuPy and a CUDA device, and none is usable here (no CuPy, "
               "or no device it sees); pass device='cpu' (None: where pics.X is), or where CuPy is missing "
               "install gpu_sc with the extra matching your CUDA ('pip install \"gpu_sc[cuda13]\"' or '[cuda12]').")
        raise RuntimeError(msg)
    calibrate, rescale_to_1000, progress = (check_flag(v, k, step="deconvolve") for k, v in (
        ("calibrate", calibrate), ("rescale_to_1000", rescale_to_1000), ("progress", progress)))
    n_umis, seed, n_train, cv, n_between, mixture_iter = _check_ints(
        n_umis, seed, n_train, cv, n_between, mixture_iter)
    calibration_depth = check_int(calibration_depth, step="deconvolve", name="calibration_depth", none_ok=True,
                                  hint=" (None: n_umis, else the PICs' median depth)")
    if n_umis is not None and n_umis > MAX_UMIS:  # (a Python int past int64 also fails to write to h5ad)
        msg = f"deconvolve: n_umis={n_umis} is beyond any PIC's depth; pass at most {MAX_UMIS:,} (or None)."
        raise ValueError(msg)
    if calibration_depth is not None and not (method == "ml" and calibrate):
        msg = (f"deconvolve: calibration_depth={calibration_depth} sets the depth of ml's calibration, and "
               f"method={method!r} with calibrate={calibrate} calibrates nothing; drop calibration_depth "
               "(or pass method='ml', calibrate=True).")  # fmt: skip
        raise ValueError(msg)
    eps, concentration, markers, blacklist = _check_options(eps, concentration, search_genes, markers, blacklist,
                                                            singlets.var_names)  # fmt: skip
    labels, ga, gb, blocks, s = _validate(pics, singlets, groupby, a, b)
    check_reference_counted(s, labels, ga + gb, step="deconvolve")
    if method == "picseq" and markers is None:
        _check_picseq_populations(ga, gb)
    cls = METHODS[method]
    if search_genes is None:
        search_genes = "informative" if method == "ml" else "all"
    opt = Options(eps=eps, n_umis=cls.default_n_umis if n_umis is None else n_umis, seed=seed,
                  n_train=n_train, cv=cv, calibrate=calibrate, alpha_model=alpha_model,
                  rescale_to_1000=rescale_to_1000, search_genes=search_genes, n_between=n_between,
                  concentration=concentration, mixture_iter=mixture_iter,
                  calibration_depth=calibration_depth,
                  device=device or ("gpu" if is_gpu(blocks_like(pics.X)) else "cpu"),  # Dask: its blocks
                  progress=progress)  # fmt: skip
    in_ref = np.isin(labels, ga + gb)
    mk = _profiles.select_markers(s[in_ref], labels[in_ref], ga, gb, singlets.var_names,
                                  blacklist=blacklist, extra=markers)  # fmt: skip
    ref = Reference(singlets, s, labels, ga, gb, groupby, mk,
                    _profiles.blacklisted(singlets.var_names, blacklist))
    model = cls(ref, opt)
    info = {"method": method, "groupby": groupby, "groups_a": ga, "groups_b": gb,
            "markers": np.asarray(singlets.var_names[mk]).astype(str).tolist(), "eps": eps,
            "n_umis": opt.n_umis, "seed": seed, "device": opt.device}  # fmt: skip
    # the arguments as passed, so that a later step (pair_frequencies) can deconvolve simulated
    # PICs exactly as these were (None left out: h5ad stores no None)
    args = {"n_umis": n_umis, "markers": markers, "blacklist": [_pattern_text(b) for b in blacklist],
            "eps": eps, "seed": seed, "calibrate": calibrate, "calibration_depth": calibration_depth,
            "alpha_model": alpha_model,
            "n_train": n_train, "cv": cv, "rescale_to_1000": rescale_to_1000,
            "search_genes": search_genes, "n_between": n_between, "concentration": concentration,
            "mixture_iter": mixture_iter}  # fmt: skip
    info["arguments"] = {k: v for k, v in args.items() if v is not None}
    info.update(model.fit(ref, opt, blocks))
    row_chunks = pics.X.chunks[0] if isinstance(blocks, list) else None
    _write(pics, _run_blocks(blocks, model, seed, name_keys(pics.obs_names), row_chunks), info)
    _warn_if_too_shallow(pics, blocks, opt.n_umis)


def _warn_if_too_shallow(pics: AnnData, blocks, n_umis) -> None:
    """Most PICs below the down-sampling depth are left out ('too_few_umis'): say so, and how
    deep the PICs are, rather than return a table of almost nothing."""
    short = int((pics.obs[K.OBS_PIC_STATUS] == "too_few_umis").sum())
    if n_umis is None or short <= pics.n_obs / 2:
        return
    depth = "" if isinstance(blocks, list) else f" (their median depth: {np.median(np.asarray(blocks.sum(1))):g})"
    warnings.warn(f"deconvolve: {short} of {pics.n_obs} PICs hold fewer than n_umis={n_umis} UMIs{depth} and were "
                  "left out (pic_status 'too_few_umis'); pass a lower n_umis= to down-sample them all to it.",
                  UserWarning, stacklevel=user_stacklevel())  # fmt: skip


def _validate(pics: AnnData, singlets: AnnData, groupby: str, a, b):
    check_same_genes(pics, singlets, step="deconvolve")
    if singlets.n_vars == 0:
        msg_0 = (
            "deconvolve: pics and singlets have no genes; pass them with their "
                         "raw counts over all genes."
        )
        raise ValueError(msg_0)
    labels, ga, gb = population_groups(singlets, groupby, a, b, step="deconvolve")
    return labels, ga, gb, _pic_blocks(pics), _counts_csr(singlets.X, step="deconvolve",
                                                            what="singlets")


def _check_picseq_populations(ga: list, gb: list) -> None:
    """picseq's footprint markers compare each group with its population's median, which never
    finds a gene between exactly two groups: that population's calls would be chance (and PICs
    without the other population's markers 'no_counts')."""
    for side, groups in (("a", ga), ("b", gb)):
        if len(groups) == 2:
            msg = (f"deconvolve: method='picseq' finds no marker genes between the two groups of {side}= "
                   f"({groups}): its footprints compare each group with the median of its population. Pass "
                   f"markers= (genes that tell them apart), give {side}= three or more groups, or use method='ml'.")
            raise ValueError(msg)


def _check_ints(n_umis, seed, n_train, cv, n_between, mixture_iter) -> tuple:
    """The integer arguments of deconvolve, checked (each the same for every method, so that
    a mistake shows whichever method runs)."""
    step = "deconvolve"
    return (check_int(n_umis, step=step, name="n_umis", none_ok=True,
                      hint=" (None: no down-sampling in ml, 1000 UMIs in picseq)"),
            check_seed(seed, step=step),
            check_int(n_train, step=step, name="n_train"),
            check_int(cv, step=step, name="cv", minimum=2, hint=" (cross-validation folds)"),
            check_int(n_between, step=step, name="n_between", minimum=0),
            check_int(mixture_iter, step=step, name="mixture_iter"))


def _check_options(eps, concentration, search_genes, markers, blacklist, var_names) -> tuple:
    """The other arguments that the engines would refuse (or misread) only deep inside a run:
    (eps and concentration as floats, markers as a list of names, blacklist as compiled patterns)."""
    step = "deconvolve"
    eps = check_number(eps, "eps", step=step, low=0.0, high=math.inf, high_open=True)
    concentration = check_number(concentration, "concentration", step=step, low=0.0, high=math.inf, high_open=True)
    if search_genes not in (None, "informative", "all", "markers"):
        msg = (f"{step}: search_genes must be None, 'informative', 'all' or 'markers', got "
               f"{search_genes!r}.")
        raise ValueError(msg)
    if markers is not None:
        markers = names_list(markers, step=step, name="markers")
        known = set(var_names)
        missing = [g for g in markers if g not in known]
        if missing:
            msg = (
                f"{step}: markers {missing[:5]} are not in singlets.var_names; pass "
                           "gene names shared by pics and singlets."
            )
            raise KeyError(msg)
    # a list, tuple or array of patterns (h5ad reads the stored list back as an array)
    patterns = [blacklist] if isinstance(blacklist, str | re.Pattern) else [] if blacklist is None else list(blacklist)
    try:  # a pattern string (one, not its letters) or a compiled pattern each
        blacklist = [re.compile(p) for p in patterns]
    except re.error as e:
        msg = (
            f"{step}: blacklist pattern {e.pattern!r} is not a regular expression "
                         f"({e})."
        )
        raise ValueError(msg) from e
    not_text = [p for p in blacklist if not isinstance(p.pattern, str)]
    if not_text:
        msg = f"{step}: blacklist patterns match gene names, so they must be strings; got {not_text[0].pattern!r}."
        raise TypeError(msg)
    return eps, concentration, markers, blacklist


_FLAG_LETTERS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"), (re.ASCII, "a"))


def _pattern_text(pattern: re.Pattern) -> str:
    """The pattern as a string that compiles to the same matcher: flags given to re.compile
    become inline flags (stored arguments are strings, and a later step replays them)."""
    extra = pattern.flags & ~re.compile(pattern.pattern).flags
    letters = "".join(c for flag, c in _FLAG_LETTERS if extra & flag)
    return f"(?{letters}){pattern.pattern}" if letters else pattern.pattern


def _pic_blocks(pics: AnnData):
    """The PIC counts: a checked host CSR matrix, or for a Dask array the list of its row
    blocks (delayed; each is checked when its task runs)."""
    x = pics.X
    if is_dask(x):
        if x.ndim != 2 or x.numblocks[1] != 1:
            x = x.rechunk({1: -1})  # whole rows per block: a PIC is scored on all its genes
        return list(x.to_delayed().ravel())
    return _counts_csr(x, step="deconvolve", what="pics")  # the down-sampling and profiles run on the host


def _downsample(x: sp.csr_matrix, n_umis: int, keys: np.ndarray, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Every row down-sampled to exactly `n_umis` UMIs; rows with fewer are emptied (keep=False).
    Row i's draw is keyed by (seed, keys[i]), the hash of its PIC's name: the same UMIs wherever
    the PIC stands, in memory or in any Dask block."""
    tot = np.asarray(x.sum(1)).ravel()
    keep = tot >= n_umis
    rows = np.flatnonzero(keep)
    out = draw_rows(x, rows, np.full(rows.size, n_umis), rows, x.shape[0], seed=seed, dtype=x.dtype,
                    keys=keys[rows])  # fmt: skip
    return out, keep




def _run_blocks(blocks, model, seed: int, keys: np.ndarray, row_chunks) -> list[dict]:
    """In memory: one block. Dask: one task per row block (`row_chunks` rows each), computed by
    the active Dask scheduler. Either way each PIC's draws are keyed by (seed, its key)."""
    if not isinstance(blocks, list):
        return [_run_block(blocks, model, keys, seed)]
    import dask

    parts = np.split(keys, np.cumsum(row_chunks)[:-1])
    tasks = [dask.delayed(_run_dask_block)(b, model, k, seed) for b, k in zip(blocks, parts, strict=True)]
    return list(dask.compute(*tasks))


def _run_dask_block(block, model, keys: np.ndarray, seed: int) -> dict:
    return _run_block(_counts_csr(block, step="deconvolve", what="pics block"), model, keys, seed)


def _run_block(x: sp.csr_matrix, model, keys: np.ndarray, seed: int) -> dict:
    """Deconvolve one block of PICs (host CSR of raw counts; `keys` their down-sampling keys):
    per-PIC output arrays."""
    n = x.shape[0]
    out = {K.OBS_PIC_A: np.full(n, None, object), K.OBS_PIC_B: np.full(n, None, object),
           K.OBS_PIC_STATUS: np.array([K.PIC_STATUS_OK] * n, dtype=object)}  # fmt: skip
    out.update({k: np.full(n, np.nan) for k in _FLOAT_KEYS})
    status = out[K.OBS_PIC_STATUS]
    if model.n_umis is not None:
        x, keep = _downsample(x, int(model.n_umis), keys, seed)
        status[~keep] = "too_few_umis"
    scored = model.scored(x)
    empty = (np.asarray(scored.sum(1)).ravel() == 0) | (x @ model.expressed == 0)
    status[(status == K.PIC_STATUS_OK) & empty] = "no_counts"
    model.run(x, scored, out)
    return out


def _expected_records(pics: AnnData) -> tuple[str, ...]:
    """The uns keys of expected_expression's records (any layer_prefix) that read the pairs and
    alpha deconvolve writes: their layers describe the old calls."""
    own = (K.OBS_PIC_A, K.OBS_PIC_B, K.OBS_PIC_ALPHA)
    return tuple(k for k, v in pics.uns.items()
                 if isinstance(v, dict) and {"a_key", "b_key", "alpha_key", "groups"} <= v.keys()
                 and any(v[c] in own for c in ("a_key", "b_key", "alpha_key")))  # fmt: skip


def _interaction_records(pics: AnnData) -> tuple[str, ...]:
    """The uns keys of interaction_genes' results under any key_added: their tests read the
    pairs and alpha (matched) or the expected layer (chi2) of the old calls."""
    shape = {"table", "groups", "observed", "expected", "log2_effects", "params"}
    return tuple(k for k, v in pics.uns.items() if isinstance(v, dict) and shape <= v.keys())


def _write(pics: AnnData, parts: list[dict], info: dict) -> None:
    """The blocks' outputs into pics.obs (and obsm, uns): only now, so that nothing before
    touched the inputs; an earlier run's results (`_STALE_*`) go first."""
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != K.OBSM_PAIR_POSTERIOR}
    pics.obs.drop(columns=[k for k in _STALE_OBS if k in pics.obs], inplace=True)
    records = _expected_records(pics)
    layers = tuple(f"{k}{end}" for k in records for end in ("", "_a", "_b"))
    for where, keys in ((pics.obsm, _STALE_OBSM), (pics.layers, _STALE_LAYERS + layers),
                        (pics.uns, _STALE_UNS + records + _interaction_records(pics))):
        for k in keys:
            where.pop(k, None)
    weights = out.pop("pic_weights", None)
    if weights is not None:
        pics.obsm["pic_weights"] = weights
    if K.OBSM_PAIR_POSTERIOR in parts[0]:
        pics.obsm[K.OBSM_PAIR_POSTERIOR] = sp.vstack([p[K.OBSM_PAIR_POSTERIOR] for p in parts]).tocsr()
    for k, v in out.items():
        if k in (K.OBS_PIC_A, K.OBS_PIC_B):
            v = pd.Categorical(v, categories=info["groups_a" if k == K.OBS_PIC_A else "groups_b"])
        elif k == K.OBS_PIC_STATUS:
            v = pd.Categorical(v.astype(str))
        pics.obs[k] = v
    pics.uns[K.UNS_PIC] = info
