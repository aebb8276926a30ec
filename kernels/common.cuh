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

// A multi-tensor launch's table, passed by value (optim.cu): up to SSK_MAX_TENSORS
// tensors of one update, each with up to two state buffers, and the blocks that
// cover each: tensor i is blocks [first_block[i], first_block[i + 1]), SSK_CHUNK
// elements a block. 40·64 + 8 bytes of the 4 KiB of kernel parameters.
// launch/optim.rs writes these bytes (pointers first, then the ints: no padding).
#define SSK_MAX_TENSORS 64
#define SSK_CHUNK 2048
struct SskTensorList {
    float* param[SSK_MAX_TENSORS];
    const float* grad[SSK_MAX_TENSORS];
    float* state0[SSK_MAX_TENSORS];
    float* state1[SSK_MAX_TENSORS];
    int len[SSK_MAX_TENSORS];
    int first_block[SSK_MAX_TENSORS + 1];
    int count;
};

// The tensor that block `b` of a multi-tensor launch works on (a uniform scan:
// at most SSK_MAX_TENSORS compares, in the kernel parameter space).
__device__ __forceinline__ int ssk_tensor_of(const SskTensorList& list, int b) {
    int t = 0;
    while (t + 1 < list.count && list.first_block[t + 1] <= b) t++;
    return t;
}

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
// One TM×TN tile of C (rows m0.., cols n0..) of C = A·B with A: M×K, B: K×N, read
// through the functors a(m, k) and b(k, n) (implicit im2col, transposes and branch
// maps live in the functors). Tile shapes: TM·TN = 4096 outputs, 64×64 (SSK_TILE, the
// default) or 32×128 (conv backward-data, whose M is a layer's input channels: 20 of
// a 64-row tile's rows were MNIST conv2's). Block: 256 threads (blockDim =
// (SSK_GEMM_THREADS, SSK_GEMM_THREADS)), flat index t; thread (tx, ty) =
// (t mod TN/4, t div TN/4) owns the 4×4 micro-tile of outputs (m0 + 4·ty + i,
// n0 + 4·tx + j) in registers, acc.c[i][j] (added to, not overwritten: a caller may
// run several GEMMs into one accumulator).
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
// operand; the stage's operand tile is loaded as 4-vectors along that index
// (consecutive threads continue along it, so global loads coalesce), vector v by
// thread v mod 256 (TM or TN / 16 elements a thread): one float4 when the operand is
// an SskRows / SskCols matrix and the 4 are aligned and in range, else 4 scalar
// loads through the functor.
// build.rs exports every integer `#define SSK_*` of this file to Rust
// (backend::kernels::geometry): the launch plans' grids read them from there.
#define SSK_TILE 64
#define SSK_TILE_K 16
#define SSK_GEMM_THREADS 16
#define SSK_MICRO 4
// conv backward-data's tile: SSK_NARROW_M × SSK_WIDE_N.
#define SSK_NARROW_M 32
#define SSK_WIDE_N 128

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

// ---- TF32 tensor-core variant (SSK_TF32) -------------------------------------------
// With SSK_TF32 defined (the cuda device compiles a second variant when the option
// SSKERNEL_TF32=1 is on; sm_80+) the same tile is multiplied with
// mma.sync.m16n8k8 TF32 tensor-core instructions: operands are rounded to TF32
// (cvt.rna: 10-bit mantissa, round to nearest, ties away from zero) when stored to
// shared memory, products are exact, accumulation is f32. Warp w of the block owns
// the 32×16 sub-tile (rows 32·(w / (TN/16)).., cols 16·(w % (TN/16))..: w / 4 and w % 4
// on a 64×64 tile, 0 and w on a 32×128 one) as 2×2 mma tiles of 16×8,
// and acc.c[2·mi + ni][r] holds register r of mma tile (mi, ni) (PTX ISA,
// "Matrix Fragments for mma.m16n8k8", .tf32): with g = lane / 4, q = lane % 4,
// A (16×8, row): a0 (g, q), a1 (g + 8, q), a2 (g, q + 4), a3 (g + 8, q + 4);
// B (8×8, col): b0 (k = q, n = g), b1 (k = q + 4, n = g);
// C (16×8): c0 (g, 2q), c1 (g, 2q + 1), c2 (g + 8, 2q), c3 (g + 8, 2q + 1).
// The simulator cannot run PTX: sim.h defines SSK_MMA_EMULATED with CPU versions of
// ssk_tf32 and ssk_mma_tf32 that follow the same fragment layout, and
// SSK_SIM_TF32_ON() to choose the variant per launch.
#ifndef SSK_MMA_EMULATED
// cvt.rna.tf32.f32: x rounded to TF32 (low 13 bits zero), as a float.
__device__ __forceinline__ float ssk_tf32(float x) {
    unsigned u;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(x));
    return __uint_as_float(u);
}
// d += A·B for one 16×8×8 mma tile; a, b hold TF32 values (fragment layout above).
__device__ __forceinline__ void ssk_mma_tf32(float d[4], const float a[4], const float b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
          "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
}
#endif

