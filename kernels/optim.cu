// kernels/optim.cu — optimiser steps, torch.optim semantics (no weight decay).
// CPU twin: src/backend/cpu/optim.rs (same operation order per element).
// Elementwise, grid-stride: grid (any), block (256).
#include "common.cuh"

// SGD with momentum: v = μ·v + g; p −= lr·v. param, grad, velocity: [n].
extern "C" __global__ void sgd_step(float* __restrict__ param, const float* __restrict__ grad,
                                    float* __restrict__ velocity, float lr, float momentum, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float v = momentum * velocity[i] + grad[i];
        velocity[i] = v;
        param[i] -= lr * v;
    }
}

// Adam: m += (1−β1)(g − m); v = β2·v + (1−β2)·g²; p −= step_size·m / (sqrt(v)/bc2_sqrt + eps),
// with step_size = lr/(1 − β1^t) and bc2_sqrt = sqrt(1 − β2^t) computed on the host in f64.
extern "C" __global__ void adam_step(float* __restrict__ param, const float* __restrict__ grad,
                                     float* __restrict__ m, float* __restrict__ v, float step_size,
                                     float bc2_sqrt, float beta1, float beta2, float eps, int n) {
    const float w1 = 1.0f - beta1, w2 = 1.0f - beta2;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = grad[i];
        const float mi = m[i] + w1 * (g - m[i]);
        const float vi = v[i] * beta2 + g * g * w2;
        m[i] = mi;
        v[i] = vi;
        param[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}
