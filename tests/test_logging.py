"""A swapped script logs what scanpy's did: at scanpy's verbosity 2 (info), 3 (hints) and 4
(debug) each of our own steps writes scanpy's lines ("computing PCA", "    with n_comps=50", "    finished
(0:00:00)", "--> added ..."), times aside, to scanpy's log file. Each step runs once with scanpy
and once with gpu_sc on the same input."""

from __future__ import annotations

import re
import warnings

import anndata as ad
import numpy as np
import pytest

import gpu_sc as gsc
from gpu_sc._settings import DEBUG, HINT, INFO, settings

sc = pytest.importorskip("scanpy")

_TIME = re.compile(r"\(\d+:\d\d:\d\d\)")


def _prepared(pbmc, upto: int):
    """pbmc68k's counts, run by scanpy up to: 0 counts, 1 log-normalised, 2 with its HVGs, 3 with
    X_pca, 4 with neighbours, 5 with leiden clusters."""
    a = pbmc
    if upto >= 1:
        sc.pp.normalize_total(a)
        sc.pp.log1p(a)
    if upto >= 2:
        sc.pp.highly_variable_genes(a, n_top_genes=300)
    if upto >= 3:
        sc.pp.pca(a, n_comps=20)
    if upto >= 4:
        sc.pp.neighbors(a)
    if upto >= 5:
        a.obs["groups"] = a.obs["bulk_labels"].astype(str).str[:3].astype("category")
    return a