// Expands `call(TF32)` with the variant this compilation (or, in the simulator, this
// launch) uses.
#if defined(SSK_SIM_TF32_ON)
#define SSK_GEMM_VARIANT(call) \
    do {                       \
        if (SSK_SIM_TF32_ON()) \
            call(true);        \
        else                   \
            call(false);       \
    } while (0)
#elif defined(SSK_TF32)
#define SSK_GEMM_VARIANT(call) call(true)
#else
#define SSK_GEMM_VARIANT(call) call(false)
#endif

// Offset (row, col) in the TM×TN tile of acc.c[i][j] for this thread.
template <bool TF32, int TM, int TN>
__device__ __forceinline__ void ssk_gemm_at(int i, int j, int& row, int& col) {
    const int t = threadIdx.y * SSK_GEMM_THREADS + threadIdx.x;
    if constexpr (TF32) {
        // Warp w: the 32×16 sub-tile (32·(w div TN/16), 16·(w mod TN/16)).
        const int lane = t & 31, w = t >> 5;
        row = 32 * (w / (TN / 16)) + 16 * (i / 2) + (lane >> 2) + 8 * (j >> 1);
        col = 16 * (w % (TN / 16)) + 8 * (i % 2) + 2 * (lane & 3) + (j & 1);
    } else {
        row = SSK_MICRO * (t / (TN / SSK_MICRO)) + i;
        col = SSK_MICRO * (t % (TN / SSK_MICRO)) + j;
    }
}

// An operand element as the multiply reads it.
template <bool TF32>
__device__ __forceinline__ float ssk_gemm_in(float x) {
    if constexpr (TF32) return ssk_tf32(x);
    return x;
}

template <bool TF32, int TM, int TN>
struct SskGemm {
    static_assert(TM * TN == SSK_MICRO * SSK_MICRO * 256 && TM % 32 == 0 && TN % 16 == 0 && SSK_TILE_K % 8 == 0,
                  "256 threads of 4×4 outputs; the TF32 warps' 32×16 sub-tiles cover the tile");
    // 4-vectors of an operand tile per stage, and per thread (the last round partial
    // when the tile has fewer than 256·n of them).
    static constexpr int A_VECS = TM * SSK_TILE_K / 4, B_VECS = TN * SSK_TILE_K / 4;
    static constexpr int A_PER = (A_VECS + 255) / 256, B_PER = (B_VECS + 255) / 256;

