// kernels/batchnorm.cu — batch normalisation over N·H·W per channel, PyTorch
// semantics. CPU twin: src/backend/cpu/batchnorm.rs (which accumulates in f64;
// here sums are f32 with a fixed tree order: per-thread strided sums, then
// ssk_block_sum).
// Shapes: x, y, dy, dx [N, C, HW]; gamma, beta, mean, inv_std, running_*: [C].
#include "common.cuh"

// Training forward, fused: one block per channel computes the mean, the biased
// variance (two passes), writes mean, inv_std = 1/sqrt(var + eps), updates the
// running statistics (unbiased variance), then normalises the channel.
// grid (C), block (256), dynamic shared memory: 32 floats (the block-sum scratch).
extern "C" __global__ void batchnorm2d_forward_train(const float* __restrict__ x, const float* __restrict__ gamma,
                                                     const float* __restrict__ beta, float* __restrict__ y,
                                                     float* __restrict__ mean, float* __restrict__ inv_std,
                                                     float* __restrict__ running_mean,
                                                     float* __restrict__ running_var, int N, int C, int HW,
                                                     float momentum, float eps) {
    SSK_DYNAMIC_SHARED(float, scratch);
    const int c = blockIdx.x, M = N * HW;
    float s = 0.0f;
    for (int i = threadIdx.x; i < M; i += blockDim.x) s += x[((i / HW) * C + c) * HW + i % HW];
    const float mu = ssk_block_sum(s, scratch) / (float)M;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < M; i += blockDim.x) {
        const float d = x[((i / HW) * C + c) * HW + i % HW] - mu;
        sq += d * d;
    }
    const float var = ssk_block_sum(sq, scratch) / (float)M;
    const float is = 1.0f / sqrtf(var + eps);
    if (threadIdx.x == 0) {
        mean[c] = mu;
        inv_std[c] = is;
        const float unbiased = M > 1 ? var * (float)M / (float)(M - 1) : var;
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mu;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
    }
    const float scale = gamma[c] * is, shift = beta[c] - mu * scale;
    for (int i = threadIdx.x; i < M; i += blockDim.x) {
        const int at = ((i / HW) * C + c) * HW + i % HW;
        y[at] = x[at] * scale + shift;
    }
}

// Evaluation forward with the running statistics. Elementwise over [N, C, HW],
// grid-stride: grid (any), block (256).
extern "C" __global__ void batchnorm2d_forward_eval(const float* __restrict__ x, const float* __restrict__ gamma,
                                                    const float* __restrict__ beta,
                                                    const float* __restrict__ running_mean,
                                                    const float* __restrict__ running_var, float* __restrict__ y,
                                                    int N, int C, int HW, float eps) {
    const int total = N * C * HW;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int c = (i / HW) % C;
        const float scale = gamma[c] / sqrtf(running_var[c] + eps);
        const float shift = beta[c] - running_mean[c] * scale;
        y[i] = x[i] * scale + shift;
    }
}

// Backward of the training forward, fused per channel. With x̂ = (x − mean)·inv_std,
// M = N·HW: dβ = Σ dy, dγ = Σ dy·x̂, dx = γ·inv_std·(dy − dβ/M − x̂·dγ/M).
// grid (C), block (256).
extern "C" __global__ void batchnorm2d_backward(const float* __restrict__ x, const float* __restrict__ gamma,
                                                const float* __restrict__ mean, const float* __restrict__ inv_std,
                                                const float* __restrict__ dy, float* __restrict__ dx,
                                                float* __restrict__ dgamma, float* __restrict__ dbeta, int N, int C,
                                                int HW) {
    __shared__ float scratch[32];
    const int c = blockIdx.x, M = N * HW;
    const float mu = mean[c], is = inv_std[c];
    float sdy = 0.0f, sdyxh = 0.0f;
    for (int i = threadIdx.x; i < M; i += blockDim.x) {
        const int at = ((i / HW) * C + c) * HW + i % HW;
        sdy += dy[at];
        sdyxh += dy[at] * (x[at] - mu) * is;
    }
    sdy = ssk_block_sum(sdy, scratch);
    sdyxh = ssk_block_sum(sdyxh, scratch);
    if (threadIdx.x == 0) {
        dbeta[c] = sdy;
        dgamma[c] = sdyxh;
    }
    const float k = gamma[c] * is, inv_m = 1.0f / (float)M;
    for (int i = threadIdx.x; i < M; i += blockDim.x) {
        const int at = ((i / HW) * C + c) * HW + i % HW;
        const float xhat = (x[at] - mu) * is;
        dx[at] = k * (dy[at] - sdy * inv_m - xhat * sdyxh * inv_m);
    }
}
