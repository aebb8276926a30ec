// kernels/common.cuh — shared by every kernel file: the dynamic-shared-memory
// spelling, the branch map passed by value, warp/block sums and the tiled GEMM
// core that conv.cu and linear.cu build on.
//
// NVRTC has no standard headers: nothing here includes one. Under the simulator
// kernels/sim.h is included first and provides the CUDA built-ins.
#pragma once

// Dynamic shared memory: `SSK_DYNAMIC_SHARED(float, smem);` declares `float* smem`
// pointing at the launch's dynamic shared memory (sim.h gives its own definition).
#ifndef SSK_DYNAMIC_SHARED
#define SSK_DYNAMIC_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char ssk_dyn_smem_[];   \
    T* name = reinterpret_cast<T*>(ssk_dyn_smem_)
#endif

#define SSK_FULL_MASK 0xffffffffu

// Largest number of branches a branch-batched launch takes (kernel parameter
// space: 1 KiB of the 4 KiB CUDA allows).
#define SSK_MAX_BRANCHES 256

// `of[o]`: which input branch output branch `o` reads (LinearShape::x_of),
// passed by value as a kernel parameter.
struct BranchMap {
    int of[SSK_MAX_BRANCHES];
};

// Sum over the 32 lanes of a warp, result in every lane (butterfly: every lane
// computes the same additions in the same order, so all lanes agree bitwise).
__device__ __forceinline__ float ssk_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(SSK_FULL_MASK, v, offset);
    return v;
}

// Sum over the block, result in every thread. blockDim.x·y·z a multiple of 32,
// ≤ 1024; `scratch` holds 32 floats of shared memory. Every thread must call it
// (it contains two __syncthreads); the order of additions is fixed.
__device__ __forceinline__ float ssk_block_sum(float v, float* scratch) {
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int lane = t & 31, warp = t >> 5;
    const int warps = (blockDim.x * blockDim.y * blockDim.z) >> 5;
    v = ssk_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = lane < warps ? scratch[lane] : 0.0f;
    total = ssk_warp_sum(total);
    __syncthreads();  // scratch may be reused by the caller
    return total;
}

// ---- register-blocked SGEMM core --------------------------------------------------
// One SSK_TILE×SSK_TILE (64×64) tile of C (rows m0.., cols n0..) of C = A·B with
// A: M×K, B: K×N, read through the functors a(m, k) and b(k, n) (implicit im2col,
// transposes and branch maps live in the functors). Block: 16×16 threads
// (blockDim = (SSK_GEMM_THREADS, SSK_GEMM_THREADS)); thread (tx, ty) owns the 4×4
// micro-tile of outputs (m0 + 4·ty + i, n0 + 4·tx + j) in registers, acc.c[i][j]
// (added to, not overwritten: a caller may run several GEMMs into one accumulator).
// K advances in stages of SSK_TILE_K = 16 through double-buffered shared memory:
// while the block multiplies stage s out of one buffer, each thread has already
// fetched stage s + 1 from global memory into registers, and stores it into the
// other buffer afterwards — one __syncthreads per stage. Per stage and k a thread
// reads one float4 of A and one of B from shared memory for 16 FMAs (the 32×32 tile
// it replaces read 4 scalars for 4 FMAs).
// Out-of-range elements load as 0, so any M, N, K works.
// Determinism: every output's sum runs over k = 0, 1, …, K − 1 in order in one
// thread (the padding of the last stage adds exact zeros), whatever the schedule.
// A_K_FAST / B_K_FAST: whether consecutive k are adjacent in memory for that
// operand; each thread loads 4 consecutive elements along that index per stage
// (consecutive threads continue along it, so global loads coalesce): one float4
// when the operand is an SskRows / SskCols matrix and the 4 are aligned and in
// range, else 4 scalar loads through the functor.
// build.rs exports every integer `#define SSK_*` of this file to Rust
// (backend::kernels::geometry): the launch plans' grids read them from there.
#define SSK_TILE 64
#define SSK_TILE_K 16
#define SSK_GEMM_THREADS 16
#define SSK_MICRO (SSK_TILE / SSK_GEMM_THREADS)
// Operand elements per thread per stage: SSK_TILE·SSK_TILE_K / 256.
#define SSK_GEMM_LOADS (SSK_TILE * SSK_TILE_K / (SSK_GEMM_THREADS * SSK_GEMM_THREADS))

struct SskGemmAcc {
    float c[SSK_MICRO][SSK_MICRO];
};

// Operands stored as plain matrices, for the vectorised loads below:
// SskRows: f(i, j) = p[i·ld + j] (contiguous along j); SskCols: f(i, j) = p[j·ld + i]
// (contiguous along i). Any other functor is loaded element by element.
struct SskRows {
    const float* p;
    int ld;
    __device__ __forceinline__ float operator()(int i, int j) const { return p[(size_t)i * ld + j]; }
};
struct SskCols {
    const float* p;
    int ld;
    __device__ __forceinline__ float operator()(int i, int j) const { return p[(size_t)j * ld + i]; }
};

// Four consecutive elements of an operand along one index — f(i, j + q) when
// ALONG_J, else f(i + q, j), q = 0..3 — each 0 outside [0, I)×[0, J).
template <bool ALONG_J, class F>
__device__ __forceinline__ void ssk_load4_each(const F& f, int i, int j, int I, int J, float v[4]) {
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const int ii = ALONG_J ? i : i + q, jj = ALONG_J ? j + q : j;
        v[q] = (ii < I && jj < J) ? f(ii, jj) : 0.0f;
    }
}
template <bool ALONG_J, class F>
__device__ __forceinline__ void ssk_load4(const F& f, int i, int j, int I, int J, float v[4]) {
    ssk_load4_each<ALONG_J>(f, i, j, I, J, v);
}

