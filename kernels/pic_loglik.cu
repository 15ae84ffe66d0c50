// PIC x pair log-likelihood with per-pair alpha maximised (safeguarded Newton in [0, 1]).
// One block per PIC (CSR row), pairs j = ia + ka * ib across threads; float64 accumulation.
// pa: genes x ka, pb: genes x kb (row-major, value type T). ll/alpha: n_rows x (ka * kb).

#include "common.cuh"

template <typename T, typename I>
__global__ void pic_loglik(const T* data, const I* indices, const I* indptr, long long n_rows,
                           const T* pa, const T* pb, long long ka, long long kb, double eps,
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
            g0 += u * (a - b) / (b + eps);
            g1 += u * (a - b) / (a + eps);
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
                    const double d = a - b, x = al * d + b + eps;
                    gr += u * d / x;
                    h -= u * d * d / (x * x);
                }
                if (gr > 0.0) lo = al; else hi = al;
                double nw = (h < 0.0) ? al - gr / h : 0.5 * (lo + hi);
                if (!(nw > lo && nw < hi)) nw = 0.5 * (lo + hi);
                const double step = fabs(nw - al);
                al = nw;
                if (step < 1e-12) break;
            }
        }
        double s = 0.0;
        for (long long e = begin; e < end; ++e) {
            const long long g = (long long)indices[e];
            const double a = (double)pa[g * ka + ia], b = (double)pb[g * kb + ib];
            s += (double)data[e] * log(al * (a - b) + b + eps);
        }
        ll[r * n_pairs + j] = s;
        alpha[r * n_pairs + j] = al;
    }
}
