// kernels/mreach.cu — HDBSCAN's mutual reachability on the device (issue 14): core
// distances by a k-nearest selection held in registers, and the rounds of Borůvka's
// minimum spanning tree, tile by tile, never an n × n matrix.
// CPU twin: src/backend/cpu/mreach.rs. Host loop: src/sharing/hdbscan/device.rs.
//
// Exactness. Every squared distance is the CPU's ordered sum Σ_k (x_i[k] − x_j[k])²
// in double with each operation rounded on its own (__dsub_rn / __dmul_rn /
// __dadd_rn: never fused into an FMA), i.e. the bits `distance::euclidean` squares
// before its sqrt, and sqrt is correctly rounded on both sides. So core distances,
// edge weights and every comparison are the CPU's, ties included, and the edge order
// (w, smaller index, larger index) is a total order: the MST is unique and equal to
// the CPU Borůvka's (src/sharing/hdbscan/boruvka.rs uses the same order).
//
// Buffers: xt [d, n] double (the points transposed, so a warp's lanes read
// consecutive points); indices `unsigned`; 64-bit keys `unsigned long long`.
#include "common.cuh"

// One query point per warp, four warps per block.
#define MREACH_WARPS 4
// Most entries of a k-nearest list: one per lane.
#define MREACH_MAX_CAP 32
#define MREACH_NONE 0xffffffffffffffffull

__device__ __forceinline__ double mreach_inf() { return __longlong_as_double(0x7ff0000000000000ll); }

// The CPU's ordered squared distance between points i and j (see the header).
__device__ __forceinline__ double mreach_sq(const double* __restrict__ xt, int n, int d, int i, int j) {
    double acc = 0.0;
    for (int k = 0; k < d; ++k) {
        const double t = __dsub_rn(xt[(size_t)k * n + i], xt[(size_t)k * n + j]);
        acc = __dadd_rn(acc, __dmul_rn(t, t));
    }
    return acc;
}

// near_sq, near_idx [n, cap]: the cap nearest points of point i (itself included) by
// (squared distance, index), ascending; core [n]: sqrt(near_sq[i, k]), the k-th
// nearest other point (distance.rs's convention: i itself is entry 0 or ties at 0).
// 1 ≤ k < cap ≤ min(n, 32). Grid: ceil(n / 4) blocks of 128 threads; warp w of
// block b takes point 4b + w. Lane r holds entry r of the sorted list; each batch of
// 32 candidates (one per lane) is merged by a ballot of those beating the current
// last entry, inserted one at a time (entries after the slot move up a lane).
extern "C" __global__ void mreach_knn(const double* __restrict__ xt, double* __restrict__ near_sq,
                                      unsigned* __restrict__ near_idx, double* __restrict__ core, int n, int d,
                                      int k, int cap) {
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * MREACH_WARPS + (threadIdx.x >> 5);
    if (i >= n) return;  // the whole warp
    double lsq = mreach_inf();
    unsigned lidx = 0xffffffffu;
    for (int j0 = 0; j0 < n; j0 += 32) {
        const int j = j0 + lane;
        const double sq = j < n ? mreach_sq(xt, n, d, i, j) : mreach_inf();
        const unsigned jj = j < n ? (unsigned)j : 0xffffffffu;
        const double last_sq = __shfl_sync(SSK_FULL_MASK, lsq, cap - 1);
        const unsigned last_idx = __shfl_sync(SSK_FULL_MASK, lidx, cap - 1);
        unsigned better = __ballot_sync(SSK_FULL_MASK, sq < last_sq || (sq == last_sq && jj < last_idx));
        while (better) {
            const int src = __ffs(better) - 1;
            better &= better - 1;
            const double csq = __shfl_sync(SSK_FULL_MASK, sq, src);
            const unsigned cidx = __shfl_sync(SSK_FULL_MASK, jj, src);
            const int after = lsq > csq || (lsq == csq && lidx > cidx);
            const double up_sq = __shfl_up_sync(SSK_FULL_MASK, lsq, 1);
            const unsigned up_idx = __shfl_up_sync(SSK_FULL_MASK, lidx, 1);
            const int up_after = __shfl_up_sync(SSK_FULL_MASK, after, 1);
            if (lane < cap && after) {
                if (lane == 0 || !up_after) {
                    lsq = csq;
                    lidx = cidx;
                } else {
                    lsq = up_sq;
                    lidx = up_idx;
                }
            }
        }
    }
    if (lane < cap) {
        near_sq[(size_t)i * cap + lane] = lsq;
        near_idx[(size_t)i * cap + lane] = lidx;
    }
    if (lane == k) core[i] = sqrt(lsq);
}

