// kernels/pool.cu — ReLU and 2×2 max-pooling (stride 2), PyTorch semantics.
// CPU twin: src/backend/cpu/pool.rs. All elementwise / one thread per element,
// grid-stride loops: grid (any), block (256).
#include "common.cuh"
#include "pool.cuh"

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
        dx[i] = maxpool2x2_grad_at(x + (size_t)plane * H * W, dy + (size_t)plane * OH * OW, H, W, hw / W, hw % W,
                                   relu);
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
