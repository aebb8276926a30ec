// kernels/dropout.cu — inverted dropout. CPU twin: src/backend/cpu/dropout.rs.
// The mask is a function of (key, index) only, so every device drops the same
// elements: ssk_dropout_hash is the same integer steps as backend::dropout_hash.
// Elementwise, grid-stride: grid (any), block (256).
#include "common.cuh"

__device__ __forceinline__ unsigned ssk_dropout_hash(unsigned key, unsigned i) {
    unsigned x = (i * 0x9E3779B9u) ^ key;
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return x ^ (x >> 16);
}

// Element i is kept when hash(key, i) >= threshold (= p·2³², both unsigned, passed
// as int bits); mask[i] = kept ? scale : 0 with scale = 1/(1−p); y = x·mask.
// x, mask, y: [n].
extern "C" __global__ void dropout_forward(const float* __restrict__ x, float* __restrict__ mask,
                                           float* __restrict__ y, int key, int threshold, float scale, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const bool kept = ssk_dropout_hash((unsigned)key, (unsigned)i) >= (unsigned)threshold;
        const float m = kept ? scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

// dx = dy·mask. mask, dy, dx: [n].
extern "C" __global__ void dropout_backward(const float* __restrict__ mask, const float* __restrict__ dy,
                                            float* __restrict__ dx, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dx[i] = dy[i] * mask[i];
}
