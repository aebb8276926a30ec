// kernels/batchnorm.cu — batch normalisation over N·H·W per channel, PyTorch
// semantics, and the conv block's batchnorm fused with the ReLU and 2×2 max-pool
// after it. CPU twin: src/backend/cpu/batchnorm.rs (which accumulates in f64;
// here sums are f32 with a fixed order: per-thread strided sums, then
// ssk_block_sum).
// Shapes: x, y, dy, dx [N, C, HW]; gamma, beta, mean, inv_std, running_*: [C].
//
// Grid of the training kernels: (C, S), block (T): any T a multiple of 32, ≤ 1024
// (launch/batchnorm.rs: 512; the sums' order depends on T). Block (c, s) =
// (blockIdx.x, blockIdx.y) computes channel c's statistics (or gradient sums) over
// the whole channel itself, then does the elementwise part of images
// [s·N/S, (s + 1)·N/S) only. The S blocks of a channel read it redundantly
// (from L2) but need no workspace, no counter and no second launch, and they agree
// bit for bit: the sums depend on threadIdx only, never on s. One block per
// channel (the old grid) left 20 of an H100's 132 SMs busy on conv1, latency-bound.
#include "common.cuh"
#include "pool.cuh"

// Elements a thread loads before it adds them (independent loads in flight).
#define SSK_BN_UNROLL 4

// Calls use(at, v) for the elements i = begin + t, begin + t + T, … < end of
// channel c (t = threadIdx.x, T = blockDim.x; element i is pixel i % HW of image
// i / HW, at ((i / HW)·C + c)·HW + i % HW), in that order, where
// v = load(at, i / HW, i % HW). Loads of SSK_BN_UNROLL elements are issued before
// their uses (no per-element division either).
template <class Load, class Use>
__device__ __forceinline__ void bn_walk(int begin, int end, int C, int c, int HW, const Load& load, const Use& use) {
    const int T = blockDim.x, dn = T / HW, dhw = T % HW;
    int i = begin + threadIdx.x, n = i / HW, hw = i % HW;
    for (; i < end; i += SSK_BN_UNROLL * T) {
        int at[SSK_BN_UNROLL];
        decltype(load(0, 0, 0)) v[SSK_BN_UNROLL] = {};
#pragma unroll
        for (int u = 0; u < SSK_BN_UNROLL; u++) {
            at[u] = (n * C + c) * HW + hw;
            if (i + u * T < end) v[u] = load(at[u], n, hw);
            hw += dhw;
            n += dn;
            if (hw >= HW) hw -= HW, n++;
        }
#pragma unroll
        for (int u = 0; u < SSK_BN_UNROLL; u++)
            if (i + u * T < end) use(at[u], v[u]);
    }
}

// The elements of images [s·N/S, (s + 1)·N/S) of channel c: this block's share.
__device__ __forceinline__ void bn_share(int N, int HW, int& begin, int& end) {
    const int s = blockIdx.y, S = gridDim.y;
    begin = s * N / S * HW;
    end = (s + 1) * N / S * HW;
}

// The training forward's statistics of channel c = blockIdx.x over the whole
// channel: the mean, the biased variance (two passes); block (c, 0)'s thread 0
// writes mean, inv_std = 1/sqrt(var + eps) and updates the running statistics
// (unbiased variance). Every thread gets the normalisation y = x·scale + shift.
// `scratch`: 32 floats of shared memory.
__device__ __forceinline__ void bn_train_affine(const float* __restrict__ x, const float* __restrict__ gamma,
                                                const float* __restrict__ beta, float* __restrict__ mean,
                                                float* __restrict__ inv_std, float* __restrict__ running_mean,
                                                float* __restrict__ running_var, int N, int C, int HW,
                                                float momentum, float eps, float* scratch, float& scale,
                                                float& shift) {
    const int c = blockIdx.x, M = N * HW;
    const auto at_x = [=](int at, int, int) { return x[at]; };
    float s = 0.0f;
    bn_walk(0, M, C, c, HW, at_x, [&](int, float v) { s += v; });
    const float mu = ssk_block_sum(s, scratch) / (float)M;
    float sq = 0.0f;
    bn_walk(0, M, C, c, HW, at_x, [&](int, float v) {
        const float d = v - mu;
        sq += d * d;
    });
    const float var = ssk_block_sum(sq, scratch) / (float)M;
    const float is = 1.0f / sqrtf(var + eps);
    if (blockIdx.y == 0 && threadIdx.x == 0) {
        mean[c] = mu;
        inv_std[c] = is;
        const float unbiased = M > 1 ? var * (float)M / (float)(M - 1) : var;
        running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mu;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
    }
    scale = gamma[c] * is;
    shift = beta[c] - mu * scale;
}

// y = x·scale + shift over this block's share of channel blockIdx.x.
__device__ __forceinline__ void bn_normalise_share(const float* __restrict__ x, float* __restrict__ y, int N,
                                                   int C, int HW, float scale, float shift) {
    int begin, end;
    bn_share(N, HW, begin, end);
    bn_walk(
        begin, end, C, blockIdx.x, HW, [=](int at, int, int) { return x[at]; },
        [=](int at, float v) { y[at] = v * scale + shift; });
}

