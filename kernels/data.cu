// kernels/data.cu — batches from a training split kept on the device, so a recorded
// step reads its inputs there. CPU twin: src/backend/cpu/data.rs.
//
// Indices travel as floats (the buffers are f32), exact below 2^24. The data state
// (backend::DataBufs::state): [0] the batch offset into `order`, [1] the steps logged
// so far; `advance_batch` moves it after the step, so one recorded program serves
// every step of an epoch.
#include "common.cuh"

// With off = state[0], for r < batch: x[r, :] = pixels[order[off + r], :] and
// targets[r, :] = one-hot(labels[order[off + r]]). pixels [len, size], labels and
// order [len], x [batch, size], targets [batch, classes].
// Elementwise over batch·(size + classes), grid-stride: grid (any), block (256).
extern "C" __global__ void gather_batch(const float* __restrict__ pixels, const float* __restrict__ labels,
                                        const float* __restrict__ order, const float* __restrict__ state,
                                        float* __restrict__ x, float* __restrict__ targets, int batch,
                                        int size, int classes) {
    const int off = (int)state[0];
    const int nx = batch * size, n = nx + batch * classes;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (i < nx) {
            const int r = i / size, j = i - r * size;
            const size_t sample = (size_t)order[off + r];
            x[i] = pixels[sample * (size_t)size + j];
        } else {
            const int k = i - nx, r = k / classes, c = k - r * classes;
            targets[k] = (int)labels[(int)order[off + r]] == c ? 1.0f : 0.0f;
        }
    }
}

// One thread, after a step: s = state[1]; log[s·tasks + t] = loss[t] for t < tasks;
// state[0] += batch; state[1] += 1. grid (1), block (1).
extern "C" __global__ void advance_batch(const float* __restrict__ loss, float* __restrict__ state,
                                         float* __restrict__ log, int tasks, int batch) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const int s = (int)state[1];
    for (int t = 0; t < tasks; ++t) log[s * tasks + t] = loss[t];
    state[0] = (float)((int)state[0] + batch);
    state[1] = (float)(s + 1);
}
