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
// Pruning. The points are cut into tiles of 32 consecutive indices (the host passes
// them in KD-tree order, so a tile is a small region of space) with a bounding box
// each. A point's squared distance to a box sums the per-coordinate gaps in the same
// order with the same roundings; rounding is monotone, so the bound never exceeds
// the computed squared distance of any point in the tile, and skipping a tile whose
// bound is strictly above the search's limit is exact, ties included
// (kdtree.rs's rule). The scans visit tiles by batches of 32 (one per lane) around
// the query's own tile, the surviving tiles of a batch nearest first.
//
// Buffers: xt [d, n] double (the points transposed, so a warp's lanes read
// consecutive points); indices `unsigned`; 64-bit keys `unsigned long long`; tile
// boxes lo, hi [d, tiles] double, tiles = ceil(n / 32).
#include "common.cuh"

// One query point per warp, four warps per block.
#define MREACH_WARPS 4
// Most entries of a k-nearest list: one per lane.
#define MREACH_MAX_CAP 32
// Points per tile: one per lane.
#define MREACH_TILE 32
#define MREACH_NONE 0xffffffffffffffffull
#define MREACH_NO_COMP 0xffffffffu

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

// A lower bound of mreach_sq(i, j) for every j of tile t (see the header).
__device__ __forceinline__ double mreach_box_sq(const double* __restrict__ xt, const double* __restrict__ lo,
                                                const double* __restrict__ hi, int n, int d, int tiles, int i,
                                                int t) {
    double acc = 0.0;
    for (int k = 0; k < d; ++k) {
        const double x = xt[(size_t)k * n + i];
        const double l = lo[(size_t)k * tiles + t], h = hi[(size_t)k * tiles + t];
        const double g = x < l ? __dsub_rn(l, x) : (x > h ? __dsub_rn(x, h) : 0.0);
        acc = __dadd_rn(acc, __dmul_rn(g, g));
    }
    return acc;
}

// Batch s of the scan order around batch `own`: own, own + 1, own − 1, own + 2, …;
// −1 where that side has run out.
__device__ __forceinline__ int mreach_batch(int s, int own, int batches) {
    const int b = (s & 1) ? own + (s + 1) / 2 : own - s / 2;
    return b >= 0 && b < batches ? b : -1;
}

// The live lane with the smallest bound (lane order breaks ties), in every lane; 32
// when no lane is live.
__device__ __forceinline__ int mreach_nearest_lane(bool live, double lb, double& m) {
    m = live ? lb : mreach_inf();
    int src = live ? (int)(threadIdx.x & 31) : 32;
    for (int offset = 16; offset > 0; offset >>= 1) {
        const double om = __shfl_xor_sync(SSK_FULL_MASK, m, offset);
        const int os = __shfl_xor_sync(SSK_FULL_MASK, src, offset);
        if (os < 32 && (src == 32 || om < m || (om == m && os < src))) {
            m = om;
            src = os;
        }
    }
    return src;
}

// lo, hi [d, tiles]: each tile's smallest and largest coordinate k over its points.
// Grid-stride over tiles × d: grid (any), block (256).
extern "C" __global__ void mreach_boxes(const double* __restrict__ xt, double* __restrict__ lo,
                                        double* __restrict__ hi, int n, int d) {
    const int tiles = (n + MREACH_TILE - 1) / MREACH_TILE;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < tiles * d; e += gridDim.x * blockDim.x) {
        const int t = e % tiles, k = e / tiles;
        const double* x = xt + (size_t)k * n;
        const int end = (t + 1) * MREACH_TILE < n ? (t + 1) * MREACH_TILE : n;
        double a = x[t * MREACH_TILE], b = a;
        for (int j = t * MREACH_TILE + 1; j < end; ++j) {
            a = fmin(a, x[j]);
            b = fmax(b, x[j]);
        }
        lo[e] = a;
        hi[e] = b;
    }
}

