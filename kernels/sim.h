// kernels/sim.h — lets kernels/*.cu compile as C++ on the host for the kernel
// simulator (the `sim` device). build.rs compiles every kernel file as
//
//     g++ -x c++ -std=c++17 -O2 -include kernels/sim.h -I kernels file.cu
//
// (through a generated wrapper that also holds the file's launch trampolines).
// Nothing in a .cu file may test for the simulator; everything CUDA-specific the
// kernels use is provided here, backed by kernels/sim_runtime.cpp:
//
// - threadIdx/blockIdx/blockDim/gridDim read the running fiber and block;
// - __syncthreads() is a real barrier: the calling fiber yields until every live
//   thread of its block has arrived (threads that returned count as arrived, as
//   on hardware);
// - __syncwarp and the full-warp __shfl*_sync are warp-level barriers with an
//   exchange slot per lane (only the full mask 0xffffffff is accepted);
// - static __shared__ is `static thread_local`: one copy per OS worker thread,
//   and an OS thread runs one block at a time, so every block sees its own copy.
//   Like a GPU it is *not* cleared between blocks; dynamic shared memory
//   (SSK_DYNAMIC_SHARED) is poisoned with 0xFF bytes (NaN as float) at every
//   block start;
// - atomics are __atomic builtins (blocks run in parallel on several OS threads).
#pragma once

// `#pragma unroll` is nvcc's; g++ ignores it.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"

#include <math.h>
#include <stdint.h>
#include <string.h>

// ---- execution-space and storage qualifiers --------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __constant__ static const

// ---- vector and index types --------------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};
struct float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct int2 {
    int x, y;
};
struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
};
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return int2{x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

// ---- the runtime (kernels/sim_runtime.cpp) ---------------------------------
// The public head of a fiber: what a kernel may read about its own thread.
struct ssk_fiber_pub {
    uint3 thread_idx;
    int lane;  // threadIdx linearised, mod 32
    int warp;  // threadIdx linearised, / 32
};
extern __thread const ssk_fiber_pub* ssk_self;
extern __thread uint3 ssk_block_idx;
extern __thread dim3 ssk_block_dim;
extern __thread dim3 ssk_grid_dim;

extern "C" {
void ssk_syncthreads(void);
// Warp barrier with exchange: every lane posts `value` and receives the value
// posted by lane `src_lane` (its own when src_lane is outside the warp).
uint64_t ssk_warp_exchange(unsigned mask, uint64_t value, int src_lane);
void* ssk_dynamic_smem(void);
// Aborts the running block with a message (reported by the launcher).
void ssk_fail(const char* msg);
}

#define threadIdx (ssk_self->thread_idx)
#define blockIdx ssk_block_idx
#define blockDim ssk_block_dim
#define gridDim ssk_grid_dim
#define warpSize 32

#define __syncthreads() ssk_syncthreads()
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)ssk_warp_exchange(mask, 0, 0); }

// Dynamic shared memory: `SSK_DYNAMIC_SHARED(float, smem);` declares `float* smem`.
// common.cuh defines the CUDA spelling (extern __shared__) when this header is absent.
#define SSK_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(ssk_dynamic_smem())

// ---- warp shuffles (full warp) -------------------------------------------
template <class T>
static inline T ssk_shfl_from(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = ssk_warp_exchange(mask, bits, src);
    T r;
    memcpy(&r, &bits, sizeof(T));
    return r;
}
template <class T>
static inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    int lane = ssk_self->lane;
    return ssk_shfl_from(mask, v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = ssk_self->lane;
    int src = lane ^ lane_mask;
    if (src >= (lane & ~(width - 1)) + width) src = lane;
    return ssk_shfl_from(mask, v, src);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = ssk_self->lane;
    int src = ((lane & (width - 1)) + (int)delta < width) ? lane + (int)delta : lane;
    return ssk_shfl_from(mask, v, src);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = ssk_self->lane;
    int src = ((lane & (width - 1)) >= (int)delta) ? lane - (int)delta : lane;
    return ssk_shfl_from(mask, v, src);
}

