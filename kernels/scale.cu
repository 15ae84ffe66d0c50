// Row scaling in place: x[r, :] /= divisors[r]; rows with a zero divisor are left unchanged
// (scanpy's normalize_total does the same for cells without counts). Division, not
// multiplication by a reciprocal, so that float32 results equal the CPU path bit for bit; in
// the wider of the value and divisor types, rounded once to the value type, as NumPy's in-place
// division of float32 values by float64 divisors does.

#include "common.cuh"

template <typename T, typename I, typename D>
__global__ void divide_rows(T* data, const I* indptr, long long n_rows, long long n_cols,
                            const D* divisors) {
    const long long r = gsc_warp_row();
    if (r >= n_rows) return;
    const D d = divisors[r];
    if (d == D(0)) return;
    const int lane = threadIdx.x % GSC_WARP;
    long long begin, end;
    gsc_row_bounds(indptr, r, n_cols, begin, end);
    for (long long j = begin + lane; j < end; j += GSC_WARP) data[j] = T(data[j] / d);
}
