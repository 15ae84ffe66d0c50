// Per-row reductions: sums (float64 accumulation) and nonzero counts, optionally over a subset
// of columns; and the flag "some row holds more than its limit in this column".

#include "common.cuh"

// sums[r] = sum over masked columns of x[r, c]; nnz[r] = number of those entries != 0.
// col_mask may be null (all columns).
template <typename T, typename I>
__global__ void row_sums(const T* data, const I* indices, const I* indptr, long long n_rows,
                         long long n_cols, const unsigned char* col_mask, double* sums,
                         long long* nnz) {
    const long long r = gsc_warp_row();
    if (r >= n_rows) return;  // r is the same for the whole warp
    const int lane = threadIdx.x % GSC_WARP;
    long long begin, end;
    gsc_row_bounds(indptr, r, n_cols, begin, end);
    double s = 0.0;
    long long c = 0;
    for (long long j = begin + lane; j < end; j += GSC_WARP) {
        if (col_mask && !col_mask[gsc_column(indices, j, begin)]) continue;
        const T v = data[j];
        s += (double)v;
        c += (v != T(0));
    }
    s = gsc_warp_sum(s);
    c = gsc_warp_sum(c);
    if (lane == 0) {
        sums[r] = s;
        nnz[r] = c;
    }
}

// flags[c] = 1 where some row r has x[r, c] > limits[r] (flags must be zeroed by the caller).
template <typename T, typename I>
__global__ void flag_cols_above(const T* data, const I* indices, const I* indptr,
                                long long n_rows, long long n_cols, const double* limits,
                                int* flags) {
    const long long r = gsc_warp_row();
    if (r >= n_rows) return;
    const int lane = threadIdx.x % GSC_WARP;
    long long begin, end;
    gsc_row_bounds(indptr, r, n_cols, begin, end);
    const double limit = limits[r];
    for (long long j = begin + lane; j < end; j += GSC_WARP)
        if ((double)data[j] > limit) flags[gsc_column(indices, j, begin)] = 1;
}
