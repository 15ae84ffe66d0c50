// PIC x pair log-likelihood: one block per PIC (CSR row), pairs j = ia + ka * ib across threads.
// LL(a, b, alpha) = sum over the PIC's nonzeros g of u_g log(alpha P[g,a] + (1-alpha) P[g,b] + eps),
// accumulated in float64 whatever the value types. pa: genes x ka, pb: genes x kb (row-major,
// value type P); counts of value type T; ll/alpha: n_rows x (ka * kb), float64.
//
// The CPU engine (gpu_sc/_ops/pic_loglik.py, numba) performs exactly the same IEEE operations in the
// same order, log included (gsc_pic_log below is `log` of gpu_sc/_ops/_numba_log.py), so the two
// agree bit for bit. Every product that the compiler could contract with a neighbouring add into
// an FMA is therefore written with __dmul_rn / __dadd_rn, which are never contracted (numba does not
// contract either).

#include "common.cuh"

#define GSC_PIC_INF __longlong_as_double(0x7FF0000000000000LL)

// Natural log within 1 ulp, operation for operation the CPU engine's `_log`: x = 2^e m with
// m in [sqrt(1/2), sqrt(2)), f = m - 1, s = f / (2 + f), log(m) = f - f^2/2 + s (f^2/2 + R),
// R = sum_{k=1..13} 2 s^(2k) / (2k + 1); log 2 = head (21 bits) + tail.
__device__ __forceinline__ double gsc_pic_log(double x) {
    if (!(x > 0.0 && x < GSC_PIC_INF)) {  // 0 -> -inf, inf -> inf, negative or nan -> nan
        return x == 0.0 ? -GSC_PIC_INF : (x > 0.0 ? x : __longlong_as_double(0x7FF8000000000000LL));
    }
    const bool sub = x < 2.2250738585072014e-308;  // subnormal: scale by 2^54 first
    const long long bits = __double_as_longlong(__dmul_rn(x, sub ? 18014398509481984.0 : 1.0));
    long long mb = (bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL;
    const long long big = mb > 0x3FF6A09E667F3BCDLL ? 1LL : 0LL;  // m > sqrt(2): halve it
    mb -= big << 52;
    const double de = (double)((bits >> 52) - 1023LL + big - (sub ? 54LL : 0LL));
    const double f = __longlong_as_double(mb) - 1.0;
    const double s = f / (2.0 + f);
    const double z = __dmul_rn(s, s);
    double r = __dadd_rn(__dmul_rn(0.07407407407407407, z), 0.08);
    r = __dadd_rn(__dmul_rn(r, z), 0.08695652173913043);
    r = __dadd_rn(__dmul_rn(r, z), 0.09523809523809523);
    r = __dadd_rn(__dmul_rn(r, z), 0.10526315789473684);
    r = __dadd_rn(__dmul_rn(r, z), 0.11764705882352941);
    r = __dadd_rn(__dmul_rn(r, z), 0.13333333333333333);
    r = __dadd_rn(__dmul_rn(r, z), 0.15384615384615385);
    r = __dadd_rn(__dmul_rn(r, z), 0.18181818181818182);
    r = __dadd_rn(__dmul_rn(r, z), 0.2222222222222222);
    r = __dadd_rn(__dmul_rn(r, z), 0.2857142857142857);
    r = __dadd_rn(__dmul_rn(r, z), 0.4);
    r = __dadd_rn(__dmul_rn(r, z), 0.6666666666666666);
    const double hfsq = __dmul_rn(__dmul_rn(0.5, f), f);
    const double inner = __dadd_rn(__dmul_rn(s, __dadd_rn(hfsq, __dmul_rn(z, r))),
                                   __dmul_rn(de, 4.7493250390316726e-07));
    return __dadd_rn(__dmul_rn(de, 0.6931467056274414), f - (hfsq - inner));
}

// Per-pair alpha maximised in [0, 1]: boundary tests on the slope at 0 and 1, then bracketed
// Newton from 0.5 (a step leaving the bracket moves 1/32 of it toward the end it points to),
// at most n_iter steps, stop when a step < 1e-12.
template <typename T, typename P, typename I>
__global__ void pic_loglik(const T* data, const I* indices, const I* indptr, long long n_rows,
                           const P* pa, const P* pb, long long ka, long long kb, double eps,
                           int n_iter, double* ll, double* alpha) {
    const long long r = blockIdx.x;
    if (r >= n_rows) return;
    const long long begin = (long long)indptr[r], end = (long long)indptr[r + 1];
    const long long n_pairs = ka * kb;
    for (long long j = threadIdx.x; j < n_pairs; j += blockDim.x) {
        const long long ia = j % ka, ib = j / ka;
        double g0 = 0.0, g1 = 0.0;
        for (long long e = begin; e < end; ++e) {
            const long long g = (long long)indices[e];
            const double u = (double)data[e];
            const double a = (double)pa[g * ka + ia], b = (double)pb[g * kb + ib];
            const double d = a - b, be = b + eps;
            const double ud = __dmul_rn(u, d);
            g0 += ud / be;
            g1 += ud / (d + be);
        }
        double al;
        if (g0 <= 0.0) {
            al = 0.0;
        } else if (g1 >= 0.0) {
            al = 1.0;
        } else {
            double lo = 0.0, hi = 1.0;
            al = 0.5;
            for (int it = 0; it < n_iter; ++it) {
                double gr = 0.0, h = 0.0;
                for (long long e = begin; e < end; ++e) {
                    const long long g = (long long)indices[e];
                    const double u = (double)data[e];
                    const double a = (double)pa[g * ka + ia], b = (double)pb[g * kb + ib];
                    const double d = a - b, be = b + eps;
                    const double t = d / (__dmul_rn(al, d) + be);
                    const double ut = __dmul_rn(u, t);
                    gr += ut;
                    h -= __dmul_rn(ut, t);
                }
                if (gr > 0.0) lo = al; else hi = al;
                double nw = (h < 0.0) ? al - gr / h : 0.5 * (lo + hi);
                if (!(nw > lo && nw < hi)) {
                    // Newton left the bracket: the root is near the end it points to (an
                    // optimum close to 0 or 1); move 1/32 of the bracket toward that end
                    const double w = __dmul_rn(0.03125, hi - lo);  // exact: a power of two
                    nw = (nw <= lo) ? lo + w : hi - w;
                }
                const double step = fabs(nw - al);
                al = nw;
                if (step < 1e-12) break;
            }
        }
        double s = 0.0;
        for (long long e = begin; e < end; ++e) {
            const long long g = (long long)indices[e];
            const double u = (double)data[e];
            const double a = (double)pa[g * ka + ia], b = (double)pb[g * kb + ib];
            const double d = a - b, be = b + eps;
            s += __dmul_rn(u, gsc_pic_log(__dmul_rn(al, d) + be));
        }
        ll[r * n_pairs + j] = s;
        alpha[r * n_pairs + j] = al;
    }
}

// Fixed alpha per PIC (alpha[r], float64): the published exhaustive search.
// x = alpha * a + (1 - alpha) * b + eps, in that order.
template <typename T, typename P, typename I>
__global__ void pic_loglik_fixed(const T* data, const I* indices, const I* indptr,
                                 long long n_rows, const P* pa, const P* pb, long long ka,
                                 long long kb, double eps, const double* alpha, double* ll) {
    const long long r = blockIdx.x;
    if (r >= n_rows) return;
    const long long begin = (long long)indptr[r], end = (long long)indptr[r + 1];
    const long long n_pairs = ka * kb;
    const double al = alpha[r], om = 1.0 - al;
    for (long long j = threadIdx.x; j < n_pairs; j += blockDim.x) {
        const long long ia = j % ka, ib = j / ka;
        double s = 0.0;
        for (long long e = begin; e < end; ++e) {
            const long long g = (long long)indices[e];
            const double u = (double)data[e];
            const double a = (double)pa[g * ka + ia], b = (double)pb[g * kb + ib];
            const double x = (__dmul_rn(al, a) + __dmul_rn(om, b)) + eps;
            s += __dmul_rn(u, gsc_pic_log(x));
        }
        ll[r * n_pairs + j] = s;
    }
}