_GENES = [f"g{i}" for i in range(20)]  # set on the data below: the first 20 genes
STEPS = {
    "filter_cells": (0, lambda m, a: m.pp.filter_cells(a, min_genes=300)),
    "filter_genes": (0, lambda m, a: m.pp.filter_genes(a, min_cells=30)),
    "filter_cells_counts": (0, lambda m, a: m.pp.filter_cells(a, max_counts=1000)),  # (2000 filtered none)
    "normalize_total": (0, lambda m, a: m.pp.normalize_total(a)),
    "normalize_total_excluded": (0, lambda m, a: m.pp.normalize_total(a, exclude_highly_expressed=True)),
    "normalize_total_key": (0, lambda m, a: m.pp.normalize_total(a, key_added="n_norm")),
    "normalize_per_cell": (0, lambda m, a: m.pp.normalize_per_cell(a)),
    "hvg": (1, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300)),
    "hvg_batches": (1, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300, batch_key="phase")),
    "hvg_cell_ranger": (1, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300, flavor="cell_ranger")),
    "hvg_seurat_v3": (0, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300, flavor="seurat_v3")),
    "filter_genes_dispersion": (1, lambda m, a: m.pp.filter_genes_dispersion(a, n_top_genes=300, log=False)),
    "pca": (2, lambda m, a: m.pp.pca(a, n_comps=20)),
    "tl_pca": (2, lambda m, a: m.tl.pca(a, n_comps=20)),
    "neighbors": (3, lambda m, a: m.pp.neighbors(a)),
    "neighbors_x": (1, lambda m, a: m.pp.neighbors(a, use_rep="X")),
    "leiden": (4, lambda m, a: m.tl.leiden(a, flavor="igraph", n_iterations=2)),
    "rank_genes_groups": (5, lambda m, a: m.tl.rank_genes_groups(a, "groups")),
    "rank_genes_groups_wilcoxon": (5, lambda m, a: m.tl.rank_genes_groups(a, "groups", method="wilcoxon")),
    "filter_rank_genes_groups": (5, lambda m, a: (m.tl.rank_genes_groups(a, "groups"),
                                                  m.tl.filter_rank_genes_groups(a))),  # fmt: skip
    "dendrogram": (5, lambda m, a: m.tl.dendrogram(a, "groups")),
    "score_genes": (1, lambda m, a: m.tl.score_genes(a, _GENES)),
    "score_genes_cell_cycle": (1, lambda m, a: m.tl.score_genes_cell_cycle(a, s_genes=_GENES[:10],
                                                                             g2m_genes=_GENES[10:])),  # fmt: skip
    "regress_out": (1, lambda m, a: m.pp.regress_out(a, ["n_counts"])),
    "combat": (1, lambda m, a: m.pp.combat(a, "phase")),
    "recipe_zheng17": (0, lambda m, a: m.pp.recipe_zheng17(a, n_top_genes=300)),
    "recipe_seurat": (0, lambda m, a: m.pp.recipe_seurat(a)),
    "pearson_hvg": (0, lambda m, a: m.experimental.pp.highly_variable_genes(a, n_top_genes=300)),
    "pearson_residuals": (0, lambda m, a: m.experimental.pp.normalize_pearson_residuals(a)),
    "pearson_residuals_pca": (0, lambda m, a: m.experimental.pp.normalize_pearson_residuals_pca(a, n_comps=20)),
    "recipe_pearson_residuals": (0, lambda m, a: m.experimental.pp.recipe_pearson_residuals(a, n_top_genes=300,
                                                                                            n_comps=20)),  # fmt: skip
    "filter_cells_min_counts": (0, lambda m, a: m.pp.filter_cells(a, min_counts=500)),
    "filter_cells_max_genes": (0, lambda m, a: m.pp.filter_cells(a, max_genes=300)),
    "filter_cells_matrix": (0, lambda m, a: m.pp.filter_cells(a.X, min_genes=300)),
    "filter_genes_min_counts": (0, lambda m, a: m.pp.filter_genes(a, min_counts=100)),
    "filter_genes_max_cells": (0, lambda m, a: m.pp.filter_genes(a, max_cells=400)),
    "filter_genes_max_counts": (0, lambda m, a: m.pp.filter_genes(a, max_counts=2000, inplace=False)),
    "normalize_total_target": (0, lambda m, a: m.pp.normalize_total(a, target_sum=1e4, inplace=False)),
    "normalize_per_cell_min_counts": (0, lambda m, a: m.pp.normalize_per_cell(a, min_counts=500, layers="all")),
    "normalize_per_cell_matrix": (0, lambda m, a: m.pp.normalize_per_cell(a.X, min_counts=500, copy=True)),
    "hvg_cutoffs": (1, lambda m, a: m.pp.highly_variable_genes(a)),
    "hvg_all_genes": (1, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=1000)),
    "hvg_not_inplace": (1, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300, inplace=False)),
    "hvg_cell_ranger_batches": (1, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300, flavor="cell_ranger",
                                                                            batch_key="phase")),  # fmt: skip
    "hvg_seurat_v3_batches": (0, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300, flavor="seurat_v3",
                                                                          batch_key="phase")),  # fmt: skip
    "hvg_seurat_v3_paper": (0, lambda m, a: m.pp.highly_variable_genes(a, n_top_genes=300, flavor="seurat_v3_paper",
                                                                        batch_key="phase")),  # fmt: skip
    "filter_genes_dispersion_cell_ranger": (1, lambda m, a: m.pp.filter_genes_dispersion(a, flavor="cell_ranger",
                                                                                          n_top_genes=300)),  # fmt: skip
    "filter_genes_dispersion_cutoffs": (1, lambda m, a: m.pp.filter_genes_dispersion(a)),
    "regress_out_categorical": (1, lambda m, a: m.pp.regress_out(a, "phase")),
    "regress_out_dense": (1, lambda m, a: (setattr(a, "X", a.X.toarray()), m.pp.regress_out(a, ["n_counts",
                                                                                                 "percent_mito"]))),  # fmt: skip
    "combat_covariates": (1, lambda m, a: m.pp.combat(a, "phase", covariates=["n_counts", "percent_mito"])),
    "recipe_zheng17_nolog": (0, lambda m, a: m.pp.recipe_zheng17(a, n_top_genes=300, log=False)),
    "recipe_weinreb17": (0, lambda m, a: (setattr(a, "X", a.X.toarray()), m.pp.recipe_weinreb17(a, n_pcs=20))),
    "scrublet": (0, lambda m, a: m.pp.scrublet(a, random_state=0)),
    "scrublet_batches": (0, lambda m, a: m.pp.scrublet(a, batch_key="phase", n_prin_comps=10, random_state=0)),
    "scrublet_60_pcs": (0, lambda m, a: m.pp.scrublet(a, n_prin_comps=60, random_state=0)),
    "scale_integers": (0, lambda m, a: m.pp.scale(a.X.astype(np.int64).toarray())),
    "scale_no_centre_clipped": (1, lambda m, a: m.pp.scale(a, zero_center=False, max_value=5)),
    "pca_key_added": (2, lambda m, a: m.pp.pca(a, n_comps=20, key_added="pca20")),
    "pca_matrix": (2, lambda m, a: m.pp.pca(a.X, n_comps=20)),
    "pca_no_zero_center": (2, lambda m, a: m.pp.pca(a, n_comps=20, zero_center=False)),
    "pca_randomized": (2, lambda m, a: m.pp.pca(a, n_comps=20, svd_solver="randomized")),
    "neighbors_key_added": (3, lambda m, a: m.pp.neighbors(a, key_added="nn")),
    "neighbors_n_pcs": (3, lambda m, a: m.pp.neighbors(a, n_pcs=10)),
    "neighbors_use_rep": (3, lambda m, a: m.pp.neighbors(a, use_rep="X_pca")),
    "neighbors_few_genes": (1, lambda m, a: m.pp.neighbors(a[:, :40].copy())),
    "neighbors_few_cells": (3, lambda m, a: m.pp.neighbors(a[:10].copy())),
    "neighbors_gauss": (3, lambda m, a: m.pp.neighbors(a, knn=False, method="gauss")),
    "neighbors_no_pca": (1, lambda m, a: m.pp.neighbors(a, n_pcs=20)),
    "leiden_key_added": (4, lambda m, a: m.tl.leiden(a, flavor="igraph", n_iterations=2, key_added="cl")),
    "leiden_restrict_to": (4, lambda m, a: m.tl.leiden(a, flavor="igraph", n_iterations=2,
                                                       restrict_to=("bulk_labels", ["Dendritic"]))),  # fmt: skip
    "rank_genes_groups_logreg": (5, lambda m, a: m.tl.rank_genes_groups(a, "groups", method="logreg")),
    "rank_genes_groups_key_added": (5, lambda m, a: m.tl.rank_genes_groups(a, "groups", key_added="rg")),
    "rank_genes_groups_reference": (5, lambda m, a: m.tl.rank_genes_groups(a, "groups", groups=["CD5", "Den"],
                                                                           reference="CD3", method="wilcoxon")),
    "filter_rank_genes_groups_args": (5, lambda m, a: (m.tl.rank_genes_groups(a, "groups", key_added="rg"),
                                                       m.tl.filter_rank_genes_groups(a, key="rg", min_fold_change=2,
                                                                                     min_in_group_fraction=0.1))),
    "dendrogram_key_added": (5, lambda m, a: m.tl.dendrogram(a, "groups", n_pcs=10, key_added="dg")),
    "dendrogram_use_rep": (5, lambda m, a: m.tl.dendrogram(a, "groups", use_rep="X_pca")),
    "dendrogram_without_pca": (5, lambda m, a: (a.obsm.pop("X_pca"), m.tl.dendrogram(a, "groups"))),
    "score_genes_name": (1, lambda m, a: m.tl.score_genes(a, [*_GENES, "NOT_A_GENE"], score_name="sig", ctrl_size=20)),
    "score_genes_no_control": (1, lambda m, a: m.tl.score_genes(a, list(a.var_names[:720]), ctrl_as_ref=False)),
    "pearson_hvg_batches": (0, lambda m, a: m.experimental.pp.highly_variable_genes(a, n_top_genes=300,
                                                                                    batch_key="phase")),  # fmt: skip
    "pearson_hvg_frame": (0, lambda m, a: m.experimental.pp.highly_variable_genes(a, n_top_genes=300, inplace=False)),
    "pearson_residuals_layer": (0, lambda m, a: (a.layers.__setitem__("counts", a.X.copy()),
                                                 m.experimental.pp.normalize_pearson_residuals(a, layer="counts"))),
    "recipe_pearson_residuals_batches": (0, lambda m, a: m.experimental.pp.recipe_pearson_residuals(
        a, n_top_genes=300, n_comps=20, batch_key="phase")),  # fmt: skip
}