// The warp's minimum (w, pair) in every lane.
__device__ __forceinline__ void mreach_warp_min(double& bw, unsigned long long& bp) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const double ow = __shfl_xor_sync(SSK_FULL_MASK, bw, offset);
        const unsigned long long op = __shfl_xor_sync(SSK_FULL_MASK, bp, offset);
        if (ow < bw || (ow == bw && op < bp)) {
            bw = ow;
            bp = op;
        }
    }
}

// comp_w[c] = comp_pair[c] = none, for c < n (the start of a round).
// Grid-stride: grid (any), block (256).
extern "C" __global__ void mreach_reset(unsigned long long* __restrict__ comp_w,
                                        unsigned long long* __restrict__ comp_pair, int n) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < n; c += gridDim.x * blockDim.x) {
        comp_w[c] = MREACH_NONE;
        comp_pair[c] = MREACH_NONE;
    }
}

// A Borůvka round, step 1: point i's lightest edge to a point of another component
// (comp [n]: each point's component id, < n) in the order (w, a, b), a < b, with
// w = max(max(d(i, j), core_j), core_i) (distance::mutual_reachability's order of
// operations): best_w[i] (+inf when none), best_pair[i] = a << 32 | b (none when
// none); and comp_w[comp[i]] = min of best_w as bits over the component (non-negative
// doubles order as their bits: an integer atomicMin, deterministic).
// The nearest list first (near_sq, near_idx [n, cap] from mreach_knn): its entries in
// other components give a best (bw, bp) at once, and every point outside the list is
// at least as far as its last entry, so its edge weighs at least
// bound = max(sqrt(near_sq[i, cap − 1]), core_i). bw < bound (strictly: an equal
// weight could still win on the pair) or a list holding every point (cap = n) ends
// the search; otherwise the scan of all points follows, seeded with bw, skipping
// points j whose lower bound max(core_i, core_j) is above the lane's best (strictly
// above, as before). The result is the same (w, a, b) minimum either way: the list
// only saves work (most points in early rounds, when components are small).
// Geometry as mreach_knn.
extern "C" __global__ void mreach_lightest(const double* __restrict__ xt, const double* __restrict__ core,
                                           const double* __restrict__ near_sq,
                                           const unsigned* __restrict__ near_idx,
                                           const unsigned* __restrict__ comp, double* __restrict__ best_w,
                                           unsigned long long* __restrict__ best_pair,
                                           unsigned long long* __restrict__ comp_w, int n, int d, int cap) {
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * MREACH_WARPS + (threadIdx.x >> 5);
    if (i >= n) return;  // the whole warp
    const double ci = core[i];
    const unsigned own = comp[i];
    double bw = mreach_inf();
    unsigned long long bp = MREACH_NONE;
    if (lane < cap) {
        const unsigned j = near_idx[(size_t)i * cap + lane];
        if (comp[j] != own) {
            // The scan's weight, bit for bit: near_sq holds mreach_sq(xt, n, d, i, j).
            bw = fmax(fmax(sqrt(near_sq[(size_t)i * cap + lane]), core[j]), ci);
            bp = (unsigned)i < j ? ((unsigned long long)i << 32 | j) : ((unsigned long long)j << 32 | (unsigned)i);
        }
    }
    mreach_warp_min(bw, bp);
    const double bound = fmax(sqrt(near_sq[(size_t)i * cap + cap - 1]), ci);
    const bool scan = cap < n && !(bw < bound);
    for (int j = lane; scan && j < n; j += 32) {
        if (comp[j] == own) continue;
        const double cj = core[j];
        if (fmax(ci, cj) > bw) continue;
        const double w = fmax(fmax(sqrt(mreach_sq(xt, n, d, i, j)), cj), ci);
        const unsigned long long p = i < j ? ((unsigned long long)i << 32 | (unsigned)j)
                                           : ((unsigned long long)j << 32 | (unsigned)i);
        if (w < bw || (w == bw && p < bp)) {
            bw = w;
            bp = p;
        }
    }
    mreach_warp_min(bw, bp);
    if (lane == 0) {
        best_w[i] = bw;
        best_pair[i] = bp;
        if (bp != MREACH_NONE) atomicMin(&comp_w[own], (unsigned long long)__double_as_longlong(bw));
    }
}

// Step 2: comp_pair[c] = the smallest best_pair among the points of component c whose
// best_w is comp_w[c]: the component's lightest outgoing edge in the (w, a, b) order,
// by an integer atomicMin (deterministic). Grid-stride: grid (any), block (256).
extern "C" __global__ void mreach_component_edge(const double* __restrict__ best_w,
                                                 const unsigned long long* __restrict__ best_pair,
                                                 const unsigned* __restrict__ comp,
                                                 const unsigned long long* __restrict__ comp_w,
                                                 unsigned long long* __restrict__ comp_pair, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const unsigned long long p = best_pair[i];
        const unsigned c = comp[i];
        if (p != MREACH_NONE && (unsigned long long)__double_as_longlong(best_w[i]) == comp_w[c])
            atomicMin(&comp_pair[c], p);
    }
}
