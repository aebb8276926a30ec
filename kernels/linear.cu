// kernels/linear.cu — linear layers batched across branches (LinearShape): one
// launch runs every branch, branch o reading input branch map.of[o].
// CPU twin: src/backend/cpu/linear.rs. Shapes:
//   x, dx [XB, N, in]; w, dw [B, out, in]; b, db [B, out]; y, dy [B, N, out]
//   forward:  y[o] = x[of[o]] · w[o]ᵀ + b[o]
//   backward: dw[o] = dy[o]ᵀ · x[of[o]];  db[o] = Σ_n dy[o, n, :];
//             dx[i] = Σ_{o: of[o] = i} dy[o] · w[o]   (branches accumulated in the
//             same registers in branch order: deterministic, no atomics; 0 for an
//             input no branch reads)
// Fused ReLUs (LinearShape::relu_out / relu_in): the forward's `relu` applies
// ReLU in the store (y = v > 0 ? v : 0, pool.cu's relu_forward); backward-data's
// `relu_in` masks dx by x > 0 (pool.cu's relu_backward with y = x).
// Every GEMM is the register-blocked tile core of common.cuh, block (SSK_GEMM_THREADS,
// SSK_GEMM_THREADS); the forward's grid.z = branch, the backward is one grouped launch.
#include "common.cuh"

// grid (ceil(out / SSK_TILE), ceil(N / SSK_TILE), B). GEMM M = N, N = out, K = in.
extern "C" __global__ void linear_forward(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ y, BranchMap map,
                                          int batch, int fin, int fout, int relu) {
    const int o = blockIdx.z;
    const float* xo = x + (size_t)map.of[o] * batch * fin;
    const float* wo = w + (size_t)o * fout * fin;
    const int m0 = blockIdx.y * SSK_TILE, n0 = blockIdx.x * SSK_TILE;
    SskGemmAcc acc = {};
    ssk_gemm_tile<true, true>(batch, fout, fin, m0, n0, SskRows{xo, fin}, SskCols{wo, fin}, acc);
    float* yo = y + (size_t)o * batch * fout;
    const float* bo = b + (size_t)o * fout;
    ssk_gemm_store(batch, fout, m0, n0, acc, [=](int n, int j, float v) {
        v += bo[j];
        yo[n * fout + j] = (relu && !(v > 0.0f)) ? 0.0f : v;
    });
}

// The backward is one launch, three kinds of block over one 1-D grid (which a
// block is depends only on blockIdx.x, so the barriers inside stay uniform):
//   [0, data)            dx: ceil(in/T)·ceil(N/T) tiles per input branch (XB of them),
//                        0 when dx is not asked for (`with_dx` = 0; dx is then unused)
//   [data, data + wgt)   dw: ceil(in/T)·ceil(out/T) tiles per branch
//   [data + wgt, end)    db: a thread per (o, j), B·out of them, 256 a block
// (T = SSK_TILE). The heavy dx tiles come first. Every output is computed as by a
// launch of its own: the same tile code and sums in the same order.
// block (SSK_GEMM_THREADS, SSK_GEMM_THREADS); launch/linear.rs: `backward_blocks`.

// dx tile (m0, n0) of input i: GEMM M = N, N = in, K = out, run once per branch
// reading i, into one accumulator.
__device__ __forceinline__ void linear_dx_tile(const float* __restrict__ x, const float* __restrict__ w,
                                               const float* __restrict__ dy, float* __restrict__ dx,
                                               const BranchMap& map, int branches, int batch, int fin,
                                               int fout, int relu_in, int i, int m0, int n0) {
    SskGemmAcc acc = {};
    for (int o = 0; o < branches; o++) {
        if (map.of[o] != i) continue;  // uniform across the block: the barriers inside stay safe
        const float* dyo = dy + (size_t)o * batch * fout;
        const float* wo = w + (size_t)o * fout * fin;
        ssk_gemm_tile<true, false>(batch, fin, fout, m0, n0, SskRows{dyo, fout}, SskRows{wo, fin}, acc);
    }
    float* dxi = dx + (size_t)i * batch * fin;
    const float* xi = x + (size_t)i * batch * fin;
    ssk_gemm_store(batch, fin, m0, n0, acc, [=](int n, int f, float v) {
        dxi[n * fin + f] = (relu_in && !(xi[n * fin + f] > 0.0f)) ? 0.0f : v;
    });
}

// dw tile (m0, n0) of branch o: GEMM M = out, N = in, K = N (batch).
__device__ __forceinline__ void linear_dw_tile(const float* __restrict__ x, const float* __restrict__ dy,
                                               float* __restrict__ dw, const BranchMap& map, int batch,
                                               int fin, int fout, int o, int m0, int n0) {
    const float* xo = x + (size_t)map.of[o] * batch * fin;
    const float* dyo = dy + (size_t)o * batch * fout;
    SskGemmAcc acc = {};
    ssk_gemm_tile<false, false>(fout, fin, batch, m0, n0, SskCols{dyo, fout}, SskRows{xo, fin}, acc);
    float* dwo = dw + (size_t)o * fout * fin;
    ssk_gemm_store(fout, fin, m0, n0, acc, [=](int j, int f, float v) { dwo[j * fin + f] = v; });
}

extern "C" __global__ void linear_backward(const float* __restrict__ x, const float* __restrict__ w,
                                           const float* __restrict__ dy, float* __restrict__ dx,
                                           float* __restrict__ dw, float* __restrict__ db, BranchMap map,
                                           int branches, int x_branches, int batch, int fin, int fout,
                                           int relu_in, int with_dx) {
    const int tiles_in = (fin + SSK_TILE - 1) / SSK_TILE, tiles_n = (batch + SSK_TILE - 1) / SSK_TILE;
    const int tiles_out = (fout + SSK_TILE - 1) / SSK_TILE;
    const int data = with_dx ? tiles_in * tiles_n * x_branches : 0;
    const int wgt = tiles_in * tiles_out * branches;
    int b = blockIdx.x;
    if (b < data) {
        const int n0 = b % tiles_in * SSK_TILE, m0 = b / tiles_in % tiles_n * SSK_TILE;
        linear_dx_tile(x, w, dy, dx, map, branches, batch, fin, fout, relu_in, b / (tiles_in * tiles_n), m0, n0);
        return;
    }
    b -= data;
    if (b < wgt) {
        const int n0 = b % tiles_in * SSK_TILE, m0 = b / tiles_in % tiles_out * SSK_TILE;
        linear_dw_tile(x, dy, dw, map, batch, fin, fout, b / (tiles_in * tiles_out), m0, n0);
        return;
    }
    b -= wgt;
    // db[o, j] = Σ_n dy[o, n, j], summed over the batch in order (consecutive
    // threads read consecutive j: coalesced).
    const int threads = blockDim.x * blockDim.y;
    const int i = b * threads + threadIdx.y * blockDim.x + threadIdx.x;
    if (i >= branches * fout) return;
    const int o = i / fout, j = i % fout;
    const float* dyo = dy + (size_t)o * batch * fout;
    float s = 0.0f;
    for (int n = 0; n < batch; n++) s += dyo[n * fout + j];
    db[i] = s;
}
