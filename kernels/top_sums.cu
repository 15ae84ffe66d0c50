// Sum of the n largest values of each row, for several n at once (ns ascending).
// Values must be finite (callers check) and may be negative (QC takes scaled data, as scanpy
// does). Each value is keyed by its IEEE bits mapped to an unsigned integer that orders like the
// value (non-negative: sign bit set; negative: all bits flipped), so the n-th largest value t is
// found exactly by bisection over that key space; the sum is then
// sum(v > t) + (n - count(v > t)) * t. -0.0 keys just below +0.0, which changes no sum.
// Rows with at most n stored values contribute their whole sum (implicit zeros are not ranked,
// as in scanpy's sparse path).

#include "common.cuh"

template <typename T> struct gsc_key;
template <> struct gsc_key<float> {
    typedef unsigned int type;
    static __device__ __forceinline__ type of(float v) {
        const unsigned int u = __float_as_uint(v);
        return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    }
    static __device__ __forceinline__ float value(type k) {
        return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
    }
};
template <> struct gsc_key<double> {
    typedef unsigned long long type;
    static __device__ __forceinline__ type of(double v) {
        const unsigned long long u = (unsigned long long)__double_as_longlong(v);
        return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
    }
    static __device__ __forceinline__ double value(type k) {
        return __longlong_as_double((long long)((k & 0x8000000000000000ull)
                                                    ? (k & 0x7fffffffffffffffull) : ~k));
    }
};

template <typename T, typename I>
__global__ void row_top_sums(const T* data, const I* indptr, long long n_rows, long long n_cols,
                             const long long* ns, int n_ns, double* out) {
    typedef typename gsc_key<T>::type K;
    const long long r = gsc_warp_row();
    if (r >= n_rows) return;
    const int lane = threadIdx.x % GSC_WARP;
    long long begin, end;
    gsc_row_bounds(indptr, r, n_cols, begin, end);
    const long long len = end - begin;

    double total = 0.0;
    K max_key = 0;
    for (long long j = begin + lane; j < end; j += GSC_WARP) {
        total += (double)data[j];
        const K k = gsc_key<T>::of(data[j]);
        max_key = k > max_key ? k : max_key;
    }
    total = gsc_warp_sum(total);
    max_key = gsc_warp_max(max_key);

    K hi = max_key;  // the threshold for a larger n is never above the one for a smaller n
    for (int i = 0; i < n_ns; ++i) {
        const long long n = ns[i];
        double result = total;
        if (len > n) {
            // largest key k with count(key >= k) >= n: the n-th largest key of the row
            K lo = 0;
            while (lo < hi) {
                const K mid = lo + (hi - lo) / 2 + 1;
                long long count = 0;
                for (long long j = begin + lane; j < end; j += GSC_WARP)
                    count += gsc_key<T>::of(data[j]) >= mid;
                count = gsc_warp_sum(count);
                if (count >= n) lo = mid; else hi = mid - 1;
            }
            const T t = gsc_key<T>::value(lo);
            double above = 0.0;
            long long n_above = 0;
            for (long long j = begin + lane; j < end; j += GSC_WARP) {
                if (data[j] > t) {
                    above += (double)data[j];
                    ++n_above;
                }
            }
            above = gsc_warp_sum(above);
            n_above = gsc_warp_sum(n_above);
            result = above + (double)(n - n_above) * (double)t;
            hi = lo;
        }
        if (lane == 0) out[r * n_ns + i] = result;
    }
}