    template <bool A_K_FAST, bool B_K_FAST, class LoadA, class LoadB>
    static __device__ __forceinline__ void tile(int M, int N, int K, int m0, int n0, LoadA a, LoadB b,
                                                SskGemmAcc& acc) {
        // [buffer][k][m or n]; rows of TM/TN + 4 floats keep float4 reads aligned and
        // spread the transposing stores over more banks; + 8 (TF32) make the fragment
        // loads (bank 8·(lane % 4) + lane / 4) conflict-free.
        constexpr int LDA = TM + (TF32 ? 8 : 4), LDB = TN + (TF32 ? 8 : 4);
        __shared__ __align__(16) float As[2][SSK_TILE_K][LDA];
        __shared__ __align__(16) float Bs[2][SSK_TILE_K][LDB];
        const int t = threadIdx.y * SSK_GEMM_THREADS + threadIdx.x;
        const int tx = t % (TN / SSK_MICRO), ty = t / (TN / SSK_MICRO);
        // This thread's 4-vectors of each stage, along the operand's fast index: 4
        // consecutive k of one row/column (K_FAST), or 4 consecutive rows/columns at one k.
        int a_k[A_PER], a_m[A_PER], b_k[B_PER], b_n[B_PER];
#pragma unroll
        for (int u = 0; u < A_PER; u++) {
            const int v = t + 256 * u;
            a_k[u] = A_K_FAST ? (v % (SSK_TILE_K / 4)) * 4 : v / (TM / 4);
            a_m[u] = A_K_FAST ? v / (SSK_TILE_K / 4) : (v % (TM / 4)) * 4;
        }
#pragma unroll
        for (int u = 0; u < B_PER; u++) {
            const int v = t + 256 * u;
            b_k[u] = B_K_FAST ? (v % (SSK_TILE_K / 4)) * 4 : v / (TN / 4);
            b_n[u] = B_K_FAST ? v / (SSK_TILE_K / 4) : (v % (TN / 4)) * 4;
        }
        const auto a_mine = [&](int u) { return t + 256 * u < A_VECS; };
        const auto b_mine = [&](int u) { return t + 256 * u < B_VECS; };
        float ra[A_PER][4], rb[B_PER][4];
        // Global → registers: the stage starting at k0.
        auto fetch = [&](int k0) {
#pragma unroll
            for (int u = 0; u < A_PER; u++)
                if (a_mine(u)) ssk_load4<A_K_FAST>(a, m0 + a_m[u], k0 + a_k[u], M, K, ra[u]);
#pragma unroll
            for (int u = 0; u < B_PER; u++)
                if (b_mine(u)) ssk_load4<!B_K_FAST>(b, k0 + b_k[u], n0 + b_n[u], K, N, rb[u]);
        };
        // Registers → shared buffer `s` (rounded to TF32 once here, not per fragment load).
        auto stash = [&](int s) {
#pragma unroll
            for (int u = 0; u < A_PER; u++)
#pragma unroll
                for (int q = 0; q < 4; q++)
                    if (a_mine(u))
                        As[s][a_k[u] + (A_K_FAST ? q : 0)][a_m[u] + (A_K_FAST ? 0 : q)] =
                            ssk_gemm_in<TF32>(ra[u][q]);
#pragma unroll
            for (int u = 0; u < B_PER; u++)
#pragma unroll
                for (int q = 0; q < 4; q++)
                    if (b_mine(u))
                        Bs[s][b_k[u] + (B_K_FAST ? q : 0)][b_n[u] + (B_K_FAST ? 0 : q)] =
                            ssk_gemm_in<TF32>(rb[u][q]);
        };
        if (K <= 0) return;
        fetch(0);
        stash(0);
        __syncthreads();
        int s = 0;
        for (int k0 = 0; k0 < K; k0 += SSK_TILE_K) {
            const bool more = k0 + SSK_TILE_K < K;  // uniform across the block
            if (more) fetch(k0 + SSK_TILE_K);      // in flight while this stage multiplies
            if constexpr (TF32) {
                const int lane = t & 31, w = t >> 5, g = lane >> 2, q = lane & 3;
                const int wm = 32 * (w / (TN / 16)), wn = 16 * (w % (TN / 16));
#pragma unroll
                for (int kk = 0; kk < SSK_TILE_K; kk += 8) {
                    float af[2][4], bf[2][2];
#pragma unroll
                    for (int mi = 0; mi < 2; mi++) {
                        const int r = wm + 16 * mi + g;
                        af[mi][0] = As[s][kk + q][r];
                        af[mi][1] = As[s][kk + q][r + 8];
                        af[mi][2] = As[s][kk + q + 4][r];
                        af[mi][3] = As[s][kk + q + 4][r + 8];
                    }
#pragma unroll
                    for (int ni = 0; ni < 2; ni++) {
                        bf[ni][0] = Bs[s][kk + q][wn + 8 * ni + g];
                        bf[ni][1] = Bs[s][kk + q + 4][wn + 8 * ni + g];
                    }
#pragma unroll
                    for (int mi = 0; mi < 2; mi++) {
#pragma unroll
                        for (int ni = 0; ni < 2; ni++) ssk_mma_tf32(acc.c[2 * mi + ni], af[mi], bf[ni]);
                    }
                }
            } else {
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
            }
            // The other buffer was last read before the previous stage's barrier.
            if (more) stash(s ^ 1);
            __syncthreads();
            s ^= 1;
        }
    }

