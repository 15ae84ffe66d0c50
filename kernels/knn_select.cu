// Exact k-nearest-neighbour selection: merge one tile of squared distances into each query
// row's running sorted list of the k best (distance, index) pairs. Ties: smaller index first.

#include "common.cuh"

// One thread per query row. `tile` is (n_rows, n_cols) row-major squared distances to the
// reference rows col_offset .. col_offset + n_cols - 1 (visited in ascending index order, so a
// later equal distance never displaces an earlier one). best_d / best_i are (n_rows, k), sorted
// ascending, initialised by the caller to +inf / -1. T: tile dtype; I: index dtype.
template <typename T, typename I>
__global__ void knn_select(const T* tile, long long n_rows, long long n_cols,
                           long long col_offset, int k, T* best_d, I* best_i) {
    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n_rows) return;
    const T* row = tile + r * n_cols;
    T* bd = best_d + r * (long long)k;
    I* bi = best_i + r * (long long)k;
    T worst = bd[k - 1];
    for (long long c = 0; c < n_cols; ++c) {
        const T d = row[c];
        if (!(d < worst)) continue;  // also skips NaN
        int pos = k - 1;
        while (pos > 0 && bd[pos - 1] > d) {
            bd[pos] = bd[pos - 1];
            bi[pos] = bi[pos - 1];
            --pos;
        }
        bd[pos] = d;
        bi[pos] = (I)(col_offset + c);
        worst = bd[k - 1];
    }
}