// ---- atomics ------------------------------------------------------------------
static inline float atomicAdd(float* addr, float v) {
    uint32_t* p = reinterpret_cast<uint32_t*>(addr);
    uint32_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        float f;
        memcpy(&f, &old, 4);
        f += v;
        uint32_t want;
        memcpy(&want, &f, 4);
        if (__atomic_compare_exchange_n(p, &old, want, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            memcpy(&f, &old, 4);
            return f;
        }
    }
}
static inline int atomicAdd(int* addr, int v) { return __atomic_fetch_add(addr, v, __ATOMIC_RELAXED); }
static inline unsigned atomicAdd(unsigned* addr, unsigned v) {
    return __atomic_fetch_add(addr, v, __ATOMIC_RELAXED);
}
static inline int atomicMax(int* addr, int v) {
    int old = __atomic_load_n(addr, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(addr, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline int atomicMin(int* addr, int v) {
    int old = __atomic_load_n(addr, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(addr, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline int atomicCAS(int* addr, int compare, int val) {
    __atomic_compare_exchange_n(addr, &compare, val, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
static inline unsigned long long atomicMin(unsigned long long* addr, unsigned long long v) {
    unsigned long long old = __atomic_load_n(addr, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(addr, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline int atomicExch(int* addr, int v) { return __atomic_exchange_n(addr, v, __ATOMIC_RELAXED); }
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- math: CUDA's device functions and intrinsics -------------------------------
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// __expf and __logf: glibc declares both with the same meaning.
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, 4);
    return i;
}
static inline float __uint_as_float(unsigned i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned i;
    memcpy(&i, &f, 4);
    return i;
}
// Double arithmetic rounded to nearest and never fused into an FMA (on the GPU these
// intrinsics also stop nvcc's contraction, so the sums match the CPU's bit for bit).
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline long long __double_as_longlong(double x) {
    long long i;
    memcpy(&i, &x, 8);
    return i;
}
static inline double __longlong_as_double(long long i) {
    double x;
    memcpy(&x, &i, 8);
    return x;
}
static inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
// The lanes whose predicate is true, as a bit mask, in every lane (full warp only).
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    unsigned bits = pred ? 1u << ssk_self->lane : 0u;
    for (int offset = 16; offset > 0; offset >>= 1) bits |= __shfl_xor_sync(mask, bits, offset);
    return bits;
}
// __ldg is a read-only-cache load on the GPU, a plain load here.
template <class T>
static inline T __ldg(const T* p) { return *p; }

// ---- TF32 tensor cores (kernels/common.cuh, SSK_TF32) -----------------------------
// The simulator cannot run PTX: ssk_tf32 and ssk_mma_tf32 are emulated here, and the
// variant is chosen per launch (ssk_sim_launch::tf32) instead of per compilation.
#define SSK_MMA_EMULATED
extern __thread int ssk_sim_tf32;
#define SSK_SIM_TF32_ON() (ssk_sim_tf32 != 0)

// cvt.rna.tf32.f32: round to a 10-bit mantissa, to nearest, ties away from zero
// (adding half an ulp to the magnitude bits, then truncating); NaN stays NaN (its
// payload could sit in the dropped bits), ±Inf stays ±Inf, and a finite value past
// the largest TF32 rounds to ±Inf as round-to-nearest does.
static inline float ssk_tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) u |= 0x00400000u;  // quiet NaN
    else u += 0x1000u;
    u &= ~0x1fffu;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, d += A·B, over the warp: every
// lane posts its fragments (layout in common.cuh) and computes its own four outputs
// from the warp's. The model: the mma reads only the TF32 bits of its operands,
// each product of two TF32 values is exact in f32 (11 + 11 significant bits), and
// the eight products are added to d in k order in f32 (the hardware's order and
// internal precision are unspecified; the parity tests' bound covers both).
static inline void ssk_mma_tf32(float d[4], const float a[4], const float b[2]) {
    static thread_local float frag[32][32][6];  // [warp][lane][a0..a3, b0, b1]
    const int w = ssk_self->warp, lane = ssk_self->lane;
    for (int i = 0; i < 4; i++) frag[w][lane][i] = a[i];
    frag[w][lane][4] = b[0];
    frag[w][lane][5] = b[1];
    __syncwarp();
    auto bits = [](float v) {
        uint32_t u;
        memcpy(&u, &v, 4);
        u &= ~0x1fffu;
        memcpy(&v, &u, 4);
        return v;
    };
    const int g = lane >> 2, q = lane & 3;
    for (int r = 0; r < 4; r++) {
        const int row = g + 8 * (r >> 1), col = 2 * q + (r & 1);
        float s = d[r];
        for (int k = 0; k < 8; k++) {
            // A(row, k) is in lane 4·(row % 8) + k % 4, register (row ≥ 8) + 2·(k ≥ 4);
            // B(k, col) in lane 4·col + k % 4, register b0 or b1 (k ≥ 4).
            const float av = frag[w][4 * (row & 7) + (k & 3)][(row >> 3) + 2 * (k >> 2)];
            const float bv = frag[w][4 * col + (k & 3)][4 + (k >> 2)];
            s += bits(av) * bits(bv);
        }
        d[r] = s;
    }
    __syncwarp();  // frag is rewritten by the next call
}
