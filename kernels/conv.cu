// kernels/conv.cu — 2-D convolution (zero padding `pad`, stride `S`) as implicit
// GEMM: the im2col matrix is never stored, the GEMM tile loaders compute its
// elements. CPU twin: src/backend/cpu/conv.rs. Shapes (P = OH·OW, CRR = C·R·R,
// OH = (H + 2·pad − R)/S + 1):
//   x [N, C, H, W], w [K, C, R, R], b [K], y / dy [N, K, OH, OW]
//   col_n[(c, i, j), (oy, ox)] = x[n, c, oy·S + i − pad, ox·S + j − pad]  (0 in the padding)
//   forward:          y[n, k, p]   = b[k] + Σ_crr w[k, crr] · col_n[crr, p]
//   backward-data:    dx[n, c, h, w] = Σ_{k,i,j} w[k, c, i, j] · dy[n, k, oy, ox] over the
//                     (oy, ox) with oy·S + i − pad = h, ox·S + j − pad = w
//   backward-weights: dw[k, crr]   = Σ_{n,p} dy[n, k, p] · col_n[crr, p]  (split-K: the
//                     GEMM's k, the N·P pairs (n, p), in chunks of `rows_per_part`, one
//                     partial each, summed in a fixed order by conv2d_backward_weight_sum)
//   backward-bias:    db[k]        = Σ_{n,p} dy[n, k, p], the same GEMM against a column of
//                     ones appended to col_n (crr = CRR): no launch of its own
#include "common.cuh"

// x / d for 0 ≤ x < 2^31 as a multiply and a shift, d fixed for the launch (the
// round-up method: l = ⌈log2 d⌉, m = ⌈2^(31+l) / d⌉ < 2^32; then x·m / 2^(31+l)
// exceeds x / d by less than x / 2^(31+l) < 1 / d, so the floor is exact). The
// loaders divide by P, OW, R, … per element, and a GPU has no integer divider (a
// division by a run-time value is ~20 instructions); m costs one 64-bit division
// per thread, once.
struct ConvDiv {
    int d;
    unsigned m, shift;
    __device__ __forceinline__ int div(int x) const {
        return (int)(((unsigned long long)(unsigned)x * m) >> shift);
    }
};
__device__ __forceinline__ ConvDiv conv_div(int d) {
    int l = 0;
    while ((1u << l) < (unsigned)d) l++;
    return {d, (unsigned)(((1ull << (31 + l)) + d - 1) / d), (unsigned)(31 + l)};
}

// A launch's shape and the divisors its loaders use.
struct ConvShape {
    int C, H, W, K, R, pad, S, OH, OW, P, RR, CRR;
    ConvDiv by_p, by_ow, by_rr, by_r;
};
__device__ __forceinline__ ConvShape conv_shape(int C, int H, int W, int K, int R, int pad, int S) {
    const int OH = (H + 2 * pad - R) / S + 1, OW = (W + 2 * pad - R) / S + 1;
    return {C,  H,           W,           K,           R,          pad,       S, OH, OW, OH * OW, R * R, C * R * R,
            conv_div(OH * OW), conv_div(OW), conv_div(R * R), conv_div(R)};
}

// Entry crr of column (n, p) of col_n: the input element it reads, 0 in the padding.
__device__ __forceinline__ float conv_tap(const float* __restrict__ x, const ConvShape& g, int n, int p, int crr) {
    const int c = g.by_rr.div(crr), ij = crr - c * g.RR;
    const int i = g.by_r.div(ij), j = ij - i * g.R;
    const int oy = g.by_ow.div(p), ox = p - oy * g.OW;
    const int iy = oy * g.S + i - g.pad, ix = ox * g.S + j - g.pad;
    return (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) ? x[((n * g.C + c) * g.H + iy) * g.W + ix] : 0.0f;
}

// Forward. GEMM M = K (out channels), N = N·P (image pixels), K = CRR, split-K when
// the output tiles are few (MNIST's conv2 at batch 64: 64 tiles of K = 500, 2 slices;
// common.cuh `ssk_split_k_last`, the bias added by the tile's last block): block z is
// K slice z, [z·slice_k, min((z + 1)·slice_k, CRR)); `ws` (a tile's partials per
// slice) and `counters` are used only when slices > 1.
// grid (ceil(N·P / SSK_TILE), ceil(K / SSK_TILE), slices), block (SSK_GEMM_THREADS, SSK_GEMM_THREADS).
extern "C" __global__ void conv2d_forward(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ y, float* ws,
                                          unsigned* counters, int N, int C, int H, int W, int K, int R, int pad,
                                          int S, int slices, int slice_k) {
    const ConvShape g = conv_shape(C, H, W, K, R, pad, S);
    const int m0 = blockIdx.y * SSK_TILE, n0 = blockIdx.x * SSK_TILE, slice = blockIdx.z;
    const int k0 = slice * slice_k, kn = slices == 1 ? g.CRR : min(slice_k, g.CRR - k0);
    SskGemmAcc acc = {};
    ssk_gemm_tile<true, false>(
        K, N * g.P, kn, m0, n0, SskRows{w + k0, g.CRR},
        [=](int crr, int col) {
            const int n = g.by_p.div(col);
            return conv_tap(x, g, n, col - n * g.P, k0 + crr);
        },
        acc);
    if (!ssk_split_k_last(acc, ws, counters, blockIdx.y * gridDim.x + blockIdx.x, slice, slices)) return;
    ssk_gemm_store(K, N * g.P, m0, n0, acc, [=](int k, int col, float v) {
        const int n = g.by_p.div(col), p = col - n * g.P;
        y[(n * K + k) * g.P + p] = v + b[k];
    });
}

