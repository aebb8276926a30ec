// kernels/conv.cu — 2-D convolution (zero padding `pad`, stride `S`) as implicit
// GEMM: the im2col matrix is never stored, the GEMM tile loaders compute its
// elements. CPU twin: src/backend/cpu/conv.rs. Shapes (P = OH·OW, CRR = C·R·R,
// OH = (H + 2·pad − R)/S + 1):
//   x [N, C, H, W], w [K, C, R, R], b [K], y / dy [N, K, OH, OW]
//   col_n[(c, i, j), (oy, ox)] = x[n, c, oy·S + i − pad, ox·S + j − pad]  (0 in the padding)
//   forward:          y[n, k, p]   = b[k] + Σ_crr w[k, crr] · col_n[crr, p]
//   backward-data:    dx[n, c, h, w] = Σ_{k,i,j} w[k, c, i, j] · dy[n, k, oy, ox] over the
//                     (oy, ox) with oy·S + i − pad = h, ox·S + j − pad = w
//   backward-weights: dw[k, crr]   = Σ_{n,p} dy[n, k, p] · col_n[crr, p]  (split over images,
//                     partials summed in order by conv2d_backward_weight_sum: deterministic)
//   backward-bias:    db[k]        = Σ_{n,p} dy[n, k, p], the same GEMM against a column of
//                     ones appended to col_n (crr = CRR): no launch of its own
#include "common.cuh"

