// Per-group, per-column sums, sums of squares and nonzero counts (float64 outputs, row-major
// (n_groups, n_cols)): the pseudobulk / marker-gene statistics. codes[r] is row r's group, -1 for
// a row in no group. Squares by gsc_square (a float's rounded in float, as numpy squares a
// float32 matrix). Callers zero the outputs; sumsq and nnz may be null.

#include "common.cuh"

// CSR: one warp per row (grid-stride over rows), the lanes stride over the row's stored values.
template <typename T, typename I>
__global__ void csr_group_sums(const T* data, const I* indices, const I* indptr, long long n_rows,
                               long long n_cols, const int* codes, double* sums, double* sumsq,
                               double* nnz) {
    const long long n_warps = ((long long)gridDim.x * blockDim.x) / GSC_WARP;
    const int lane = threadIdx.x % GSC_WARP;
    for (long long r = gsc_warp_row(); r < n_rows; r += n_warps) {
        const int g = codes[r];
        if (g < 0) continue;
        const long long base = (long long)g * n_cols;
        for (long long j = (long long)indptr[r] + lane; j < (long long)indptr[r + 1]; j += GSC_WARP) {
            const T v = data[j];
            if (v == (T)0) continue;
            const long long at = base + (long long)indices[j];
            atomicAdd(&sums[at], (double)v);
            if (sumsq) atomicAdd(&sumsq[at], gsc_square(v));
            if (nnz) atomicAdd(&nnz[at], 1.0);
        }
    }
}

// Dense C-contiguous: thread x = column (coalesced reads), block y = a chunk of rows; a column's
// partial sums stay in registers while consecutive rows share a group and are flushed with one
// atomic each when the group changes.
template <typename T>
__global__ void dense_group_sums(const T* x, long long n_rows, long long n_cols,
                                 long long rows_per_chunk, const int* codes, double* sums,
                                 double* sumsq, double* nnz) {
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_cols) return;
    const long long r0 = (long long)blockIdx.y * rows_per_chunk;
    const long long r1 = r0 + rows_per_chunk < n_rows ? r0 + rows_per_chunk : n_rows;
    double s = 0.0, q = 0.0, n = 0.0;
    int cur = -1;
    for (long long r = r0; r <= r1; ++r) {
        const int g = r < r1 ? codes[r] : -1;
        if (g != cur) {
            if (cur >= 0 && n > 0.0) {
                const long long at = (long long)cur * n_cols + c;
                atomicAdd(&sums[at], s);
                if (sumsq) atomicAdd(&sumsq[at], q);
                if (nnz) atomicAdd(&nnz[at], n);
            }
            cur = g;
            s = q = n = 0.0;
        }
        if (g < 0) continue;
        const T v = x[r * n_cols + c];
        if (v != (T)0) {
            s += (double)v;
            q += gsc_square(v);
            n += 1.0;
        }
    }
}