// Backward-data, the output tile (tile_m, tile_n) of GEMM M = C, N = N·H·W, K = K·R·R,
// SSK_NARROW_M × SSK_WIDE_N (32 × 128: M is the layer's input channels, often few —
// MNIST conv2's 20 used 20 of a 64-row tile's rows); dy outside the valid output
// range reads as 0. Every dx element is written once (no atomics). Split-K as the
// forward's: K slice `slice` of `slices`, [slice·slice_k, …), handed over through
// `ws` and counters[tile] (common.cuh `ssk_split_k_last`); the last block stores.
__device__ __forceinline__ void conv_backward_data_tile(const float* __restrict__ w, const float* __restrict__ dy,
                                                        float* __restrict__ dx, float* ws, unsigned* counters,
                                                        int N, const ConvShape& g, int tile, int tile_cols,
                                                        int slice, int slices, int slice_k) {
    const int HW = g.H * g.W, KRR = g.K * g.RR;
    const ConvDiv by_hw = conv_div(HW), by_w = conv_div(g.W), by_s = conv_div(g.S);
    const int m0 = tile / tile_cols * SSK_NARROW_M, n0 = tile % tile_cols * SSK_WIDE_N;
    const int k0 = slice * slice_k, kn = slices == 1 ? KRR : min(slice_k, KRR - k0);
    SskGemmAcc acc = {};
    ssk_gemm_tile<false, false, SSK_NARROW_M, SSK_WIDE_N>(
        g.C, N * HW, kn, m0, n0,
        [=](int c, int kk) {
            const int kij = k0 + kk, k = g.by_rr.div(kij), ij = kij - k * g.RR;
            return w[(k * g.C + c) * g.RR + ij];
        },
        [=](int kk, int col) {
            const int kij = k0 + kk, k = g.by_rr.div(kij), ij = kij - k * g.RR;
            const int i = g.by_r.div(ij), j = ij - i * g.R;
            const int n = by_hw.div(col), hw = col - n * HW;
            const int h = by_w.div(hw), wx = hw - h * g.W;
            // The output (oy, ox) whose tap (i, j) reads pixel (h, wx), if any.
            const int ty = h + g.pad - i, tx = wx + g.pad - j;
            if (ty < 0 || tx < 0) return 0.0f;
            const int oy = by_s.div(ty), ox = by_s.div(tx);
            if (oy * g.S != ty || ox * g.S != tx) return 0.0f;
            return (oy < g.OH && ox < g.OW) ? dy[((n * g.K + k) * g.OH + oy) * g.OW + ox] : 0.0f;
        },
        acc);
    if (!ssk_split_k_last(acc, ws, counters, tile, slice, slices)) return;
    ssk_gemm_store<SSK_NARROW_M, SSK_WIDE_N>(g.C, N * HW, m0, n0, acc, [=](int c, int col, float v) {
        const int n = by_hw.div(col), hw = col - n * HW;
        dx[(n * g.C + c) * HW + hw] = v;
    });
}

// Backward-weights and -bias, the output tile (tile_m, tile_n) of partial z: with the
// GEMM's k the pairs np = n·P + p, partial z sums rows [z·rows_per_part, (z + 1)·rows_per_part) ∩ [0, N·P):
// parts[z, k, crr] = Σ_{np in part z} dy[n, k, p] · col_n[crr, p] for crr < CRR, and
// parts[z, k, CRR] = Σ dy[n, k, p] (col_n's appended row of ones: the bias).
// GEMM M = K, N = CRR + 1, K = the part's rows.
__device__ __forceinline__ void conv_backward_weight_tile(const float* __restrict__ x,
                                                          const float* __restrict__ dy, float* __restrict__ parts,
                                                          int N, const ConvShape& g, int rows_per_part, int tile_m,
                                                          int tile_n, int z) {
    const int first = z * rows_per_part;
    const int rows = min(rows_per_part, N * g.P - first);
    const int m0 = tile_m * SSK_TILE, n0 = tile_n * SSK_TILE;
    SskGemmAcc acc = {};
    ssk_gemm_tile<true, true>(
        g.K, g.CRR + 1, rows, m0, n0,
        [=](int k, int r) {
            const int np = first + r, n = g.by_p.div(np);
            return dy[(n * g.K + k) * g.P + np - n * g.P];
        },
        [=](int r, int crr) {
            const int np = first + r, n = g.by_p.div(np);
            return crr < g.CRR ? conv_tap(x, g, n, np - n * g.P, crr) : 1.0f;
        },
        acc);
    float* part = parts + (size_t)z * g.K * (g.CRR + 1);
    ssk_gemm_store(g.K, g.CRR + 1, m0, n0, acc,
                   [=](int k, int crr, float v) { part[k * (g.CRR + 1) + crr] = v; });
}