// One float4 load when the four elements are adjacent in memory, 16-byte aligned
// and all inside the operand; else element by element (edges, odd leading dims).
__device__ __forceinline__ bool ssk_load_vec(const float* q, float v[4]) {
    if (((size_t)q & 15) != 0) return false;
    const float4 x = __ldg(reinterpret_cast<const float4*>(q));
    v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
    return true;
}
template <bool ALONG_J>
__device__ __forceinline__ void ssk_load4(const SskRows& f, int i, int j, int I, int J, float v[4]) {
    if (!(ALONG_J && i < I && j + 3 < J && ssk_load_vec(f.p + (size_t)i * f.ld + j, v)))
        ssk_load4_each<ALONG_J>(f, i, j, I, J, v);
}
template <bool ALONG_J>
__device__ __forceinline__ void ssk_load4(const SskCols& f, int i, int j, int I, int J, float v[4]) {
    if (!(!ALONG_J && j < J && i + 3 < I && ssk_load_vec(f.p + (size_t)j * f.ld + i, v)))
        ssk_load4_each<ALONG_J>(f, i, j, I, J, v);
}

template <bool A_K_FAST, bool B_K_FAST, class LoadA, class LoadB>
__device__ __forceinline__ void ssk_gemm_tile(int M, int N, int K, int m0, int n0, LoadA a, LoadB b,
                                              SskGemmAcc& acc) {
    static_assert(SSK_GEMM_LOADS == 4, "a thread loads one 4-vector per operand per stage");
    // [buffer][k][m or n]; rows of 68 floats keep float4 reads aligned and spread
    // the transposing stores over more banks.
    __shared__ __align__(16) float As[2][SSK_TILE_K][SSK_TILE + 4];
    __shared__ __align__(16) float Bs[2][SSK_TILE_K][SSK_TILE + 4];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int t = ty * SSK_GEMM_THREADS + tx;
    // This thread's 4-vector of each stage, along the operand's fast index: 4
    // consecutive k of one row/column (K_FAST), or 4 consecutive rows/columns at one k.
    const int a_k = A_K_FAST ? (t % (SSK_TILE_K / 4)) * 4 : t / (SSK_TILE / 4);
    const int a_m = A_K_FAST ? t / (SSK_TILE_K / 4) : (t % (SSK_TILE / 4)) * 4;
    const int b_k = B_K_FAST ? (t % (SSK_TILE_K / 4)) * 4 : t / (SSK_TILE / 4);
    const int b_n = B_K_FAST ? t / (SSK_TILE_K / 4) : (t % (SSK_TILE / 4)) * 4;
    float ra[4], rb[4];
    // Global → registers: the stage starting at k0.
    auto fetch = [&](int k0) {
        ssk_load4<A_K_FAST>(a, m0 + a_m, k0 + a_k, M, K, ra);
        ssk_load4<!B_K_FAST>(b, k0 + b_k, n0 + b_n, K, N, rb);
    };
    // Registers → shared buffer `s`.
    auto stash = [&](int s) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            As[s][a_k + (A_K_FAST ? q : 0)][a_m + (A_K_FAST ? 0 : q)] = ra[q];
            Bs[s][b_k + (B_K_FAST ? q : 0)][b_n + (B_K_FAST ? 0 : q)] = rb[q];
        }
    };
    if (K <= 0) return;
    fetch(0);
    stash(0);
    __syncthreads();
    int s = 0;
    for (int k0 = 0; k0 < K; k0 += SSK_TILE_K) {
        const bool more = k0 + SSK_TILE_K < K;  // uniform across the block
        if (more) fetch(k0 + SSK_TILE_K);      // in flight while this stage multiplies
#pragma unroll
        for (int kk = 0; kk < SSK_TILE_K; ++kk) {
            const float4 av = *reinterpret_cast<const float4*>(&As[s][kk][SSK_MICRO * ty]);
            const float4 bv = *reinterpret_cast<const float4*>(&Bs[s][kk][SSK_MICRO * tx]);
            const float ai[SSK_MICRO] = {av.x, av.y, av.z, av.w};
            const float bj[SSK_MICRO] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
            for (int i = 0; i < SSK_MICRO; i++) {
#pragma unroll
                for (int j = 0; j < SSK_MICRO; j++) acc.c[i][j] += ai[i] * bj[j];
            }
        }
        // The other buffer was last read before the previous stage's barrier.
        if (more) stash(s ^ 1);
        __syncthreads();
        s ^= 1;
    }
}

// Calls out(m, n, value) for the thread's outputs that fall inside M×N.
template <class Store>
__device__ __forceinline__ void ssk_gemm_store(int M, int N, int m0, int n0, const SskGemmAcc& acc, Store out) {
#pragma unroll
    for (int i = 0; i < SSK_MICRO; i++) {
#pragma unroll
        for (int j = 0; j < SSK_MICRO; j++) {
            const int m = m0 + SSK_MICRO * threadIdx.y + i, n = n0 + SSK_MICRO * threadIdx.x + j;
            if (m < M && n < N) out(m, n, acc.c[i][j]);
        }
    }
}
