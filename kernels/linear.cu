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
// Every GEMM is the register-blocked tile core of common.cuh, block (SSK_GEMM_THREADS, SSK_GEMM_THREADS), grid.z = branch.
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

// grid (ceil(in / SSK_TILE), ceil(N / SSK_TILE), XB). For input i, GEMM M = N, N = in, K = out,
// run once per branch reading i, into one accumulator.
extern "C" __global__ void linear_backward_data(const float* __restrict__ x, const float* __restrict__ w,
                                                const float* __restrict__ dy, float* __restrict__ dx,
                                                BranchMap map, int branches, int batch, int fin, int fout,
                                                int relu_in) {
    const int i = blockIdx.z;
    const int m0 = blockIdx.y * SSK_TILE, n0 = blockIdx.x * SSK_TILE;
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

// grid (ceil(in / SSK_TILE), ceil(out / SSK_TILE), B). GEMM M = out, N = in, K = N (batch).
extern "C" __global__ void linear_backward_weight(const float* __restrict__ x, const float* __restrict__ dy,
                                                  float* __restrict__ dw, BranchMap map, int batch, int fin,
                                                  int fout) {
    const int o = blockIdx.z;
    const float* xo = x + (size_t)map.of[o] * batch * fin;
    const float* dyo = dy + (size_t)o * batch * fout;
    const int m0 = blockIdx.y * SSK_TILE, n0 = blockIdx.x * SSK_TILE;
    SskGemmAcc acc = {};
    ssk_gemm_tile<false, false>(fout, fin, batch, m0, n0, SskCols{dyo, fout}, SskRows{xo, fin}, acc);
    float* dwo = dw + (size_t)o * fout * fin;
    ssk_gemm_store(fout, fin, m0, n0, acc, [=](int j, int f, float v) { dwo[j * fin + f] = v; });
}

// db[o, j] = Σ_n dy[o, n, j], a thread per (o, j) summing over the batch in order
// (consecutive threads read consecutive j: coalesced). grid-stride over B·out, block (256).
extern "C" __global__ void linear_backward_bias(const float* __restrict__ dy, float* __restrict__ db,
                                                int branches, int batch, int fout) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < branches * fout; i += gridDim.x * blockDim.x) {
        const int o = i / fout, j = i % fout;
        const float* dyo = dy + (size_t)o * batch * fout;
        float s = 0.0f;
        for (int n = 0; n < batch; n++) s += dyo[n * fout + j];
        db[i] = s;
    }
}
