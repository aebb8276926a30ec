// kernels/linear.cu — linear layers batched across branches (LinearShape): one
// launch runs every branch, branch o reading input branch map.of[o].
// CPU twin: src/backend/cpu/linear.rs. Shapes:
//   x, dx [XB, N, in]; w, dw [B, out, in]; b, db [B, out]; y, dy [B, N, out]
//   forward:  y[o] = x[of[o]] · w[o]ᵀ + b[o]
//   backward: dw[o] = dy[o]ᵀ · x[of[o]];  db[o] = Σ_n dy[o, n, :];
//             dx[i] = Σ_{o: of[o] = i} dy[o] · w[o]   (branches accumulated in
//             branch order: deterministic, no float atomics; 0 for an input no
//             branch reads)
// Fused ReLUs (LinearShape::relu_out / relu_in): the forward's `relu` applies
// ReLU in the store (y = v > 0 ? v : 0, pool.cu's relu_forward); backward-data's
// `relu_in` masks dx by x > 0 (pool.cu's relu_backward with y = x).
// Every GEMM is the register-blocked tile core of common.cuh, block (SSK_GEMM_THREADS,
// SSK_GEMM_THREADS); the forward's grid.z = branch × K slice, the backward is one
// grouped launch.
//
// Split-K: the MNIST net's layers at batch 64 have 10–20 output tiles of K = 640
// (or 10 branches × 100) each, far fewer blocks than a GPU has SMs and a long serial
// K loop per block. The forward's and dx's K is therefore cut into `slices` slices of
// `slice_k` (launch/linear.rs chooses them; 1 slice = the whole K). Each slice's
// block writes its partial tile to the workspace `ws` and counts itself in
// counters[tile]; the last block of a tile to arrive adds the partials in slice
// order 0, 1, …, slices − 1 (the same bits whichever block is last), runs the
// epilogue and sets the counter back to 0 (common.cuh: `ssk_split_k_last`).
#include "common.cuh"

// grid (ceil(out / SSK_TILE), ceil(N / SSK_TILE), B·slices): block z = o·slices + s
// is K slice s of branch o. GEMM M = N, N = out, K = in.
extern "C" __global__ void linear_forward(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ y, float* ws,
                                          unsigned* counters, BranchMap map, int batch, int fin, int fout,
                                          int relu, int slices, int slice_k) {
    const int o = blockIdx.z / slices, slice = blockIdx.z % slices;
    const int k0 = slice * slice_k, kn = slices == 1 ? fin : min(slice_k, fin - k0);
    const float* xo = x + (size_t)map.of[o] * batch * fin + k0;
    const float* wo = w + (size_t)o * fout * fin + k0;
    const int m0 = blockIdx.y * SSK_TILE, n0 = blockIdx.x * SSK_TILE;
    SskGemmAcc acc = {};
    ssk_gemm_tile<true, true>(batch, fout, kn, m0, n0, SskRows{xo, fin}, SskCols{wo, fin}, acc);
    const int tile = (o * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    if (!ssk_split_k_last(acc, ws, counters, tile, slice, slices)) return;
    float* yo = y + (size_t)o * batch * fout;
    const float* bo = b + (size_t)o * fout;
    ssk_gemm_store(batch, fout, m0, n0, acc, [=](int n, int j, float v) {
        v += bo[j];
        yo[n * fout + j] = (relu && !(v > 0.0f)) ? 0.0f : v;
    });
}

// The backward is one launch, three kinds of block over one 1-D grid (which a
// block is depends only on blockIdx.x, so the barriers inside stay uniform):
//   [0, data)            dx: ceil(in/T)·ceil(N/T) tiles per input branch (XB of
//                        them), `dx_slices` blocks each (split-K over the
//                        reading branches' concatenated K); none when dx is not asked
//                        for (`with_dx` = 0; dx is then unused)
//   [data, data + wgt)   dw: ceil(in/T)·ceil(out/T) tiles per branch
//   [data + wgt, end)    db: a thread per (o, j), B·out of them, 256 a block
// (T = SSK_TILE). The heavy dx tiles come first. Every output is computed as by a
// launch of its own: the same tile code and sums in the same order.
// block (SSK_GEMM_THREADS, SSK_GEMM_THREADS); launch/linear.rs: `backward_blocks`.

// dx tile (m0, n0) of input i: GEMM M = N, N = in, K = out per branch reading i,
// K slice [lo, hi) of the readers' concatenated K (the r-th branch reading i, in
// branch order, holds [r·out, (r + 1)·out)), into one accumulator in branch order.
__device__ __forceinline__ void linear_dx_tile(const float* __restrict__ w, const float* __restrict__ dy,
                                               const BranchMap& map, int branches, int batch, int fin,
                                               int fout, int i, int m0, int n0, int lo, int hi,
                                               SskGemmAcc& acc) {
    int at = 0;  // where branch o's K starts in the concatenation
    for (int o = 0; o < branches && at < hi; o++) {
        if (map.of[o] != i) continue;  // uniform across the block: the barriers inside stay safe
        const int ka = max(lo - at, 0), kb = min(hi - at, fout);
        at += fout;
        if (ka >= kb) continue;
        const float* dyo = dy + (size_t)o * batch * fout + ka;
        const float* wo = w + ((size_t)o * fout + ka) * fin;
        ssk_gemm_tile<true, false>(batch, fin, kb - ka, m0, n0, SskRows{dyo, fout}, SskRows{wo, fin}, acc);
    }
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
                                           float* __restrict__ dw, float* __restrict__ db, float* ws,
                                           unsigned* counters, BranchMap map, int branches, int x_branches,
                                           int batch, int fin, int fout, int relu_in, int with_dx,
                                           int dx_slices, int slice_k) {
    const int tiles_in = (fin + SSK_TILE - 1) / SSK_TILE, tiles_n = (batch + SSK_TILE - 1) / SSK_TILE;
    const int tiles_out = (fout + SSK_TILE - 1) / SSK_TILE;
    const int data = with_dx ? tiles_in * tiles_n * x_branches * dx_slices : 0;
    const int wgt = tiles_in * tiles_out * branches;
    int b = blockIdx.x;
    if (b < data) {
        const int slice = b % dx_slices, tile = b / dx_slices;
        const int n0 = tile % tiles_in * SSK_TILE, m0 = tile / tiles_in % tiles_n * SSK_TILE;
        const int i = tile / (tiles_in * tiles_n);
        const int lo = dx_slices == 1 ? 0 : slice * slice_k;
        const int hi = dx_slices == 1 ? branches * fout : lo + slice_k;
        SskGemmAcc acc = {};
        linear_dx_tile(w, dy, map, branches, batch, fin, fout, i, m0, n0, lo, hi, acc);
        if (!ssk_split_k_last(acc, ws, counters, tile, slice, dx_slices)) return;
        float* dxi = dx + (size_t)i * batch * fin;
        const float* xi = x + (size_t)i * batch * fin;
        ssk_gemm_store(batch, fin, m0, n0, acc, [=](int n, int f, float v) {
            dxi[n * fin + f] = (relu_in && !(xi[n * fin + f] > 0.0f)) ? 0.0f : v;
        });
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
