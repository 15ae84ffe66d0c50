"""Launch wrappers for kernels/pic_loglik.cu (one block per PIC, pairs across threads).

Both kernels are templates over the count value type (follows the CSR data), the profile value
type (float32 or float64, follows the profiles) and the index type (int32 or int64). Rows are
the CSR rows described by `indptr` (n_rows + 1 entries, absolute offsets into `data` and
`indices`), so a chunk of rows is launched with a slice of `indptr` and the full data/indices.
"""

from __future__ import annotations

import numpy as np

from . import THREADS, VALUE_TYPES, check, device, function, register

register("pic_loglik.cu", "pic_loglik", ("value", "value", "index"))
register("pic_loglik.cu", "pic_loglik_fixed", ("value", "value", "index"))

#: Bracketed Newton steps at most per pair (the CPU engine in gpu_sc/_ops/pic_loglik.py takes the same).
N_ITER = 60


def _threads(n_pairs: int) -> tuple[int]:
    """Threads of a PIC's block: one per pair, in whole warps, at most THREADS (a 3 x 3
    reference would leave 247 of 256 threads idle)."""
    return (min(THREADS, -(-n_pairs // 32) * 32),)


def _profiles(pa, pb):
    """Profiles on the device, C-contiguous, both of one float dtype (float32 stays float32)."""
    import cupy as cp

    dt = np.result_type(pa.dtype, pb.dtype)
    if dt not in VALUE_TYPES:
        dt = np.dtype(np.float64)
    pa, pb = device(pa, dt), device(pb, dt)
    if pa.ndim != 2 or pb.ndim != 2 or pa.shape[0] != pb.shape[0]:
        msg = f"profiles must be (genes, K_A) and (genes, K_B), got {pa.shape} and {pb.shape}."
        raise ValueError(msg)
    return cp.ascontiguousarray(pa), cp.ascontiguousarray(pb)


def pic_loglik(data, indices, indptr, n_rows, pa, pb, eps, n_iter=N_ITER):
    """(ll, alpha), each float64 (n_rows, K_A * K_B), pair j = i_a + K_A * i_b (device arrays).

    alpha is maximised per pair (safeguarded Newton in [0, 1]).
    """
    import cupy as cp

    itype = check(data, indices, indptr)
    pa, pb = _profiles(pa, pb)
    ka, kb = pa.shape[1], pb.shape[1]
    ll = cp.empty((n_rows, ka * kb), dtype=cp.float64)
    alpha = cp.empty((n_rows, ka * kb), dtype=cp.float64)
    if n_rows and ka * kb:
        function("pic_loglik", data.dtype, pa.dtype, itype)(
            (int(n_rows),), _threads(ka * kb),
            (data, indices, indptr, np.int64(n_rows), pa, pb, np.int64(ka), np.int64(kb),
             np.float64(eps), np.int32(n_iter), ll, alpha),
        )  # fmt: skip
    return ll, alpha


def pic_loglik_fixed(data, indices, indptr, n_rows, pa, pb, alpha, eps):
    """ll float64 (n_rows, K_A * K_B) at the fixed per-row `alpha` (n_rows,) (device array)."""
    import cupy as cp

    itype = check(data, indices, indptr)
    pa, pb = _profiles(pa, pb)
    ka, kb = pa.shape[1], pb.shape[1]
    alpha = device(alpha, np.float64)
    if alpha.shape != (n_rows,):
        msg = f"alpha must have one value per row ({n_rows}), got {alpha.shape}."
        raise ValueError(msg)
    ll = cp.empty((n_rows, ka * kb), dtype=cp.float64)
    if n_rows and ka * kb:
        function("pic_loglik_fixed", data.dtype, pa.dtype, itype)(
            (int(n_rows),), _threads(ka * kb),
            (data, indices, indptr, np.int64(n_rows), pa, pb, np.int64(ka), np.int64(kb),
             np.float64(eps), alpha, ll),
        )  # fmt: skip
    return ll
