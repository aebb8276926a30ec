// kernels/optim.cu — optimiser steps, torch.optim semantics (no weight decay).
// CPU twin: src/backend/cpu/optim.rs (same operation order per element).
//
// The per-step values live on the device, in the step state `hyper` (backend::Hyper:
// [0] the step counter t, a float exact to 2^24, [1] lr, [2] the step size,
// [3] Adam's sqrt(1 − β2^t)), so one recorded launch program is valid at every step:
// `optim_prepare` advances it, the update kernels read it.
#include "common.cuh"

// β^t as Rust's f64::powi computes it (compiler-builtins' __powidf2: binary powering,
// the multiplications in the same order), so the device's bias corrections have the
// host's bits.
__device__ __forceinline__ double ssk_powi(double a, int t) {
    double r = 1.0;
    for (unsigned n = (unsigned)t;;) {
        if (n & 1u) r *= a;
        n >>= 1;
        if (n == 0) break;
        a *= a;
    }
    return r;
}

// One thread: t += 1; step size = lr (SGD) or lr/(1 − β1^t) with sqrt(1 − β2^t) (Adam),
// in double as PyTorch computes them in Python floats. grid (1), block (1).
extern "C" __global__ void optim_prepare(float* __restrict__ hyper, float beta1, float beta2,
                                         int adam) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const int t = (int)hyper[0] + 1;
    hyper[0] = (float)t;
    const float lr = hyper[1];
    if (adam) {
        const double bc1 = 1.0 - ssk_powi((double)beta1, t);
        const double bc2 = 1.0 - ssk_powi((double)beta2, t);
        hyper[2] = (float)((double)lr / bc1);
        hyper[3] = (float)sqrt(bc2);
    } else {
        hyper[2] = lr;
        hyper[3] = 1.0f;
    }
}

// The multi-tensor updates: one launch updates every tensor of an SskTensorList
// (common.cuh), block b working on elements [k·SSK_CHUNK, (k + 1)·SSK_CHUNK) of the
// tensor ssk_tensor_of(b), k = b − first_block. Each element's arithmetic is the
// single-tensor update's, in the CPU's order. grid (first_block[count]), block (256).

// SGD with momentum: v = μ·v + g; p −= lr·v (lr = hyper[2]); velocity = state0.
extern "C" __global__ void sgd_step(SskTensorList list, const float* __restrict__ hyper,
                                    float momentum) {
    const int t = ssk_tensor_of(list, blockIdx.x);
    float* __restrict__ param = list.param[t];
    const float* __restrict__ grad = list.grad[t];
    float* __restrict__ velocity = list.state0[t];
    const int begin = ((int)blockIdx.x - list.first_block[t]) * SSK_CHUNK;
    const int end = list.len[t] < begin + SSK_CHUNK ? list.len[t] : begin + SSK_CHUNK;
    const float lr = hyper[2];
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float v = momentum * velocity[i] + grad[i];
        velocity[i] = v;
        param[i] -= lr * v;
    }
}

// Adam: m += (1−β1)(g − m); v = β2·v + (1−β2)·g²; p −= step_size·m / (sqrt(v)/bc2_sqrt + eps),
// with step_size = hyper[2] and bc2_sqrt = hyper[3] (optim_prepare); m = state0, v = state1.
extern "C" __global__ void adam_step(SskTensorList list, const float* __restrict__ hyper,
                                     float beta1, float beta2, float eps) {
    const int t = ssk_tensor_of(list, blockIdx.x);
    float* __restrict__ param = list.param[t];
    const float* __restrict__ grad = list.grad[t];
    float* __restrict__ m = list.state0[t];
    float* __restrict__ v = list.state1[t];
    const int begin = ((int)blockIdx.x - list.first_block[t]) * SSK_CHUNK;
    const int end = list.len[t] < begin + SSK_CHUNK ? list.len[t] : begin + SSK_CHUNK;
    const float step_size = hyper[2], bc2_sqrt = hyper[3];
    const float w1 = 1.0f - beta1, w2 = 1.0f - beta2;
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float g = grad[i];
        const float mi = m[i] + w1 * (g - m[i]);
        const float vi = v[i] * beta2 + g * g * w2;
        m[i] = mi;
        v[i] = vi;
        param[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}
