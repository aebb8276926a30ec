// kernels/memory.cu — memory ops and the ordered sum of partials.
// CPU twins: Backend::axpy and Memory::compact_rows in src/backend/cpu/mod.rs; the
// partial sums mirror the chunked reductions of src/backend/cpu/conv.rs.
#include "common.cuh"

// y[i] = value for i < n. Grid-stride: grid (any), block (256).
extern "C" __global__ void ssk_fill(float* __restrict__ y, float value, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = value;
}

// y[i] += alpha · x[i] for i < n. Grid-stride: grid (any), block (256).
extern "C" __global__ void ssk_axpy(float* __restrict__ y, const float* __restrict__ x, float alpha, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] += alpha * x[i];
}

// dst row i = src row keep.of[i] (row_len floats each): the branches a prune keeps,
// gathered into a buffer of their size (Memory::compact_rows). Not in place: blocks
// run in any order, and row keep.of[i] → i may overwrite a row another block still
// reads. grid (any, rows kept), block (256); grid-stride along the row.
extern "C" __global__ void ssk_gather_rows(const float* __restrict__ src, float* __restrict__ dst, BranchMap keep,
                                           int row_len) {
    const float* from = src + (size_t)keep.of[blockIdx.y] * row_len;
    float* to = dst + (size_t)blockIdx.y * row_len;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < row_len; j += gridDim.x * blockDim.x) to[j] = from[j];
}
