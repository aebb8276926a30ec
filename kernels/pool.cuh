// kernels/pool.cuh — the 2×2 max-pool's window rule, one owner for pool.cu and
// the conv block's fused batchnorm + ReLU + pool kernels (batchnorm.cu).
#pragma once

// ReLU, as relu_forward computes it (NaN → 0).
__device__ __forceinline__ float relu_of(float x) { return x > 0.0f ? x : 0.0f; }

// Position (0..3, row-major) of the first maximum of the window at (oy, ox) of a
// [H, W] plane (of relu(x) when `relu`): a later element wins only if strictly
// greater, or NaN (as PyTorch's CPU kernel).
__device__ __forceinline__ int window_argmax(const float* plane, int W, int oy, int ox, int relu,
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

// The gradient at element (h, w) of a [H, W] plane x under the 2×2 max-pool of
// relu(x) (`relu`) or x: dy of its window if it is the window's first maximum, else 0
// (also in a dropped odd row/column); through the ReLU, 0 where x is not > 0.
// dy_plane: [H/2, W/2].
__device__ __forceinline__ float maxpool2x2_grad_at(const float* plane, const float* dy_plane, int H, int W,
                                                    int h, int w, int relu) {
    const int OH = H / 2, OW = W / 2, oy = h / 2, ox = w / 2;
    float g = 0.0f;
    if (oy < OH && ox < OW) {
        float best;
        const int at = window_argmax(plane, W, oy, ox, relu, &best);
        if (at == (h % 2) * 2 + (w % 2)) g = dy_plane[oy * OW + ox];
    }
    return (relu && !(plane[h * W + w] > 0.0f)) ? 0.0f : g;
}
