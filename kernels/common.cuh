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

// ---- tiled SGEMM core -----------------------------------------------------------
// One 32×32 tile of C (rows m0.., cols n0..) of C = A·B with A: M×K, B: K×N, read
// through the functors a(m, k) and b(k, n) (implicit im2col, transposes and
// branch maps live in the functors). Block: 16×16 threads (blockDim = (16, 16));
// thread (tx, ty) accumulates the four outputs (m0 + ty + 16·i, n0 + tx + 16·j)
// into acc[i][j] (added to, not overwritten: a caller may run several GEMMs into
// one accumulator). K advances in steps of 16 through shared memory.
// Out-of-range elements load as 0, so any M, N, K works.
// A_K_FAST / B_K_FAST: whether consecutive k are adjacent in memory for that
// operand; it picks which index consecutive threads walk when loading a tile, so
// global loads coalesce.
#define SSK_TILE 32
#define SSK_TILE_K 16

template <bool A_K_FAST, bool B_K_FAST, class LoadA, class LoadB>
__device__ __forceinline__ void ssk_gemm_tile(int M, int N, int K, int m0, int n0, LoadA a, LoadB b,
                                              float acc[2][2]) {
    __shared__ float As[SSK_TILE_K][SSK_TILE + 1];  // As[k][m]; +1 avoids bank conflicts
    __shared__ float Bs[SSK_TILE_K][SSK_TILE + 1];  // Bs[k][n]
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int t = ty * 16 + tx;
    for (int k0 = 0; k0 < K; k0 += SSK_TILE_K) {
        // 512 elements per operand, two per thread.
        for (int e = t; e < SSK_TILE * SSK_TILE_K; e += 256) {
            int kk, mm;
            if (A_K_FAST) {
                kk = e % SSK_TILE_K;
                mm = e / SSK_TILE_K;
            } else {
                kk = e / SSK_TILE;
                mm = e % SSK_TILE;
            }
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? a(m, k) : 0.0f;
            int kb, nn;
            if (B_K_FAST) {
                kb = e % SSK_TILE_K;
                nn = e / SSK_TILE_K;
            } else {
                kb = e / SSK_TILE;
                nn = e % SSK_TILE;
            }
            const int n = n0 + nn, kn = k0 + kb;
            Bs[kb][nn] = (n < N && kn < K) ? b(kn, n) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < SSK_TILE_K; ++kk) {
            const float a0 = As[kk][ty], a1 = As[kk][ty + 16];
            const float b0 = Bs[kk][tx], b1 = Bs[kk][tx + 16];
            acc[0][0] += a0 * b0;
            acc[0][1] += a0 * b1;
            acc[1][0] += a1 * b0;
            acc[1][1] += a1 * b1;
        }
        __syncthreads();  // the tile is overwritten next iteration
    }
}

// Calls out(m, n, value) for the thread's four outputs that fall inside M×N.
template <class Store>
__device__ __forceinline__ void ssk_gemm_store(int M, int N, int m0, int n0, const float acc[2][2], Store out) {
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            const int m = m0 + threadIdx.y + 16 * i, n = n0 + threadIdx.x + 16 * j;
            if (m < M && n < N) out(m, n, acc[i][j]);
        }
    }
}