def _log(module, call, data, verbosity: int, tmp_path) -> list[str]:
    path = tmp_path / f"{module.__name__}.log"
    before = sc.settings.verbosity, sc.settings.logpath or sc.settings.logfile
    sc.settings.verbosity, sc.settings.logfile = verbosity, path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(module, data)
    finally:
        sc.settings.verbosity, sc.settings.logfile = before
    return [_TIME.sub("(T)", line) for line in path.read_text().splitlines()]


#: the n_top_genes cutoff of the debug line: round-off apart (up to 1.2e-7 here), the same genes
_CUTOFF = re.compile(r"(cutoff of )(-?[0-9.]+(?:e-?\d+)?)")


def _cutoffs(lines: list[str]) -> tuple[list[str], list[float]]:
    """The lines with the cutoffs masked, and the cutoffs."""
    values = [float(m[2]) for line in lines for m in _CUTOFF.finditer(line)]
    return [_CUTOFF.sub(r"\1C", line) for line in lines], values


@pytest.mark.parametrize("verbosity", [2, 3, 4])
@pytest.mark.parametrize("step", list(STEPS))
def test_steps_log_scanpys_lines(step, verbosity, pbmc, tmp_path):
    pbmc.var_names = _GENES + list(pbmc.var_names[20:])
    data = _prepared(pbmc, STEPS[step][0])
    theirs = _log(sc, STEPS[step][1], data.copy(), verbosity, tmp_path)
    ours = _log(gsc, STEPS[step][1], data.copy(), verbosity, tmp_path)
    assert theirs, "scanpy logged nothing: the step no longer tests anything"
    (ours, our_cutoffs), (theirs, their_cutoffs) = _cutoffs(ours), _cutoffs(theirs)
    assert ours == theirs
    np.testing.assert_allclose(our_cutoffs, their_cutoffs, rtol=0, atol=1e-6)


