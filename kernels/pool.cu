// kernels/pool.cu — ReLU and 2×2 max-pooling (stride 2), PyTorch semantics.
// CPU twin: src/backend/cpu/pool.rs. All elementwise / one thread per element,
// grid-stride loops: grid (any), block (256).
#include "common.cuh"

// x, y: [n]; y = max(x, 0).
extern "C" __global__ void relu_forward(const float* __restrict__ x, float* __restrict__ y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// y, dy, dx: [n]; dx = dy where the forward output y > 0, else 0.
extern "C" __global__ void relu_backward(const float* __restrict__ y, const float* __restrict__ dy,
                                         float* __restrict__ dx, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// ReLU, as relu_forward computes it (NaN → 0).
__device__ __forceinline__ float relu_of(float x) { return x > 0.0f ? x : 0.0f; }

// Position (0..3, row-major) of the first maximum of the window at (oy, ox) of a
// [H, W] plane (of relu(x) when `relu`): a later element wins only if strictly
// greater, or NaN (as PyTorch's CPU kernel).
__device__ __forceinline__ int window_argmax(const float* __restrict__ plane, int W, int oy, int ox, int relu,
                                             float* best_out) {
    const float* r0 = plane + (2 * oy) * W + 2 * ox;
    float v[4] = {r0[0], r0[1], r0[W], r0[W + 1]};
    if (relu)
        for (int i = 0; i < 4; i++) v[i] = relu_of(v[i]);
    float best = v[0];
    int at = 0;
    for (int i = 1; i < 4; i++) {
        if (v[i] > best || v[i] != v[i]) {
            best = v[i];
            at = i;
        }
    }
    *best_out = best;
    return at;
}

// x: [planes, H, W] → y: [planes, H/2, W/2] (an odd last row/column is dropped).
// One thread per output element. `relu`: pools relu(x) (the ReLU before the pool,
// fused: relu_forward then this kernel, bit for bit).
extern "C" __global__ void maxpool2x2_forward(const float* __restrict__ x, float* __restrict__ y, int planes,
                                              int H, int W, int relu) {
    const int OH = H / 2, OW = W / 2, total = planes * OH * OW;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int plane = i / (OH * OW), o = i % (OH * OW);
        float best;
        window_argmax(x + (size_t)plane * H * W, W, o / OW, o % OW, relu, &best);
        y[i] = best;
    }
}

// x, dx: [planes, H, W]; dy: [planes, H/2, W/2]. One thread per *input* element:
// it receives dy of its window if it is the window's first maximum, else 0, so
// every dx element is written exactly once (no atomics, no zero-fill pass).
// `relu`: x is the fused ReLU's input; the windows are of relu(x) and dx is then
// also through relu_backward (0 where x is not > 0).
extern "C" __global__ void maxpool2x2_backward(const float* __restrict__ x, const float* __restrict__ dy,
                                               float* __restrict__ dx, int planes, int H, int W, int relu) {
    const int OH = H / 2, OW = W / 2, total = planes * H * W;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int plane = i / (H * W), hw = i % (H * W);
        const int h = hw / W, w = hw % W, oy = h / 2, ox = w / 2;
        float g = 0.0f;
        if (oy < OH && ox < OW) {
            float best;
            const int at = window_argmax(x + (size_t)plane * H * W, W, oy, ox, relu, &best);
            if (at == (h % 2) * 2 + (w % 2)) g = dy[(size_t)plane * OH * OW + oy * OW + ox];
        }
        dx[i] = (relu && !(x[i] > 0.0f)) ? 0.0f : g;
    }
}

// Global average pooling: x [planes, hw] → y [planes], each plane summed in order
// then scaled by 1/hw (scale = 1/hw in f32, from the host). One thread per plane.
extern "C" __global__ void global_avgpool_forward(const float* __restrict__ x, float* __restrict__ y,
                                                  int planes, int hw, float scale) {
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < planes; p += gridDim.x * blockDim.x) {
        const float* xp = x + (size_t)p * hw;
        float sum = 0.0f;
        for (int i = 0; i < hw; i++) sum += xp[i];
        y[p] = sum * scale;
    }
}

// dx [planes, hw] = dy[plane]·scale. One thread per element of dx.
extern "C" __global__ void global_avgpool_backward(const float* __restrict__ dy, float* __restrict__ dx,
                                                   int planes, int hw, float scale) {
    const int n = planes * hw;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dx[i] = dy[i / hw] * scale;
}
