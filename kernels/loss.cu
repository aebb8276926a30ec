// kernels/loss.cu — losses; each writes the loss and its gradient w.r.t. the
// logits. CPU twin: src/backend/cpu/loss.rs (f64 there, f32 here).
#include "common.cuh"

// Softmax cross-entropy, mean over the batch. logits, targets, dlogits: [N, classes]
// → loss [1]. loss = −(1/N) Σ_n Σ_c t·log softmax(z); dz = (softmax(z)·Σ_c t − t)/N.
// One block; a thread per row (rows strided by blockDim), the row losses summed by
// ssk_block_sum (fixed order). grid (1), block (256).
extern "C" __global__ void softmax_cross_entropy(const float* __restrict__ logits,
                                                 const float* __restrict__ targets, float* __restrict__ loss,
                                                 float* __restrict__ dlogits, int batch, int classes) {
    __shared__ float scratch[32];
    const float inv_n = 1.0f / (float)max(batch, 1);
    float total = 0.0f;
    for (int n = threadIdx.x; n < batch; n += blockDim.x) {
        const float* z = logits + (size_t)n * classes;
        const float* t = targets + (size_t)n * classes;
        float zmax = z[0];
        for (int c = 1; c < classes; c++) zmax = fmaxf(zmax, z[c]);
        float sum_exp = 0.0f, t_sum = 0.0f;
        for (int c = 0; c < classes; c++) {
            sum_exp += expf(z[c] - zmax);
            t_sum += t[c];
        }
        const float lse = zmax + logf(sum_exp);
        for (int c = 0; c < classes; c++) {
            total += t[c] * (lse - z[c]);
            dlogits[(size_t)n * classes + c] = (expf(z[c] - lse) * t_sum - t[c]) * inv_n;
        }
    }
    total = ssk_block_sum(total, scratch);
    if (threadIdx.x == 0) loss[0] = total * inv_n;
}

// Sigmoid BCE per task, stable form max(z,0) − z·y + log(1 + exp(−|z|)), mean over
// the batch. logits, dlogits: [T, N] (task-major); targets: [N, T] → loss [T].
// dz = (σ(z) − y)/N. grid (T), block (256): a block per task, a thread per sample.
extern "C" __global__ void sigmoid_bce(const float* __restrict__ logits, const float* __restrict__ targets,
                                       float* __restrict__ loss, float* __restrict__ dlogits, int tasks,
                                       int batch) {
    __shared__ float scratch[32];
    const int t = blockIdx.x;
    const float inv_n = 1.0f / (float)max(batch, 1);
    float total = 0.0f;
    for (int n = threadIdx.x; n < batch; n += blockDim.x) {
        const float z = logits[(size_t)t * batch + n];
        const float y = targets[(size_t)n * tasks + t];
        const float e = expf(-fabsf(z));
        total += fmaxf(z, 0.0f) - z * y + log1pf(e);
        const float sig = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        dlogits[(size_t)t * batch + n] = (sig - y) * inv_n;
    }
    total = ssk_block_sum(total, scratch);
    if (threadIdx.x == 0) loss[t] = total * inv_n;
}
