// Exact k-nearest-neighbour selection: merge one tile of dot products into each query row's
// running sorted list of the k best (squared distance, index) pairs. Ties: smaller index first.

#include "common.cuh"

__device__ __forceinline__ float gsc_minus_inf(float) { return -__int_as_float(0x7f800000); }
__device__ __forceinline__ double gsc_minus_inf(double) {
    return -__longlong_as_double(0x7ff0000000000000LL);
}

// One warp per query row. `dots` is (n_rows, n_cols) row-major x_r . y_c for the query rows
// row_offset .. and the reference rows col_offset .. col_offset + n_cols - 1; the squared
// distance is (sq_rows[r] + sq_cols[c]) - 2 dots[r, c], formed here so that the tile is read
// once (no distance tile is written). A row's own column gets -inf, so the row itself is always
// a candidate, even behind more than k identical rows. The lanes read 32 consecutive columns at
// a time (coalesced); the few that beat the row's current k-th best are inserted by lane 0 one
// after another in column order, so a later equal distance never displaces an earlier one.
// best_d / best_i are (n_rows, k), sorted ascending, initialised by the caller to +inf / -1.
// NaN never enters. T: value dtype; I: index dtype.
template <typename T, typename I>
__global__ void knn_select(const T* dots, const T* sq_rows, const T* sq_cols, long long n_rows,
                           long long n_cols, long long row_offset, long long col_offset, int k,
                           T* best_d, I* best_i) {
    const long long r = gsc_warp_row();
    if (r >= n_rows) return;  // the whole warp: r is the same on every lane
    const int lane = (int)(threadIdx.x % GSC_WARP);
    const T* row = dots + r * n_cols;
    T* bd = best_d + r * (long long)k;
    I* bi = best_i + r * (long long)k;
    const T sr = sq_rows[r];
    const long long self = row_offset + r - col_offset;  // own column, if inside this tile
    T worst = bd[k - 1];                                 // the bar, the same on every lane
    for (long long c0 = 0; c0 < n_cols; c0 += GSC_WARP) {
        const long long c = c0 + lane;
        T d = worst;
        if (c < n_cols) d = c == self ? gsc_minus_inf(sr) : (sr + sq_cols[c]) - (T)2 * row[c];
        unsigned int take = __ballot_sync(GSC_FULL_MASK, d < worst);
        while (take) {  // uniform across the warp, so every lane meets every shuffle
            const int src = __ffs(take) - 1;
            take &= take - 1;
            const T dc = __shfl_sync(GSC_FULL_MASK, d, src);
            if (lane == 0 && dc < worst) {  // an earlier insert may have lowered the bar
                int pos = k - 1;
                while (pos > 0 && bd[pos - 1] > dc) {
                    bd[pos] = bd[pos - 1];
                    bi[pos] = bi[pos - 1];
                    --pos;
                }
                bd[pos] = dc;
                bi[pos] = (I)(col_offset + c0 + src);
                worst = bd[k - 1];
            }
            worst = __shfl_sync(GSC_FULL_MASK, worst, 0);
        }
    }
}
