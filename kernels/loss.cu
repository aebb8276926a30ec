// kernels/loss.cu — losses; each writes the loss and its gradient w.r.t. the
// logits. CPU twin: src/backend/cpu/loss.rs (f64 there, f32 here).
#include "common.cuh"

// Softmax cross-entropy, mean over the rows present. logits, targets, dlogits:
// [N, classes] → loss [1]. A row whose targets sum to 0 is missing: it adds nothing
// and gets dz = 0. With n the rows present: loss = −(1/n) Σ_n Σ_c t·log softmax(z);
// dz = (softmax(z)·Σ_c t − t)/n. One block; a thread per row (rows strided by
// blockDim), sums by ssk_block_sum (fixed order). grid (1), block (256).
extern "C" __global__ void softmax_cross_entropy(const float* __restrict__ logits,
                                                 const float* __restrict__ targets, float* __restrict__ loss,
                                                 float* __restrict__ dlogits, int batch, int classes) {
    __shared__ float scratch[32];
    float present = 0.0f;
    for (int n = threadIdx.x; n < batch; n += blockDim.x) {
        float t_sum = 0.0f;
        for (int c = 0; c < classes; c++) t_sum += targets[(size_t)n * classes + c];
        present += t_sum != 0.0f ? 1.0f : 0.0f;
    }
    const float inv_n = 1.0f / fmaxf(ssk_block_sum(present, scratch), 1.0f);
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
// the samples present (a NaN target is missing: no loss, dz = 0). logits, dlogits:
// [T, N] (task-major); targets: [N, T] → loss [T]. dz = (σ(z) − y)/n.
// grid (T), block (256): a block per task, a thread per sample.
extern "C" __global__ void sigmoid_bce(const float* __restrict__ logits, const float* __restrict__ targets,
                                       float* __restrict__ loss, float* __restrict__ dlogits, int tasks,
                                       int batch) {
    __shared__ float scratch[32];
    const int t = blockIdx.x;
    float present = 0.0f;
    for (int n = threadIdx.x; n < batch; n += blockDim.x)
        present += isnan(targets[(size_t)n * tasks + t]) ? 0.0f : 1.0f;
    const float inv_n = 1.0f / fmaxf(ssk_block_sum(present, scratch), 1.0f);
    float total = 0.0f;
    for (int n = threadIdx.x; n < batch; n += blockDim.x) {
        const float z = logits[(size_t)t * batch + n];
        const float y = targets[(size_t)n * tasks + t];
        if (isnan(y)) {
            dlogits[(size_t)t * batch + n] = 0.0f;
            continue;
        }
        const float e = expf(-fabsf(z));
        total += fmaxf(z, 0.0f) - z * y + log1pf(e);
        const float sig = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        dlogits[(size_t)t * batch + n] = (sig - y) * inv_n;
    }
    total = ssk_block_sum(total, scratch);
    if (threadIdx.x == 0) loss[t] = total * inv_n;
}

// Squared error of one regression task, mean over the samples present (NaN target:
// missing). logits, targets, dlogits: [N] → loss [1]. loss = (1/n) Σ (z − t)²,
// dz = 2(z − t)/n. grid (1), block (256).
extern "C" __global__ void mse(const float* __restrict__ logits, const float* __restrict__ targets,
                               float* __restrict__ loss, float* __restrict__ dlogits, int batch) {
    __shared__ float scratch[32];
    float present = 0.0f;
    for (int n = threadIdx.x; n < batch; n += blockDim.x) present += isnan(targets[n]) ? 0.0f : 1.0f;
    const float inv_n = 1.0f / fmaxf(ssk_block_sum(present, scratch), 1.0f);
    float total = 0.0f;
    for (int n = threadIdx.x; n < batch; n += blockDim.x) {
        const float t = targets[n];
        if (isnan(t)) {
            dlogits[n] = 0.0f;
            continue;
        }
        const float d = logits[n] - t;
        total += d * d;
        dlogits[n] = 2.0f * d * inv_n;
    }
    total = ssk_block_sum(total, scratch);
    if (threadIdx.x == 0) loss[0] = total * inv_n;
}

__device__ __forceinline__ float ssk_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

__device__ __forceinline__ float ssk_sigmoid(float x) {
    const float e = expf(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

// Pairwise logistic ranking loss of one ranking task: over the ordered pairs (i, j)
// with t_i > t_j (NaN compares false: missing), loss = (1/P) Σ log(1 + exp(−(z_i − z_j))),
// P the number of pairs. Thread i owns dz_i, summing its pairs in index order (no
// atomics). logits, targets, dlogits: [N] → loss [1]. grid (1), block (256); O(N²).
extern "C" __global__ void pairwise_rank(const float* __restrict__ logits, const float* __restrict__ targets,
                                         float* __restrict__ loss, float* __restrict__ dlogits, int batch) {
    __shared__ float scratch[32];
    float pairs = 0.0f;
    for (int i = threadIdx.x; i < batch; i += blockDim.x)
        for (int j = 0; j < batch; j++) pairs += targets[i] > targets[j] ? 1.0f : 0.0f;
    const float inv_p = 1.0f / fmaxf(ssk_block_sum(pairs, scratch), 1.0f);
    float total = 0.0f;
    for (int i = threadIdx.x; i < batch; i += blockDim.x) {
        const float ti = targets[i], zi = logits[i];
        float d = 0.0f;
        for (int j = 0; j < batch; j++) {
            const float tj = targets[j], zj = logits[j];
            if (ti > tj) {
                total += ssk_softplus(zj - zi);
                d -= ssk_sigmoid(zj - zi);
            } else if (tj > ti) {
                d += ssk_sigmoid(zi - zj);
            }
        }
        dlogits[i] = d * inv_p;
    }
    total = ssk_block_sum(total, scratch);
    if (threadIdx.x == 0) loss[0] = total * inv_p;
}
