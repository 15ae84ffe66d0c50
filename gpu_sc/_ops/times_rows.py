"""In-place row scaling by multiplication: how scanpy scales sparse rows."""

from __future__ import annotations

from ._dispatch import UPDATE, primitive
from ._layout import Parts, row_pointers, stored_bands, value_rows


@primitive(any_device=True, chunked=UPDATE, per_row=("scales",))
def times_rows(p: Parts, scales) -> None:
    """x[r, :] *= scales[r] in place, as NumPy's in-place product (in the promotion of the
    values' and the scales' dtypes, rounded once to the values'): scikit-learn's
    inplace_row_scale, which scanpy scales sparse rows with. A Dask matrix is not modified: the
    scaled copy is returned, lazily."""
    scales = p.xp.asarray(scales)
    ptr = row_pointers(p)
    for band in stored_bands(p.data.size):  # the row ids and products are a band's, not the matrix's
        p.data[band] *= scales[value_rows(ptr, band)]
