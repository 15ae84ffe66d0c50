"""Launch wrapper for kernels/pic_loglik.cu (one block per PIC, pairs across threads)."""

from __future__ import annotations

import numpy as np

from . import THREADS, check, device, function, register

register("pic_loglik.cu", "pic_loglik", ("value", "index"))


def pic_loglik(data, indices, indptr, n_rows, pa, pb, eps, n_iter=60):
    """(ll, alpha), each float64 (n_rows, K_A * K_B), pair j = i_a + K_A * i_b (device arrays)."""
    import cupy as cp

    itype = check(data, indices, indptr)
    pa = device(pa, data.dtype)
    pb = device(pb, data.dtype)
    ka, kb = pa.shape[1], pb.shape[1]
    ll = cp.empty((n_rows, ka * kb), dtype=cp.float64)
    alpha = cp.empty((n_rows, ka * kb), dtype=cp.float64)
    if n_rows:
        function("pic_loglik", data.dtype, itype)(
            (int(n_rows),), (THREADS,),
            (data, indices, indptr, np.int64(n_rows), pa, pb, np.int64(ka), np.int64(kb),
             np.float64(eps), np.int32(n_iter), ll, alpha),
        )  # fmt: skip
    return ll, alpha
