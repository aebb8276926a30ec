// kernels/ttsvd.cu — the sharing step on the device (DESIGN.md §5, steps 2–3): batched
// TT-SVD of the captured branch gradients, the inner products of the TT descriptors
// and their [B, B] distance matrix, so only that matrix goes to the host for HDBSCAN.
// CPU twin: src/backend/cpu/ttsvd.rs, which is src/sharing/ttsvd.rs (the reference).
//
// Each branch gradient G_b [out, in] is the 4-way tensor [n1, n2, n3, n4] of the same
// row-major memory (sharing::ttsvd::branch_dims). TT-SVD step k = 1, 2, 3 takes the
// remainder as the unfolding C [rows = r_{k-1}·n_k, cols = n_{k+1}···n_4], keeps the
// r_k leading left singular vectors U_r [rows, r_k] as core k and passes U_rᵀ·C
// [r_k, cols] on; after step 3 that is core 4.
//
// The SVD, and why this one: the left singular vectors of C are the eigenvectors of
// the Gram matrix A = C·Cᵀ [rows, rows], which is small (rows ≤ R·n_k: 10, 40, 80 for
// MNIST's [100, 640] at R = 4) while cols can be 6400. A block forms A, then cyclic
// two-sided Jacobi diagonalises it in the round-robin order (rows/2 disjoint
// rotations at a time, so the block works on all of them between two barriers).
// Jacobi converges from any start and its eigenvectors are orthonormal to rounding
// even for repeated or zero eigenvalues (rank-deficient C: dead units, the tall
// unfolding of step 3), so U_rᵀ·C is always an orthogonal projection and nothing
// divides by a singular value. The ranks are therefore fixed, r_k = min(R, rows, cols)
// (TtSvd::ranks): where the CPU cuts a numerically zero direction, the kernel keeps an
// orthonormal vector whose row of U_rᵀ·C is ≈ 0; the tensor is the same.
//
// Why double: forming A squares C's condition number. In double the kept subspace is
// accurate to ≈ cols·ε·σ1² / (σ_r² − σ_{r+1}²) (≈ 1e-12 on gradients); in float it
// would be ≈ 1e-3 on a nearly flat spectrum; and squares of f32 inputs stay inside
// double's range, so no scaling is needed. The input is f32 (the capture), the work
// once an epoch is O(B·out·in·R) flops, so double throughput does not matter.
//
// Buffers (doubles, one row of `*_stride` per branch): the remainders, the Gram
// matrix and eigenvectors (`work`: A then V, rows² each), the cores (each branch's
// four cores [r_k, n_k, r_{k+1}] concatenated, core_len doubles), the descriptors'
// Gram matrix K [B, B]. Plans: src/backend/launch/ttsvd.rs.
#include "common.cuh"

// Sweeps of the Jacobi eigen-solve before it stops anyway (it converges quadratically;
// 64 only bounds a pathological input, and V stays orthogonal whatever happens).
#define SSK_JACOBI_MAX_SWEEPS 64
#define SSK_DBL_EPSILON 2.220446049250313e-16

// y = (double)x, elementwise over [n], grid-stride: grid (any), block (256).
extern "C" __global__ void ttsvd_widen(const float* __restrict__ x, double* __restrict__ y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = (double)x[i];
}

// y = (float)x, elementwise over [n], grid-stride: grid (any), block (256).
extern "C" __global__ void ttsvd_narrow(const double* __restrict__ x, float* __restrict__ y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = (float)x[i];
}

// Pair `slot` (of m2/2) of round `round` (of m2 − 1) of the round-robin tournament on
// m2 (even) indices: index 0 stays, the others rotate, so every pair meets once a
// sweep and the pairs of a round are disjoint. p < q; q ≥ rows is a padding index.
__device__ __forceinline__ void ttsvd_pair(int round, int slot, int m2, int* p, int* q) {
    const int a = slot == 0 ? 0 : 1 + (slot - 1 + round) % (m2 - 1);
    const int j = m2 - 1 - slot;
    const int b = 1 + (j - 1 + round) % (m2 - 1);
    *p = a < b ? a : b;
    *q = a < b ? b : a;
}