// The input element that entry (c, ij) of column (n, p) of col_n reads, 0 in the padding.
__device__ __forceinline__ float conv_tap(const float* __restrict__ x, int n, int c, int ij, int p, int C, int H,
                                          int W, int R, int OW, int pad, int S) {
    const int iy = (p / OW) * S + ij / R - pad, ix = (p % OW) * S + ij % R - pad;
    return (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[((n * C + c) * H + iy) * W + ix] : 0.0f;
}

// Forward. GEMM M = K (out channels), N = N·P (image pixels), K = CRR.
// grid (ceil(N·P / SSK_TILE), ceil(K / SSK_TILE)), block (SSK_GEMM_THREADS, SSK_GEMM_THREADS).
extern "C" __global__ void conv2d_forward(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ y, int N,
                                          int C, int H, int W, int K, int R, int pad, int S) {
    const int OH = (H + 2 * pad - R) / S + 1, OW = (W + 2 * pad - R) / S + 1, P = OH * OW, CRR = C * R * R;
    const int m0 = blockIdx.y * SSK_TILE, n0 = blockIdx.x * SSK_TILE;
    SskGemmAcc acc = {};
    ssk_gemm_tile<true, false>(
        K, N * P, CRR, m0, n0, SskRows{w, CRR},
        [=](int crr, int col) {
            const int n = col / P, p = col % P;
            return conv_tap(x, n, crr / (R * R), crr % (R * R), p, C, H, W, R, OW, pad, S);
        },
        acc);
    ssk_gemm_store(K, N * P, m0, n0, acc, [=](int k, int col, float v) {
        const int n = col / P, p = col % P;
        y[(n * K + k) * P + p] = v + b[k];
    });
}

// Backward-data, the output tile (tile_m, tile_n) of GEMM M = C, N = N·H·W, K = K·R·R;
// dy outside the valid output range reads as 0. Every dx element is written once (no atomics).
__device__ __forceinline__ void conv_backward_data_tile(const float* __restrict__ w, const float* __restrict__ dy,
                                                        float* __restrict__ dx, int N, int C, int H, int W, int K,
                                                        int R, int pad, int S, int tile_m, int tile_n) {
    const int OH = (H + 2 * pad - R) / S + 1, OW = (W + 2 * pad - R) / S + 1, HW = H * W, RR = R * R;
    const int m0 = tile_m * SSK_TILE, n0 = tile_n * SSK_TILE;
    SskGemmAcc acc = {};
    ssk_gemm_tile<false, false>(
        C, N * HW, K * RR, m0, n0,
        [=](int c, int kij) {
            const int k = kij / RR, ij = kij % RR;
            return w[(k * C + c) * RR + ij];
        },
        [=](int kij, int col) {
            const int k = kij / RR, ij = kij % RR;
            const int n = col / HW, hw = col % HW;
            // The output (oy, ox) whose tap (i, j) reads pixel (h, w), if any.
            const int ty = hw / W + pad - ij / R, tx = hw % W + pad - ij % R;
            if (ty < 0 || tx < 0 || ty % S != 0 || tx % S != 0) return 0.0f;
            const int oy = ty / S, ox = tx / S;
            return (oy < OH && ox < OW) ? dy[((n * K + k) * OH + oy) * OW + ox] : 0.0f;
        },
        acc);
    ssk_gemm_store(C, N * HW, m0, n0, acc, [=](int c, int col, float v) {
        const int n = col / HW, hw = col % HW;
        dx[(n * C + c) * HW + hw] = v;
    });
}

// Backward-weights and -bias, the output tile (tile_m, tile_n) of partial z, one partial
// per group of `images_per_part` images:
// parts[z, k, crr] = Σ_{n in group z, p} dy[n, k, p] · col_n[crr, p] for crr < CRR, and
// parts[z, k, CRR] = Σ dy[n, k, p] (col_n's appended row of ones: the bias).
// GEMM M = K, N = CRR + 1, K = images·P.
__device__ __forceinline__ void conv_backward_weight_tile(const float* __restrict__ x,
                                                          const float* __restrict__ dy, float* __restrict__ parts,
                                                          int N, int C, int H, int W, int K, int R, int pad, int S,
                                                          int images_per_part, int tile_m, int tile_n, int z) {
    const int OH = (H + 2 * pad - R) / S + 1, OW = (W + 2 * pad - R) / S + 1, P = OH * OW, CRR = C * R * R;
    const int first = z * images_per_part;
    const int images = min(images_per_part, N - first);
    const int m0 = tile_m * SSK_TILE, n0 = tile_n * SSK_TILE;
    SskGemmAcc acc = {};
    ssk_gemm_tile<true, true>(
        K, CRR + 1, images * P, m0, n0,
        [=](int k, int np) {
            const int n = first + np / P, p = np % P;
            return dy[(n * K + k) * P + p];
        },
        [=](int np, int crr) {
            const int n = first + np / P, p = np % P;
            return crr < CRR ? conv_tap(x, n, crr / (R * R), crr % (R * R), p, C, H, W, R, OW, pad, S) : 1.0f;
        },
        acc);
    float* part = parts + (size_t)z * K * (CRR + 1);
    ssk_gemm_store(K, CRR + 1, m0, n0, acc, [=](int k, int crr, float v) { part[k * (CRR + 1) + crr] = v; });
}

// Backward-weights and -bias alone (conv_backward_weight_tile; the first layer, whose
// input gradient is not wanted).
// grid (ceil((CRR + 1) / SSK_TILE), ceil(K / SSK_TILE), parts), block (SSK_GEMM_THREADS, SSK_GEMM_THREADS).
extern "C" __global__ void conv2d_backward_weight(const float* __restrict__ x, const float* __restrict__ dy,
                                                  float* __restrict__ parts, int N, int C, int H, int W,
                                                  int K, int R, int pad, int S, int images_per_part) {
    conv_backward_weight_tile(x, dy, parts, N, C, H, W, K, R, pad, S, images_per_part, blockIdx.y, blockIdx.x,
                              blockIdx.z);
}

// Backward-data and -weights in one launch (a layer whose input gradient is wanted):
// the first blocks are conv_backward_data_tile's tiles, the rest
// conv2d_backward_weight's, each computed as that kernel computes it (the same bits). grid (data tiles + weight tiles) 1-D,
// data tiles = ceil(N·H·W / SSK_TILE)·ceil(C / SSK_TILE), weight tiles =
// ceil((CRR + 1) / SSK_TILE)·ceil(K / SSK_TILE)·parts; block (SSK_GEMM_THREADS, SSK_GEMM_THREADS).
extern "C" __global__ void conv2d_backward_data_weight(const float* __restrict__ w, const float* __restrict__ x,
                                                       const float* __restrict__ dy, float* __restrict__ dx,
                                                       float* __restrict__ parts, int N, int C, int H, int W,
                                                       int K, int R, int pad, int S, int images_per_part) {
    const int data_cols = (N * H * W + SSK_TILE - 1) / SSK_TILE;
    const int data_tiles = data_cols * ((C + SSK_TILE - 1) / SSK_TILE);
    int b = blockIdx.x;
    if (b < data_tiles) {
        conv_backward_data_tile(w, dy, dx, N, C, H, W, K, R, pad, S, b / data_cols, b % data_cols);
        return;
    }
    b -= data_tiles;
    const int w_cols = (C * R * R + 1 + SSK_TILE - 1) / SSK_TILE;
    const int w_tiles = w_cols * ((K + SSK_TILE - 1) / SSK_TILE);
    conv_backward_weight_tile(x, dy, parts, N, C, H, W, K, R, pad, S, images_per_part, (b % w_tiles) / w_cols,
                              b % w_cols, b / w_tiles);
}

// dw[k, crr] = Σ_z parts[z, k, crr] and db[k] = Σ_z parts[z, k, CRR], z in order
// (deterministic; the second pass of conv2d_backward_weight's split over images).
// parts: [n_parts, K, CRR + 1]. Grid-stride over K·(CRR + 1): grid (any), block (256).
extern "C" __global__ void conv2d_backward_weight_sum(float* __restrict__ dw, float* __restrict__ db,
                                                      const float* __restrict__ parts, int K, int CRR,
                                                      int n_parts) {
    const int len = K * (CRR + 1);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < n_parts; z++) s += parts[(size_t)z * len + i];
        const int k = i / (CRR + 1), crr = i % (CRR + 1);
        if (crr < CRR)
            dw[k * CRR + crr] = s;
        else
            db[k] = s;
    }
}
