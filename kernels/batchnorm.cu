// kernels/batchnorm.cu — batch normalisation over N·H·W per channel, PyTorch
// semantics, and the conv block's batchnorm fused with the ReLU and 2×2 max-pool
// after it. CPU twin: src/backend/cpu/batchnorm.rs (which accumulates in f64;
// here sums are f32 with a fixed tree order: per-thread strided sums, then
// ssk_block_sum).
// Shapes: x, y, dy, dx [N, C, HW]; gamma, beta, mean, inv_std, running_*: [C].
#include "common.cuh"
#include "pool.cuh"

// The training forward's statistics of channel c = blockIdx.x: the mean, the
// biased variance (two passes); thread 0 writes mean, inv_std = 1/sqrt(var + eps)
// and updates the running statistics (unbiased variance). Every thread gets the
// normalisation y = x·scale + shift. `scratch`: 32 floats of shared memory.
__device__ __forceinline__ void bn_train_affine(const float* __restrict__ x, const float* __restrict__ gamma,
                                                const float* __restrict__ beta, float* __restrict__ mean,
                                                float* __restrict__ inv_std, float* __restrict__ running_mean,
                                                float* __restrict__ running_var, int N, int C, int HW,
                                                float momentum, float eps, float* scratch, float& scale,
                                                float& shift) {
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
    scale = gamma[c] * is;
    shift = beta[c] - mu * scale;
}

// y = x·scale + shift over channel blockIdx.x.
__device__ __forceinline__ void bn_normalise_channel(const float* __restrict__ x, float* __restrict__ y, int N,
                                                     int C, int HW, float scale, float shift) {
    const int c = blockIdx.x, M = N * HW;
    for (int i = threadIdx.x; i < M; i += blockDim.x) {
        const int at = ((i / HW) * C + c) * HW + i % HW;
        y[at] = x[at] * scale + shift;
    }
}

// Training forward, fused: one block per channel computes the statistics
// (bn_train_affine), then normalises the channel.
// grid (C), block (256), dynamic shared memory: 32 floats (the block-sum scratch).
extern "C" __global__ void batchnorm2d_forward_train(const float* __restrict__ x, const float* __restrict__ gamma,
                                                     const float* __restrict__ beta, float* __restrict__ y,
                                                     float* __restrict__ mean, float* __restrict__ inv_std,
                                                     float* __restrict__ running_mean,
                                                     float* __restrict__ running_var, int N, int C, int HW,
                                                     float momentum, float eps) {
    SSK_DYNAMIC_SHARED(float, scratch);
    float scale, shift;
    bn_train_affine(x, gamma, beta, mean, inv_std, running_mean, running_var, N, C, HW, momentum, eps, scratch,
                    scale, shift);
    bn_normalise_channel(x, y, N, C, HW, scale, shift);
}

