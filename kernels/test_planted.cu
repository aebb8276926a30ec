// kernels/test_planted.cu — kernels with planted bugs, used only by the tests of
// the simulator (tests/sim_parity.rs, src/backend/sim): they prove that the
// simulator catches what a GPU would silently get wrong; and a probe of the
// simulator's TF32 emulation. Not part of the NVRTC module set of the trainer.
#include "common.cuh"

// y[i] = 2·x[i] for i < n, and — the planted bug — thread n (when the grid has
// one) writes y[n], one element past the end. grid-stride, block (256).
extern "C" __global__ void planted_oob_write(const float* __restrict__ x, float* __restrict__ y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= n; i += gridDim.x * blockDim.x)
        y[i] = i < n ? 2.0f * x[i] : 0.0f;
}

// Rotate within a block through shared memory: y[g] = x[g + 1 within the block].
// With use_barrier = 0 the __syncthreads between the shared-memory write and the
// read is missing (the planted bug). grid (n / 256), block (256), n a multiple of 256.
extern "C" __global__ void planted_missing_barrier(const float* __restrict__ x, float* __restrict__ y,
                                                   int use_barrier) {
    __shared__ float s[256];
    const int t = threadIdx.x, g = blockIdx.x * blockDim.x + t;
    s[t] = x[g];
    if (use_barrier) __syncthreads();
    y[g] = s[(t + 1) % blockDim.x];
}

// y[i] = ssk_tf32(x[i]) (common.cuh: cvt.rna.tf32.f32; the simulator's emulation
// in sim.h), for the rounding's bit-pattern test. grid-stride, block (256).
extern "C" __global__ void probe_tf32_round(const float* __restrict__ x, float* __restrict__ y, int n) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // cvt.rna.tf32 is sm_80+; this file loads on any GPU
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = ssk_tf32(x[i]);
#endif
}