// Backward-weights and -bias alone (conv_backward_weight_tile; the first layer, whose
// input gradient is not wanted).
// grid (ceil((CRR + 1) / SSK_TILE), ceil(K / SSK_TILE), parts), block (SSK_GEMM_THREADS, SSK_GEMM_THREADS).
extern "C" __global__ void conv2d_backward_weight(const float* __restrict__ x, const float* __restrict__ dy,
                                                  float* __restrict__ parts, int N, int C, int H, int W,
                                                  int K, int R, int pad, int S, int rows_per_part) {
    const ConvShape g = conv_shape(C, H, W, K, R, pad, S);
    conv_backward_weight_tile(x, dy, parts, N, g, rows_per_part, blockIdx.y, blockIdx.x, blockIdx.z);
}

// Backward-data and -weights in one launch (a layer whose input gradient is wanted):
// the first blocks are conv_backward_data_tile's (data tiles × data_slices, slice
// after slice), the rest conv2d_backward_weight's, each weight tile computed as that
// kernel computes it (the same bits). grid (data tiles·data_slices + weight tiles) 1-D,
// data tiles = ceil(N·H·W / SSK_WIDE_N)·ceil(C / SSK_NARROW_M), weight tiles =
// ceil((CRR + 1) / SSK_TILE)·ceil(K / SSK_TILE)·parts; block (SSK_GEMM_THREADS, SSK_GEMM_THREADS).
// `ws` (data_slices > 1): the data tiles' split-K partials.
extern "C" __global__ void conv2d_backward_data_weight(const float* __restrict__ w, const float* __restrict__ x,
                                                       const float* __restrict__ dy, float* __restrict__ dx,
                                                       float* __restrict__ parts, float* ws, unsigned* counters,
                                                       int N, int C, int H, int W, int K, int R, int pad, int S,
                                                       int rows_per_part, int data_slices, int data_slice_k) {
    const ConvShape g = conv_shape(C, H, W, K, R, pad, S);
    const int data_cols = (N * H * W + SSK_WIDE_N - 1) / SSK_WIDE_N;
    const int data_tiles = data_cols * ((C + SSK_NARROW_M - 1) / SSK_NARROW_M);
    int b = blockIdx.x;
    if (b < data_tiles * data_slices) {
        conv_backward_data_tile(w, dy, dx, ws, counters, N, g, b % data_tiles, data_cols, b / data_tiles,
                                data_slices, data_slice_k);
        return;
    }
    b -= data_tiles * data_slices;
    const int w_cols = (g.CRR + 1 + SSK_TILE - 1) / SSK_TILE;
    const int w_tiles = w_cols * ((K + SSK_TILE - 1) / SSK_TILE);
    conv_backward_weight_tile(x, dy, parts, N, g, rows_per_part, (b % w_tiles) / w_cols, b % w_cols, b / w_tiles);
}

// dw[k, crr] = Σ_z parts[z, k, crr] and db[k] = Σ_z parts[z, k, CRR] (the second pass
// of the weight gradient's split-K). parts: [n_parts, K, CRR + 1]. Thread (tx, ty) adds
// parts z = ty, ty + blockDim.y, … of output blockIdx.x·32 + tx in order (32 adjacent
// outputs a warp: coalesced), then thread (tx, 0) adds the blockDim.y slice sums in
// order: a fixed order whatever the schedule (deterministic).
// grid (ceil(K·(CRR + 1) / 32)), block (32, ≤ 32).
extern "C" __global__ void conv2d_backward_weight_sum(float* __restrict__ dw, float* __restrict__ db,
                                                      const float* __restrict__ parts, int K, int CRR,
                                                      int n_parts) {
    __shared__ float slice[32][33];
    const int len = K * (CRR + 1), i = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (i < len)
        for (int z = threadIdx.y; z < n_parts; z += blockDim.y) s += parts[(size_t)z * len + i];
    slice[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y != 0 || i >= len) return;
    s = 0.0f;
    for (int y = 0; y < (int)blockDim.y; y++) s += slice[y][threadIdx.x];
    const int k = i / (CRR + 1), crr = i - k * (CRR + 1);
    if (crr < CRR)
        dw[k * CRR + crr] = s;
    else
        db[k] = s;
}
