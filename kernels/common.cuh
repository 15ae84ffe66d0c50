// Shared device helpers, textually included by each kernel file (see gpu_sc/_kernels.py).
// Rows are either CSR rows or rows of a C-contiguous dense matrix: a null `indptr` means dense,
// row r then spans [r * n_cols, (r + 1) * n_cols) and the column of element j is j - begin.

#define GSC_WARP 32
#define GSC_FULL_MASK 0xffffffffu

template <typename I>
__device__ __forceinline__ void gsc_row_bounds(const I* indptr, long long r, long long n_cols,
                                               long long& begin, long long& end) {
    if (indptr) {
        begin = (long long)indptr[r];
        end = (long long)indptr[r + 1];
    } else {
        begin = r * n_cols;
        end = begin + n_cols;
    }
}

// A value's square in float64: a float's rounded to float (as numpy's x * x of a float32 matrix,
// which scanpy's statistics sum), a double's to double (the kernels take only these two).
template <typename T>
__device__ __forceinline__ double gsc_square(T v) {
    return (double)v * (double)v;
}

template <>
__device__ __forceinline__ double gsc_square<float>(float v) {
    return (double)(v * v);
}

template <typename I>
__device__ __forceinline__ long long gsc_column(const I* indices, long long j, long long begin) {
    return indices ? (long long)indices[j] : j - begin;
}

// One warp per row: the global warp index is the row, the lane strides over the row.
__device__ __forceinline__ long long gsc_warp_row() {
    return ((long long)blockIdx.x * blockDim.x + threadIdx.x) / GSC_WARP;
}

template <typename A>
__device__ __forceinline__ A gsc_warp_sum(A v) {
    for (int offset = GSC_WARP / 2; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(GSC_FULL_MASK, v, offset);
    return v;  // every lane holds the total
}

template <typename A>
__device__ __forceinline__ A gsc_warp_max(A v) {
    for (int offset = GSC_WARP / 2; offset > 0; offset >>= 1) {
        A other = __shfl_xor_sync(GSC_FULL_MASK, v, offset);
        v = other > v ? other : v;
    }
    return v;
}