    template <class Store>
    static __device__ __forceinline__ void store(int M, int N, int m0, int n0, const SskGemmAcc& acc, Store out) {
#pragma unroll
        for (int i = 0; i < SSK_MICRO; i++) {
#pragma unroll
            for (int j = 0; j < SSK_MICRO; j++) {
                int row, col;
                ssk_gemm_at<TF32, TM, TN>(i, j, row, col);
                const int m = m0 + row, n = n0 + col;
                if (m < M && n < N) out(m, n, acc.c[i][j]);
            }
        }
    }
};

// acc += the TM×TN tile's A·B (see above); the TF32 variant keeps acc in mma
// fragments, so read it only through ssk_gemm_store with the same TM, TN.
template <bool A_K_FAST, bool B_K_FAST, int TM = SSK_TILE, int TN = SSK_TILE, class LoadA, class LoadB>
__device__ __forceinline__ void ssk_gemm_tile(int M, int N, int K, int m0, int n0, LoadA a, LoadB b,
                                              SskGemmAcc& acc) {
#define SSK_CALL_TILE(TF32) SskGemm<TF32, TM, TN>::template tile<A_K_FAST, B_K_FAST>(M, N, K, m0, n0, a, b, acc)
    SSK_GEMM_VARIANT(SSK_CALL_TILE);
#undef SSK_CALL_TILE
}

// Calls out(m, n, value) for the thread's outputs that fall inside M×N.
template <int TM = SSK_TILE, int TN = SSK_TILE, class Store>
__device__ __forceinline__ void ssk_gemm_store(int M, int N, int m0, int n0, const SskGemmAcc& acc, Store out) {
#define SSK_CALL_STORE(TF32) SskGemm<TF32, TM, TN>::store(M, N, m0, n0, acc, out)
    SSK_GEMM_VARIANT(SSK_CALL_STORE);
#undef SSK_CALL_STORE
}

// ---- split-K hand-over -------------------------------------------------------------
// A GEMM whose K is cut into `slices` slices, a block each (linear.cu, conv.cu): each
// block writes its partial tile to the workspace `ws` and counts itself in
// counters[tile]; the last block of a tile to arrive adds the partials in slice order
// 0, 1, …, slices − 1 (the same bits whichever block is last) and sets the counter
// back to 0 (`counters` is zero between launches: KernelDevice::counters). Returns
// true in the block that finishes the tile, with acc = the sum of every slice's
// partial; false in the others (which have nothing left to do). The workspace holds,
// per tile and slice, each accumulator register of every thread:
// ws[((tile·slices + slice)·16 + r)·T + t] (T threads; a warp's store is contiguous).
// Uniform across the block.
__device__ __forceinline__ bool ssk_split_k_last(SskGemmAcc& acc, float* ws, unsigned* counters, int tile, int slice,
                                             int slices) {
    if (slices == 1) return true;
    constexpr int R = SSK_MICRO * SSK_MICRO;
    const int threads = blockDim.x * blockDim.y, t = threadIdx.y * blockDim.x + threadIdx.x;
    float* part = ws + (size_t)tile * slices * R * threads + t;
#pragma unroll
    for (int r = 0; r < R; r++) part[((size_t)slice * R + r) * threads] = acc.c[r / SSK_MICRO][r % SSK_MICRO];
    __threadfence();  // the partial is visible before the count that publishes it
    __syncthreads();
    __shared__ unsigned arrived;
    if (t == 0) arrived = atomicAdd(&counters[tile], 1u);
    __syncthreads();
    if (arrived != (unsigned)(slices - 1)) return false;
    __threadfence();  // the other slices' partials, published by their counts
    const volatile float* parts = part;  // written by other blocks in this launch: not through L1
    // Slices outside, registers inside (unrolled: acc stays in registers), each sum
    // in slice order.
    float sum[R];
    for (int s = 0; s < slices; s++) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float v = s == slice ? acc.c[r / SSK_MICRO][r % SSK_MICRO] : parts[((size_t)s * R + r) * threads];
            sum[r] = s == 0 ? v : sum[r] + v;
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) acc.c[r / SSK_MICRO][r % SSK_MICRO] = sum[r];
    if (t == 0) counters[tile] = 0;
    return true;
}