// Training forward, fused: statistics (bn_train_affine), then the block's share
// normalised. grid (C, S), block (T).
extern "C" __global__ void batchnorm2d_forward_train(const float* __restrict__ x, const float* __restrict__ gamma,
                                                     const float* __restrict__ beta, float* __restrict__ y,
                                                     float* __restrict__ mean, float* __restrict__ inv_std,
                                                     float* __restrict__ running_mean,
                                                     float* __restrict__ running_var, int N, int C, int HW,
                                                     float momentum, float eps) {
    __shared__ float scratch[32];
    float scale, shift;
    bn_train_affine(x, gamma, beta, mean, inv_std, running_mean, running_var, N, C, HW, momentum, eps, scratch,
                    scale, shift);
    bn_normalise_share(x, y, N, C, HW, scale, shift);
}

// The conv block's training forward in one launch: batchnorm2d_forward_train, then
// maxpool2x2_forward of relu(y) (relu_maxpool2x2_forward), bit for bit those two
// kernels. Block (c, s) pools the planes of its own images after a barrier (a
// window reads y written by other threads of the block). x, y: [N, C, H, W] (y
// kept: the backward's pool windows); pooled: [N, C, H/2, W/2].
// grid (C, S), block (T).
extern "C" __global__ void batchnorm2d_relu_maxpool_train(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
    float* __restrict__ y, float* __restrict__ pooled, float* __restrict__ mean, float* __restrict__ inv_std,
    float* __restrict__ running_mean, float* __restrict__ running_var, int N, int C, int H, int W, float momentum,
    float eps) {
    __shared__ float scratch[32];
    const int HW = H * W, OW = W / 2, PW = (H / 2) * OW;
    float scale, shift;
    bn_train_affine(x, gamma, beta, mean, inv_std, running_mean, running_var, N, C, HW, momentum, eps, scratch,
                    scale, shift);
    bn_normalise_share(x, y, N, C, HW, scale, shift);
    __syncthreads();
    if (PW == 0) return;
    int begin, end;
    bn_share(N, PW, begin, end);
    bn_walk(
        begin, end, C, blockIdx.x, PW,
        [=](int, int n, int o) {
            float best;
            window_argmax(y + (size_t)(n * C + blockIdx.x) * HW, W, o / OW, o % OW, 1, &best);
            return best;
        },
        [=](int at, float best) { pooled[at] = best; });
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

// dy and x of one element, as the backward's passes read them.
struct BnGradX {
    float g, x;
};

// The backward's gradient sums of channel c = blockIdx.x, dβ = Σ dy and dγ = Σ dy·x̂
// (x̂ = (x − mu)·is), over the `count` items of the channel that `load` gives as
// BnGradX (`per` of them a plane: elements, or pool windows), in every thread;
// block (c, 0) writes them.
template <class Load>
__device__ __forceinline__ void bn_grad_sums(int count, int C, int per, const Load& load, float mu, float is,
                                             float* __restrict__ dgamma, float* __restrict__ dbeta,
                                             float* scratch, float& sdy, float& sdyxh) {
    const int c = blockIdx.x;
    sdy = 0.0f;
    sdyxh = 0.0f;
    if (per > 0)
        bn_walk(0, count, C, c, per, load, [&](int, BnGradX v) {
            sdy += v.g;
            sdyxh += v.g * (v.x - mu) * is;
        });
    sdy = ssk_block_sum(sdy, scratch);
    sdyxh = ssk_block_sum(sdyxh, scratch);
    if (blockIdx.y == 0 && threadIdx.x == 0) {
        dbeta[c] = sdy;
        dgamma[c] = sdyxh;
    }
}

// dx of an element of input x and gradient g, from the sums: γ·inv_std·(g − dβ/M −
// x̂·dγ/M) with k = γ·inv_std and inv_m = 1/M.
__device__ __forceinline__ float bn_grad_x(float g, float x, float mu, float is, float k, float inv_m, float sdy,
                                           float sdyxh) {
    const float xhat = (x - mu) * is;
    return k * (g - sdy * inv_m - xhat * sdyxh * inv_m);
}

// Backward of the training forward for channel c = blockIdx.x. With
// x̂ = (x − mean)·inv_std, M = N·HW: dβ = Σ dy, dγ = Σ dy·x̂ (over the whole
// channel, in every block; block (c, 0) writes them), then for the block's share
// dx = γ·inv_std·(dy − dβ/M − x̂·dγ/M). dy at element `at` (image n, pixel hw) is
// grad(at, n, hw); the share's pass also calls keep(at, dy) (the fused kernel
// stores it there).
template <class Grad, class Keep>
__device__ __forceinline__ void bn_backward_channel(const float* __restrict__ x, const float* __restrict__ gamma,
                                                    const float* __restrict__ mean,
                                                    const float* __restrict__ inv_std, const Grad& grad,
                                                    const Keep& keep, float* __restrict__ dx,
                                                    float* __restrict__ dgamma, float* __restrict__ dbeta, int N,
                                                    int C, int HW, float* scratch) {
    const int c = blockIdx.x, M = N * HW;
    const float mu = mean[c], is = inv_std[c];
    const auto load = [=](int at, int n, int hw) { return BnGradX{grad(at, n, hw), x[at]}; };
    float sdy, sdyxh;
    bn_grad_sums(M, C, HW, load, mu, is, dgamma, dbeta, scratch, sdy, sdyxh);
    const float k = gamma[c] * is, inv_m = 1.0f / (float)M;
    int begin, end;
    bn_share(N, HW, begin, end);
    bn_walk(begin, end, C, c, HW, load, [=](int at, BnGradX v) {
        keep(at, v.g);
        dx[at] = bn_grad_x(v.g, v.x, mu, is, k, inv_m, sdy, sdyxh);
    });
}

// Backward of the training forward (bn_backward_channel). grid (C, S), block (T).
extern "C" __global__ void batchnorm2d_backward(const float* __restrict__ x, const float* __restrict__ gamma,
                                                const float* __restrict__ mean, const float* __restrict__ inv_std,
                                                const float* __restrict__ dy, float* __restrict__ dx,
                                                float* __restrict__ dgamma, float* __restrict__ dbeta, int N, int C,
                                                int HW) {
    __shared__ float scratch[32];
    bn_backward_channel(
        x, gamma, mean, inv_std, [=](int at, int, int) { return dy[at]; }, [](int, float) {}, dx, dgamma, dbeta,
        N, C, HW, scratch);
}

// The conv block's backward in one launch: relu_maxpool2x2_backward (from the
// pooled gradient dpooled and the forward's BN output y), then batchnorm2d_backward,
// window by window. The pool passes a window's gradient to its first maximum of
// relu(y) only (if that y > 0), so the gradient sums Σ dy, Σ dy·x̂ run over the
// windows (one argmax, dpooled and x at the argmax each: 6 loads where the elements
// took 24 and four divisions), and the block's share writes dy (the pool backward's
// output) and dx for the four elements of each of its windows, then for the elements
// of a dropped odd row or column (dy = 0). The same values as those two kernels,
// the sums in another order (f32: within rounding of them). x, y, dy, dx:
// [N, C, H, W]; dpooled: [N, C, H/2, W/2]. grid (C, S), block (T).
extern "C" __global__ void relu_maxpool_batchnorm2d_backward(
    const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
    const float* __restrict__ inv_std, const float* __restrict__ y, const float* __restrict__ dpooled,
    float* __restrict__ dy, float* __restrict__ dx, float* __restrict__ dgamma, float* __restrict__ dbeta, int N,
    int C, int H, int W) {
    __shared__ float scratch[32];
    const int c = blockIdx.x, HW = H * W, OW = W / 2, PW = (H / 2) * OW, M = N * HW;
    const float mu = mean[c], is = inv_std[c];
    // Window o of image n: its gradient (at its first maximum, `at`: 0..3 row-major)
    // and the offset of its top-left element in the channel's plane.
    struct Window {
        float g;
        int at, corner;
    };
    const auto window = [=](int pooled_at, int n, int o) {
        const int plane = (n * C + c) * HW, corner = 2 * (o / OW) * W + 2 * (o % OW);
        float best;  // relu of the maximum: > 0 exactly when the ReLU passes its gradient
        const int at = window_argmax(y + plane, W, o / OW, o % OW, 1, &best);
        return Window{best > 0.0f ? dpooled[pooled_at] : 0.0f, at, plane + corner};
    };
    // For the sums: the window's gradient and x at its maximum.
    const auto window_gx = [=](int pooled_at, int n, int o) {
        const Window v = window(pooled_at, n, o);
        return BnGradX{v.g, x[v.corner + (v.at >> 1) * W + (v.at & 1)]};
    };
    float sdy, sdyxh;
    bn_grad_sums(N * PW, C, PW, window_gx, mu, is, dgamma, dbeta, scratch, sdy, sdyxh);
    const float k = gamma[c] * is, inv_m = 1.0f / (float)M;
    // dy and dx of an element of gradient g.
    const auto grad_x = [=](int at, float g) {
        dy[at] = g;
        dx[at] = bn_grad_x(g, x[at], mu, is, k, inv_m, sdy, sdyxh);
    };
    int begin, end;
    if (PW > 0) {
        bn_share(N, PW, begin, end);
        bn_walk(begin, end, C, c, PW, window, [=](int, Window v) {
#pragma unroll
            for (int q = 0; q < 4; q++) grad_x(v.corner + (q >> 1) * W + (q & 1), q == v.at ? v.g : 0.0f);
        });
    }
    // The dropped last row (odd H) and last column (odd W) of the share's images.
    const int row = H % 2 ? W : 0, edge = row + (W % 2 ? H - H % 2 : 0);
    if (edge == 0) return;
    bn_share(N, 1, begin, end);
    for (int i = threadIdx.x; i < (end - begin) * edge; i += blockDim.x) {
        const int n = begin + i / edge, e = i % edge;
        const int h = e < row ? H - 1 : e - row, w = e < row ? e : W - 1;
        grad_x((n * C + c) * HW + h * W + w, 0.0f);
    }
}