// Merges candidates j0 + lane (one per lane, those < n) into the warp's sorted list
// (lane r holds entry r, lanes ≥ cap hold nothing): a ballot of the candidates that
// beat the current last entry, inserted one at a time (entries after the slot move
// up a lane).
__device__ __forceinline__ void mreach_knn_merge(const double* __restrict__ xt, int n, int d, int cap, int i,
                                                 int j0, double& lsq, unsigned& lidx) {
    const int lane = threadIdx.x & 31;
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

// near_sq, near_idx [n, cap]: the cap nearest points of point i (itself included) by
// (squared distance, index), ascending; core [n]: sqrt(near_sq[i, k]), the k-th
// nearest other point (distance.rs's convention: i itself is entry 0 or ties at 0).
// 1 ≤ k < cap ≤ min(n, 32); lo, hi from mreach_boxes. Grid: ceil(n / 4) blocks of
// 128 threads; warp w of block b takes point 4b + w. The point's own tile first
// (it seeds the list), then the other tiles in mreach_batch order, skipping those
// whose box is strictly farther than the list's last entry.
extern "C" __global__ void mreach_knn(const double* __restrict__ xt, const double* __restrict__ lo,
                                      const double* __restrict__ hi, double* __restrict__ near_sq,
                                      unsigned* __restrict__ near_idx, double* __restrict__ core, int n, int d,
                                      int k, int cap) {
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * MREACH_WARPS + (threadIdx.x >> 5);
    if (i >= n) return;  // the whole warp
    const int tiles = (n + MREACH_TILE - 1) / MREACH_TILE, batches = (tiles + 31) / 32;
    const int own = i / MREACH_TILE;
    double lsq = mreach_inf();
    unsigned lidx = 0xffffffffu;
    mreach_knn_merge(xt, n, d, cap, i, own * MREACH_TILE, lsq, lidx);
    for (int s = 0; s < 2 * batches; ++s) {
        const int b = mreach_batch(s, own / 32, batches);
        if (b < 0) continue;
        const int t = b * 32 + lane;
        bool live = t < tiles && t != own;
        const double lb = live ? mreach_box_sq(xt, lo, hi, n, d, tiles, i, t) : mreach_inf();
        for (;;) {
            double m;
            const int src = mreach_nearest_lane(live, lb, m);
            // Strictly farther: no entry can beat or tie the last one (the index
            // could win a tie at equal distance).
            if (src == 32 || m > __shfl_sync(SSK_FULL_MASK, lsq, cap - 1)) break;
            if (lane == src) live = false;
            mreach_knn_merge(xt, n, d, cap, i, (b * 32 + src) * MREACH_TILE, lsq, lidx);
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

__device__ __forceinline__ unsigned long long mreach_pair(unsigned a, unsigned b) {
    return a < b ? ((unsigned long long)a << 32 | b) : ((unsigned long long)b << 32 | a);
}

// The start of a round: comp_w[c] = comp_pair[c] = none for c < n; per tile t (of
// 32 points), tile_core[t] = the smallest core distance and tile_comp[t] = the
// component of all its points, or MREACH_NO_COMP when they differ.
// Grid-stride: grid (any), block (256).
extern "C" __global__ void mreach_reset(const double* __restrict__ core, const unsigned* __restrict__ comp,
                                        unsigned long long* __restrict__ comp_w,
                                        unsigned long long* __restrict__ comp_pair, double* __restrict__ tile_core,
                                        unsigned* __restrict__ tile_comp, int n) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < n; c += gridDim.x * blockDim.x) {
        comp_w[c] = MREACH_NONE;
        comp_pair[c] = MREACH_NONE;
        if (c % MREACH_TILE == 0) {
            const int end = c + MREACH_TILE < n ? c + MREACH_TILE : n;
            double m = core[c];
            unsigned u = comp[c];
            for (int j = c + 1; j < end; ++j) {
                m = fmin(m, core[j]);
                if (comp[j] != u) u = MREACH_NO_COMP;
            }
            tile_core[c / MREACH_TILE] = m;
            tile_comp[c / MREACH_TILE] = u;
        }
    }
}

// A Borůvka round, step 1: point i's lightest edge within its nearest list (near_sq,
// near_idx [n, cap] from mreach_knn) to a point of another component (comp [n]: each
// point's component id, < n) in the order (w, a, b), a < b, with
// w = max(max(d(i, j), core_j), core_i) (distance::mutual_reachability's order of
// operations): best_w[i] (+inf when none), best_pair[i] = a << 32 | b (none when
// none); and comp_w[comp[i]] = min of best_w as bits over the component (non-negative
// doubles order as their bits: an integer atomicMin, deterministic). Geometry as
// mreach_knn.
extern "C" __global__ void mreach_list_edge(const double* __restrict__ core, const double* __restrict__ near_sq,
                                            const unsigned* __restrict__ near_idx,
                                            const unsigned* __restrict__ comp, double* __restrict__ best_w,
                                            unsigned long long* __restrict__ best_pair,
                                            unsigned long long* __restrict__ comp_w, int n, int cap) {
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * MREACH_WARPS + (threadIdx.x >> 5);
    if (i >= n) return;  // the whole warp
    const unsigned own = comp[i];
    double bw = mreach_inf();
    unsigned long long bp = MREACH_NONE;
    if (lane < cap) {
        const unsigned j = near_idx[(size_t)i * cap + lane];
        if (comp[j] != own) {
            // The scan's weight, bit for bit: near_sq holds mreach_sq(xt, n, d, i, j).
            bw = fmax(fmax(sqrt(near_sq[(size_t)i * cap + lane]), core[j]), core[i]);
            bp = mreach_pair((unsigned)i, j);
        }
    }
    mreach_warp_min(bw, bp);
    if (lane == 0) {
        best_w[i] = bw;
        best_pair[i] = bp;
        if (bp != MREACH_NONE) atomicMin(&comp_w[own], (unsigned long long)__double_as_longlong(bw));
    }
}

// Step 2: the points whose list may not hold their lightest edge scan the tiles.
// Every point outside i's list is at least as far as its last entry, so its edge
// weighs at least max(sqrt(near_sq[i, cap − 1]), core_i): a list best strictly below
// that, or a list holding every point (cap = n), is the answer. Otherwise the limit
// is the lighter of the list's best and comp_w[comp[i]]: the lightest edge of the
// component known so far (step 1's list edges, and every lighter edge a scanning
// warp finds, published at once by atomicMin and read again at each batch) — a real
// edge, so the component's lightest weighs no more. A point with core_i above the
// limit has no edge that could win or tie. The scan skips tiles all in i's
// component and tiles whose bound max(sqrt(box), min core, core_i) is above the
// limit (strictly), and points j with max(core_i, core_j) above it. Which warps see
// which bound depends on timing; the minimum found does not (the point of the
// lightest edge never skips it). Writes best_w[i], best_pair[i] where it found a
// lighter edge than step 1. Geometry as mreach_knn.
extern "C" __global__ void mreach_lightest(const double* __restrict__ xt, const double* __restrict__ lo,
                                           const double* __restrict__ hi, const double* __restrict__ core,
                                           const double* __restrict__ near_sq, const unsigned* __restrict__ comp,
                                           const double* __restrict__ tile_core,
                                           const unsigned* __restrict__ tile_comp, double* __restrict__ best_w,
                                           unsigned long long* __restrict__ best_pair,
                                           unsigned long long* __restrict__ comp_w, int n, int d, int cap) {
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * MREACH_WARPS + (threadIdx.x >> 5);
    if (i >= n) return;  // the whole warp
    const double ci = core[i];
    const unsigned own = comp[i];
    double bw = best_w[i];
    unsigned long long bp = best_pair[i];
    if (cap >= n || bw < fmax(sqrt(near_sq[(size_t)i * cap + cap - 1]), ci)) return;
    double limit = bw;
    const unsigned long long found = bp;
    const int tiles = (n + MREACH_TILE - 1) / MREACH_TILE, batches = (tiles + 31) / 32;
    for (int s = 0; s < 2 * batches; ++s) {
        // The component's bound as the other warps have lowered it so far, one read
        // for the warp (its lanes must agree on the limit).
        const unsigned long long cw =
            __shfl_sync(SSK_FULL_MASK, lane == 0 ? *(volatile unsigned long long*)&comp_w[own] : 0ull, 0);
        // cw is none (all ones, a NaN) while no edge of the component is known.
        if (cw != MREACH_NONE) limit = fmin(limit, __longlong_as_double((long long)cw));
        if (ci > limit) break;
        const int b = mreach_batch(s, i / MREACH_TILE / 32, batches);
        if (b < 0) continue;
        const int t = b * 32 + lane;
        bool live = t < tiles && tile_comp[t] != own;
        const double lb =
            live ? fmax(fmax(sqrt(mreach_box_sq(xt, lo, hi, n, d, tiles, i, t)), tile_core[t]), ci) : mreach_inf();
        for (;;) {
            double m;
            const int src = mreach_nearest_lane(live, lb, m);
            if (src == 32 || m > limit) break;
            if (lane == src) live = false;
            const int j = (b * 32 + src) * MREACH_TILE + lane;
            if (j < n && comp[j] != own) {
                const double cj = core[j];
                if (!(fmax(ci, cj) > limit)) {
                    const double w = fmax(fmax(sqrt(mreach_sq(xt, n, d, i, j)), cj), ci);
                    const unsigned long long p = mreach_pair((unsigned)i, (unsigned)j);
                    if (w < bw || (w == bw && p < bp)) {
                        bw = w;
                        bp = p;
                    }
                }
            }
            mreach_warp_min(bw, bp);
            if (bw < limit) {
                limit = bw;
                if (lane == 0) atomicMin(&comp_w[own], (unsigned long long)__double_as_longlong(bw));
            }
        }
    }
    if (lane == 0 && bp != found) {
        best_w[i] = bw;
        best_pair[i] = bp;
        atomicMin(&comp_w[own], (unsigned long long)__double_as_longlong(bw));
    }
}

// Step 3: comp_pair[c] = the smallest best_pair among the points of component c whose
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
