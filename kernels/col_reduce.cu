// Per-column statistics: sums and sums of squares (float64; squares by gsc_square, as scanpy
// squares) and nonzero counts. Atomics per
// element: columns are few and hot, rows are many; counts of integer data are exact, float sums
// are order-independent up to rounding. `sumsq` and `nnz` may be null when not wanted.

#include "common.cuh"

// CSR: one thread per stored element, grid-stride.
template <typename T, typename I>
__global__ void csr_col_stats(const T* data, const I* indices, long long nnz_total, double* sums,
                              double* sumsq, unsigned long long* nnz) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < nnz_total;
         j += stride) {
        const T v = data[j];
        if (v != T(0)) {
            const long long c = (long long)indices[j];
            const double d = (double)v;
            atomicAdd(&sums[c], d);
            if (sumsq) atomicAdd(&sumsq[c], gsc_square(v));
            if (nnz) atomicAdd(&nnz[c], 1ULL);
        }
    }
}

// Dense C-contiguous: thread x = column (coalesced), block y = a chunk of rows.
template <typename T>
__global__ void dense_col_stats(const T* x, long long n_rows, long long n_cols,
                                long long rows_per_chunk, double* sums, double* sumsq,
                                unsigned long long* nnz) {
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_cols) return;
    const long long r0 = (long long)blockIdx.y * rows_per_chunk;
    const long long r1 = r0 + rows_per_chunk < n_rows ? r0 + rows_per_chunk : n_rows;
    double s = 0.0, q = 0.0;
    unsigned long long k = 0;
    for (long long r = r0; r < r1; ++r) {
        const T v = x[r * n_cols + c];
        const double d = (double)v;
        s += d;
        q += gsc_square(v);
        k += (d != 0.0);
    }
    if (k) {
        atomicAdd(&sums[c], s);
        if (sumsq) atomicAdd(&sumsq[c], q);
        if (nnz) atomicAdd(&nnz[c], k);
    }
}