// The conv block's training forward in one launch: batchnorm2d_forward_train, then
// maxpool2x2_forward of relu(y) (relu_maxpool2x2_forward), bit for bit those two
// kernels. The block of channel c pools its own planes after a barrier (a window
// reads y written by other threads of the block). x, y: [N, C, H, W] (y kept: the
// backward's pool windows); pooled: [N, C, H/2, W/2].
// grid (C), block (256), dynamic shared memory: 32 floats.
extern "C" __global__ void batchnorm2d_relu_maxpool_train(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    float* __restrict__ y, float* __restrict__ pooled, float* __restrict__ mean, float* __restrict__ inv_std,
    float* __restrict__ running_mean, float* __restrict__ running_var, int N, int C, int H, int W, float momentum,
    float eps) {
    SSK_DYNAMIC_SHARED(float, scratch);
    const int c = blockIdx.x, HW = H * W, OW = W / 2, PW = (H / 2) * OW;
    float scale, shift;
    bn_train_affine(x, gamma, beta, mean, inv_std, running_mean, running_var, N, C, HW, momentum, eps, scratch,
                    scale, shift);
    bn_normalise_channel(x, y, N, C, HW, scale, shift);
    __syncthreads();
    for (int i = threadIdx.x; i < N * PW; i += blockDim.x) {
        const int plane = (i / PW) * C + c, o = i % PW;
        float best;
        window_argmax(y + (size_t)plane * HW, W, o / OW, o % OW, 1, &best);
        pooled[(size_t)plane * PW + o] = best;
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

// Backward of the training forward for channel c = blockIdx.x. With
// x̂ = (x − mean)·inv_std, M = N·HW: dβ = Σ dy, dγ = Σ dy·x̂,
// dx = γ·inv_std·(dy − dβ/M − x̂·dγ/M). Pass 1 takes dy at element `at` (the i-th
// of the channel, in image n, pixel hw) from grad(at, n, hw); pass 2 reads it back
// from dy_again[at], which holds it by then (written by this thread if grad does).
template <class Grad>
__device__ __forceinline__ void bn_backward_channel(const float* __restrict__ x, const float* __restrict__ gamma,
                                                    const float* __restrict__ mean,
                                                    const float* __restrict__ inv_std, const Grad& grad,
                                                    const float* dy_again, float* __restrict__ dx,
                                                    float* __restrict__ dgamma, float* __restrict__ dbeta, int N,
                                                    int C, int HW, float* scratch) {
    const int c = blockIdx.x, M = N * HW;
    const float mu = mean[c], is = inv_std[c];
    float sdy = 0.0f, sdyxh = 0.0f;
    for (int i = threadIdx.x; i < M; i += blockDim.x) {
        const int at = ((i / HW) * C + c) * HW + i % HW;
        const float g = grad(at, i / HW, i % HW);
        sdy += g;
        sdyxh += g * (x[at] - mu) * is;
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
        dx[at] = k * (dy_again[at] - sdy * inv_m - xhat * sdyxh * inv_m);
    }
}

// Backward of the training forward, fused per channel (bn_backward_channel).
// grid (C), block (256).
extern "C" __global__ void batchnorm2d_backward(const float* __restrict__ x, const float* __restrict__ gamma,
                                                const float* __restrict__ mean, const float* __restrict__ inv_std,
                                                const float* __restrict__ dy, float* __restrict__ dx,
                                                float* __restrict__ dgamma, float* __restrict__ dbeta, int N, int C,
                                                int HW) {
    __shared__ float scratch[32];
    bn_backward_channel(
        x, gamma, mean, inv_std, [=](int at, int, int) { return dy[at]; }, dy, dx, dgamma, dbeta, N, C, HW,
        scratch);
}

// The conv block's backward in one launch: relu_maxpool2x2_backward (from the
// pooled gradient dpooled and the forward's BN output y), then batchnorm2d_backward,
// bit for bit those two kernels. Pass 1 computes each element's gradient at y by the
// pool's rule and writes it to dy (the pool backward's output, kept: pass 2 reads
// its own thread's elements back). x, y, dy, dx: [N, C, H, W]; dpooled:
// [N, C, H/2, W/2]. grid (C), block (256).
extern "C" __global__ void relu_maxpool_batchnorm2d_backward(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ inv_std, const float* __restrict__ y, const float* __restrict__ dpooled, float* dy, float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta, int N,
    int C, int H, int W) {
    __shared__ float scratch[32];
    const int c = blockIdx.x, HW = H * W, PW = (H / 2) * (W / 2);
    const auto grad = [=](int at, int n, int hw) {
        const int plane = n * C + c;
        const float g = maxpool2x2_grad_at(y + (size_t)plane * HW, dpooled + (size_t)plane * PW, H, W, hw / W,
                                           hw % W, 1);
        dy[at] = g;
        return g;
    };
    bn_backward_channel(x, gamma, mean, inv_std, grad, dy, dx, dgamma, dbeta, N, C, HW, scratch);
}
