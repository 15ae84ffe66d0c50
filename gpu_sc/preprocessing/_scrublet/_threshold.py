"""threshold_minimum: the automatic doublet-score threshold, as scikit-image's
``skimage.filters.threshold_minimum`` computes it (Prewitt & Mendelsohn's minimum method),
so gpu_sc needs no scikit-image."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

NBINS = 256
MAX_ITER = 10_000


def _local_maxima(hist: np.ndarray) -> list[int]:
    """Indices where the histogram turns from rising (or flat) to falling; a plateau counts
    once, at its last bin (scikit-image's rule, which scipy's argrelmax does not follow)."""
    rising = np.diff(hist)
    maxima, up = [], True
    for i, step in enumerate(rising):
        if up and step < 0:
            maxima.append(i)
            up = False
        elif not up and step > 0:
            up = True
    return maxima


def threshold_minimum(values, nbins: int = NBINS, max_num_iter: int = MAX_ITER) -> np.floating:
    """The minimum between the two modes of the histogram of `values` (host array).

    The histogram has `nbins` equal bins over [min, max] (numpy's, widened by 0.5 each side
    when all values are equal), its counts in float32; it is smoothed by a 3-point running
    mean (edges reflected) until it has fewer than three local maxima, and must then have
    exactly two. The threshold is the centre of the lowest smoothed bin between them (the
    first, on a tie). Raises RuntimeError when no two maxima are left, or after
    `max_num_iter` smoothings, as scikit-image does.
    """
    values = np.asarray(values).ravel()
    counts, edges = np.histogram(values, bins=nbins)
    centres = (edges[:-1] + edges[1:]) / 2.0
    smooth = counts.astype(np.float32)
    maxima: list[int] = []
    counter = 0
    for counter in range(max_num_iter):  # noqa: B007 - read after the loop, as scikit-image does
        smooth = uniform_filter1d(smooth, 3)
        maxima = _local_maxima(smooth)
        if len(maxima) < 3:
            break
    if len(maxima) != 2:
        msg = "Unable to find two maxima in histogram"
        raise RuntimeError(msg)
    if counter == max_num_iter - 1:
        msg = "Maximum iteration reached for histogram smoothing"
        raise RuntimeError(msg)
    low = int(np.argmin(smooth[maxima[0] : maxima[1] + 1]))
    return centres[maxima[0] + low]  # a numpy scalar, as scikit-image gives (uns["scrublet"]["threshold"])
