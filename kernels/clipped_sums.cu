// Per-column sums and sums of squares of values clipped from above at a per-column limit:
// sums[c] = sum_r min(x[r, c], clip[c]), sumsq[c] = sum_r min(x[r, c], clip[c])^2 (float64).
// This is the Seurat v3 (vst) standardized-variance statistic. CSR sums stored values only
// (implicit zeros contribute nothing); dense clips every entry. Callers zero the outputs.

#include "common.cuh"

// CSR: one thread per stored element, grid-stride, float64 atomics per column.
template <typename T, typename I>
__global__ void csr_clipped_sums(const T* data, const I* indices, long long nnz_total,
                                 const double* clip, double* sums, double* sumsq) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < nnz_total;
         j += stride) {
        const long long c = (long long)indices[j];
        double d = (double)data[j];
        const double lim = clip[c];
        d = d < lim ? d : lim;
        if (d != 0.0) {
            atomicAdd(&sums[c], d);
            atomicAdd(&sumsq[c], d * d);
        }
    }
}

// Dense C-contiguous: thread x = column (coalesced reads), block y = a chunk of rows.
template <typename T>
__global__ void dense_clipped_sums(const T* x, long long n_rows, long long n_cols,
                                   long long rows_per_chunk, const double* clip, double* sums,
                                   double* sumsq) {
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_cols) return;
    const long long r0 = (long long)blockIdx.y * rows_per_chunk;
    const long long r1 = r0 + rows_per_chunk < n_rows ? r0 + rows_per_chunk : n_rows;
    const double lim = clip[c];
    double s = 0.0, q = 0.0;
    for (long long r = r0; r < r1; ++r) {
        double d = (double)x[r * n_cols + c];
        d = d < lim ? d : lim;
        s += d;
        q += d * d;
    }
    if (s != 0.0 || q != 0.0) {
        atomicAdd(&sums[c], s);
        atomicAdd(&sumsq[c], q);
    }
}