def _pca_of_a_layer_on_disk(module, adata):
    """In the test's own directory (chdir)."""
    ad.AnnData(adata.X[:, :40].toarray()).write_h5ad("on_disk.h5ad")  # a dense file dataset
    backed = ad.read_h5ad("on_disk.h5ad", backed="r")
    backed.layers["on_disk"] = backed.X  # an h5py dataset
    try:
        module.pp.pca(backed, layer="on_disk")
    finally:
        backed.file.close()


@pytest.mark.parametrize(("call", "error"), [
    (lambda m, a: m.tl.rank_genes_groups(a, "groups", use_raw=True), ValueError),  # no raw: before "ranking genes"
    (lambda m, a: m.pp.scale(a.X.astype(np.int64).toarray(), mask_obs="groups"), ValueError),  # integer line first
    (lambda m, a: _pca_of_a_layer_on_disk(m, a), NotImplementedError),  # "with n_comps" first
], ids=["rank_genes_groups_no_raw", "scale_mask_name_on_a_matrix", "pca_layer_on_disk"])  # fmt: skip
def test_lines_before_an_error_are_scanpys(call, error, pbmc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _prepared(pbmc, 5)
    for module in (sc, gsc):
        with pytest.raises(error):
            _log(module, call, data.copy(), 3, tmp_path)
    theirs, ours = ((tmp_path / f"{m.__name__}.log").read_text() for m in (sc, gsc))
    assert ours == theirs


def test_ingest_logs_scanpys_lines(pbmc, tmp_path):
    """scanpy 1.11's own ingest fails with pynndescent 0.7 (tests/test_ingest.py), so its lines are
    written out here: its start and finished lines, nothing from the mapping between (verbosity 3:
    no hint either)."""
    a = _prepared(pbmc, 1)
    ref, new = a[:400].copy(), a[400:].copy()
    sc.pp.pca(ref, n_comps=20)
    sc.pp.neighbors(ref)
    sc.tl.umap(ref)
    lines = _log(gsc, lambda m, b: m.tl.ingest(b, ref, obs="bulk_labels"), new, 3, tmp_path)
    assert lines == ["running ingest", "    finished (T)"]


def test_log_formats_as_scanpys_logg(capsys, monkeypatch):
    """Prefixes by level, `deep` one level up, the time at the end or in place of
    {time_passed}; nothing below the verbosity shown."""
    monkeypatch.setitem(__import__("sys").modules, "scanpy", None)  # our verbosity alone
    monkeypatch.setattr(settings, "verbosity", 3)
    start = settings.log("computing X")
    settings.log("    finished", start=start, deep="added\n    'x', the X")
    settings.log("    finished ({time_passed}): and more", start=start)
    settings.log("added 'y'", level=HINT, deep="not shown below 4")
    settings.log("not shown at 3", level=DEBUG)
    assert capsys.readouterr().err.splitlines() == [
        "computing X", "    finished: added", "    'x', the X (0:00:00)", "    finished (0:00:00): and more",
        "--> added 'y'"]  # fmt: skip
    with settings.muted():  # a step's inner call that scanpy's counterpart makes silently
        assert not settings.shows(INFO)
        settings.log("not shown when muted")
        settings.warning("warnings still show")
    assert settings.shows(HINT) and not settings.shows(DEBUG)
    monkeypatch.setattr(settings, "verbosity", 1)
    assert np.isfinite(settings.log("quiet at 1", level=INFO))
    assert capsys.readouterr().err == "WARNING: warnings still show\n"