// One TT-SVD step for every branch: C [rows, cols] (at c + b·c_stride) →
// core U_r [rows, rank] (at cores + b·core_stride + core_off) and U_rᵀ·C [rank, cols]
// (at next + b·next_stride + next_off; `next` may be `cores`, at another offset).
// work: [B, work_stride ≥ 2·rows²]. U_r's columns are the eigenvectors of C·Cᵀ of the
// rank largest eigenvalues, largest first (ties: the lower index), signs as they fall.
// grid (B), block (128), dynamic shared memory: 16·⌈rows/2⌉ + 4·rank bytes (each
// round's rotations, then the kept order). rank ≤ rows.
extern "C" __global__ void ttsvd_step(const double* __restrict__ c, double* __restrict__ work, double* cores,
                                      double* next, int rows, int cols, int rank, int c_stride, int work_stride,
                                      int core_stride, int core_off, int next_stride, int next_off) {
    SSK_DYNAMIC_SHARED(double, rot);  // [half][2]: cos, sin of the round's rotations
    __shared__ int changed;           // a rotation happened in this sweep
    const int t = threadIdx.x, nt = blockDim.x;
    const int half = (rows + 1) / 2, m2 = 2 * half;
    int* order = reinterpret_cast<int*>(rot + 2 * half);  // [rank]
    const double* C = c + (size_t)blockIdx.x * c_stride;
    double* A = work + (size_t)blockIdx.x * work_stride;
    double* V = A + rows * rows;
    double* U = cores + (size_t)blockIdx.x * core_stride + core_off;
    double* N = next + (size_t)blockIdx.x * next_stride + next_off;

    // A = C·Cᵀ, each entry summed in column order and mirrored (exactly symmetric); V = I.
    for (int e = t; e < rows * rows; e += nt) {
        const int i = e / rows, j = e % rows;
        V[e] = i == j ? 1.0 : 0.0;
        if (j < i) continue;
        double s = 0.0;
        for (int l = 0; l < cols; ++l) s += C[i * cols + l] * C[j * cols + l];
        A[i * rows + j] = s;
        A[j * rows + i] = s;
    }
    __syncthreads();

    // Jacobi: rotate (p, q) until |a_pq| ≤ rows·ε·sqrt(a_pp·a_qq) for every pair — the
    // CPU's one-sided test on the columns of Cᵀ, whose Gram matrix A is.
    const double tol = rows * SSK_DBL_EPSILON;
    for (int sweep = 0; sweep < SSK_JACOBI_MAX_SWEEPS; ++sweep) {
        if (t == 0) changed = 0;
        __syncthreads();
        for (int round = 0; round < m2 - 1; ++round) {
            for (int s = t; s < half; s += nt) {
                int p, q;
                ttsvd_pair(round, s, m2, &p, &q);
                double cs = 1.0, sn = 0.0;
                if (q < rows) {
                    const double app = A[p * rows + p], aqq = A[q * rows + q], apq = A[p * rows + q];
                    if (apq != 0.0 && fabs(apq) > tol * sqrt(app * aqq)) {
                        // tan θ: the smaller root of t² + 2ζt − 1 = 0 zeroes a_pq.
                        const double zeta = (aqq - app) / (2.0 * apq);
                        const double tn = (zeta >= 0.0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                        cs = 1.0 / sqrt(1.0 + tn * tn);
                        sn = cs * tn;
                        changed = 1;
                    }
                }
                rot[2 * s] = cs;
                rot[2 * s + 1] = sn;
            }
            __syncthreads();
            // A ← A·J and V ← V·J: columns p, q of every row k (disjoint pairs: no
            // element is written twice).
            for (int e = t; e < rows * half; e += nt) {
                const int k = e / half, s = e % half;
                const double cs = rot[2 * s], sn = rot[2 * s + 1];
                if (sn == 0.0) continue;
                int p, q;
                ttsvd_pair(round, s, m2, &p, &q);
                const double ap = A[k * rows + p], aq = A[k * rows + q];
                A[k * rows + p] = cs * ap - sn * aq;
                A[k * rows + q] = sn * ap + cs * aq;
                const double vp = V[k * rows + p], vq = V[k * rows + q];
                V[k * rows + p] = cs * vp - sn * vq;
                V[k * rows + q] = sn * vp + cs * vq;
            }
            __syncthreads();
            // A ← Jᵀ·A: rows p, q.
            for (int e = t; e < half * rows; e += nt) {
                const int s = e / rows, k = e % rows;
                const double cs = rot[2 * s], sn = rot[2 * s + 1];
                if (sn == 0.0) continue;
                int p, q;
                ttsvd_pair(round, s, m2, &p, &q);
                const double ap = A[p * rows + k], aq = A[q * rows + k];
                A[p * rows + k] = cs * ap - sn * aq;
                A[q * rows + k] = sn * ap + cs * aq;
            }
            __syncthreads();
        }
        const int any = changed;
        __syncthreads();  // every thread has read `changed` before thread 0 clears it
        if (!any) break;
    }

    // The rank largest eigenvalues (A's diagonal), largest first, ties to the lower index.
    if (t == 0) {
        for (int j = 0; j < rank; ++j) {
            int best = -1;
            for (int l = 0; l < rows; ++l) {
                bool taken = false;
                for (int i = 0; i < j; ++i) taken = taken || order[i] == l;
                if (!taken && (best < 0 || A[l * rows + l] > A[best * rows + best])) best = l;
            }
            order[j] = best;
        }
    }
    __syncthreads();
    for (int e = t; e < rows * rank; e += nt) U[e] = V[(e / rank) * rows + order[e % rank]];
    __syncthreads();
    // U_rᵀ·C, each entry summed over the rows in order.
    for (int e = t; e < rank * cols; e += nt) {
        const int j = e / cols, l = e % cols;
        double s = 0.0;
        for (int i = 0; i < rows; ++i) s += U[i * rank + j] * C[i * cols + l];
        N[e] = s;
    }
}

// K[a, b] = ⟨T_a, T_b⟩ for a ≤ b (the upper triangle; the diagonal gives the norms),
// from the cores without expanding a tensor (sharing::ttsvd::inner): the [r, r] matrix
// W_k = Σ_{α,β,i} W_{k-1}[α, β]·A_k[α, i, ·]·B_k[β, i, ·] is carried through the cores.
// cores: [B, core_len], each the four cores [r_k, n_k, r_{k+1}] (r0 = r4 = 1).
// grid (B, B), block (64), dynamic shared memory: 16·max(r1, r2, r3)² bytes (W and the
// next W).
extern "C" __global__ void ttsvd_inner(const double* __restrict__ cores, double* __restrict__ gram, int n1, int n2,
                                       int n3, int n4, int r1, int r2, int r3, int core_len, int branches) {
    const int a = blockIdx.x, b = blockIdx.y;
    if (a > b) return;  // the whole block: no barrier is left waiting
    SSK_DYNAMIC_SHARED(double, w);
    const int rmax = r1 > r2 ? (r1 > r3 ? r1 : r3) : (r2 > r3 ? r2 : r3);
    double* w_next = w + rmax * rmax;
    const int n[4] = {n1, n2, n3, n4}, r[5] = {1, r1, r2, r3, 1};
    const double* ca = cores + (size_t)a * core_len;
    const double* cb = cores + (size_t)b * core_len;
    if (threadIdx.x == 0) w[0] = 1.0;
    __syncthreads();
    for (int k = 0; k < 4; ++k) {
        const int nk = n[k], rl = r[k], rr = r[k + 1];
        for (int o = threadIdx.x; o < rr * rr; o += blockDim.x) {
            const int ap = o / rr, bp = o % rr;
            double s = 0.0;
            for (int al = 0; al < rl; ++al)
                for (int be = 0; be < rl; ++be) {
                    const double x = w[al * rl + be];
                    for (int i = 0; i < nk; ++i) s += x * ca[(al * nk + i) * rr + ap] * cb[(be * nk + i) * rr + bp];
                }
            w_next[o] = s;
        }
        __syncthreads();  // one barrier a core: the two halves alternate
        double* done = w_next;
        w_next = w;
        w = done;
        ca += rl * nk * rr;
        cb += rl * nk * rr;
    }
    if (threadIdx.x == 0) gram[a * branches + b] = w[0];
}

// dist[a, b] = ‖T_a/‖T_a‖ − T_b/‖T_b‖‖ = sqrt(max(0, 2 − 2·cos)) from K (upper
// triangle), exactly symmetric, zero diagonal; a zero descriptor is at 1 from any
// other and at 0 from another zero one (sharing::ttsvd::descriptor_distances).
// dist: [B, B]. Elementwise, grid-stride: grid (any), block (256).
extern "C" __global__ void ttsvd_distances(const double* __restrict__ gram, float* __restrict__ dist, int branches) {
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < branches * branches; e += gridDim.x * blockDim.x) {
        const int a = e / branches, b = e % branches;
        const int lo = a < b ? a : b, hi = a < b ? b : a;
        const double na = sqrt(fmax(gram[a * branches + a], 0.0)), nb = sqrt(fmax(gram[b * branches + b], 0.0));
        double d;
        if (a == b || (na == 0.0 && nb == 0.0)) {
            d = 0.0;
        } else if (na == 0.0 || nb == 0.0) {
            d = 1.0;
        } else {
            const double cs = fmin(fmax(gram[lo * branches + hi] / (na * nb), -1.0), 1.0);
            d = sqrt(fmax(2.0 - 2.0 * cs, 0.0));
        }
        dist[e] = (float)d;
    }
}
