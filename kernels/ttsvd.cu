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
// The SVD, and why this one: the left singular vectors of C come from the Gram matrix
// of its short side, m = min(rows, cols) (C·Cᵀ when wide, Cᵀ·C when tall): small
// (MNIST's [100, 640] at R = 4 has unfoldings 10 × 6400, 40 × 640 and 80 × 32, so
// m = 10, 40, 32) while the long side can be 6400. A block forms it, then cyclic
// two-sided Jacobi diagonalises it in the round-robin order (m/2 disjoint rotations
// at a time, so the block works on all of them between two barriers), in shared
// memory when it fits. Jacobi converges from any start and its eigenvectors are
// orthonormal to rounding even for repeated or zero eigenvalues (rank-deficient C:
// dead units), so when wide U_rᵀ·C is always an orthogonal projection and nothing
// divides by a singular value; when tall, U_r's columns are normalised images C·w_j
// (ttsvd_step). The ranks are therefore fixed, r_k = min(R, rows, cols)
// (TtSvd::ranks): where the CPU cuts a numerically zero direction, the kernel keeps an
// orthonormal vector whose row of U_rᵀ·C is ≈ 0, or a zero column; the tensor is the
// same.
//
// Why double: forming A squares C's condition number. In double the kept subspace is
// accurate to ≈ cols·ε·σ1² / (σ_r² − σ_{r+1}²) (≈ 1e-12 on gradients); in float it
// would be ≈ 1e-3 on a nearly flat spectrum; and squares of f32 inputs stay inside
// double's range, so no scaling is needed. The input is f32 (the capture), the work
// once an epoch is O(B·out·in·R) flops, so double throughput does not matter.
//
// Buffers (doubles, one row of `*_stride` per branch): the remainders, the Gram
// matrix and eigenvectors (`work`: A then V, m² each, unless in shared memory), the cores (each branch's
// four cores [r_k, n_k, r_{k+1}] concatenated, core_len doubles), the descriptors'
// Gram matrix K [B, B]. Plans: src/backend/launch/ttsvd.rs.
#include "common.cuh"

// Sweeps of the Jacobi eigen-solve before it stops anyway (it converges quadratically,
// in ≈ 7–10 sweeps; 64 only bounds a pathological input, and V stays orthogonal
// whatever happens).
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
// The Gram matrix is taken on C's short side, m = min(rows, cols):
// - wide (rows ≤ cols): A = C·Cᵀ; U_r = the eigenvectors of the rank largest
//   eigenvalues, largest first (ties: the lower index), signs as they fall;
// - tall (rows > cols, e.g. MNIST's step 3, 80 × 32): A = Cᵀ·C, whose eigenvectors W
//   are C's right singular vectors; U_r's column j = C·w_j/‖C·w_j‖ (exactly unit, so
//   U_r·U_rᵀ·C stays a projection), or zero where the eigenvalue is at most
//   m·ε·λ_max (a direction the Gram matrix cannot resolve, of a share ≤ √(m·ε) of C:
//   the CPU cuts its rank there too, or keeps a direction of that size). A C·Cᵀ of
//   80 × 80 would have ≥ 48 zero eigenvalues, and solving it costs ×6 a sweep.
// work: [B, work_stride ≥ 2·m²], A then V, unless `work_in_shared` (then both sit in
// dynamic shared memory, which is far quicker for the Jacobi rounds' reads and writes).
// grid (B), block (256: whole warps), dynamic shared memory: 16·⌈m/2⌉ + 16·rank bytes (each
// round's rotations, then the kept columns' norms and order), + 16·m² with
// work_in_shared. rank ≤ m.
extern "C" __global__ void ttsvd_step(const double* __restrict__ c, double* __restrict__ work, double* cores,
                                      double* next, int rows, int cols, int rank, int c_stride, int work_stride,
                                      int core_stride, int core_off, int next_stride, int next_off,
                                      int work_in_shared) {
    SSK_DYNAMIC_SHARED(double, rot);  // [half][2]: cos, sin of the round's rotations
    __shared__ int changed;           // a rotation happened in this sweep
    const int t = threadIdx.x, nt = blockDim.x;
    const bool tall = rows > cols;
    const int m = tall ? cols : rows;
    const int half = (m + 1) / 2, m2 = 2 * half;
    double* norm = rot + 2 * half;                      // [rank]
    int* order = reinterpret_cast<int*>(norm + rank);  // [rank]
    const double* C = c + (size_t)blockIdx.x * c_stride;
    double* A = work_in_shared ? rot + 2 * half + 2 * rank : work + (size_t)blockIdx.x * work_stride;
    double* V = A + m * m;
    double* U = cores + (size_t)blockIdx.x * core_stride + core_off;
    double* N = next + (size_t)blockIdx.x * next_stride + next_off;

    // A = the Gram matrix of C's m short-side vectors (rows when wide, columns when
    // tall): one warp per entry i ≤ j, its lanes striding along the long side (6400
    // for MNIST's step 1: a thread per entry would run it alone) and summed by
    // shuffles in a fixed order; mirrored (exactly symmetric). V = I.
    const int len = tall ? rows : cols;
    const int vec_stride = tall ? 1 : cols, sum_stride = tall ? cols : 1;
    for (int e = t; e < m * m; e += nt) V[e] = e / m == e % m ? 1.0 : 0.0;
    const int lane = t % 32;
    for (int e = t / 32; e < m * m; e += nt / 32) {
        const int i = e / m, j = e % m;
        if (j < i) continue;  // the whole warp
        double s = 0.0;
        for (int l = lane; l < len; l += 32) s += C[i * vec_stride + l * sum_stride] * C[j * vec_stride + l * sum_stride];
        for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(SSK_FULL_MASK, s, offset);
        if (lane == 0) {
            A[i * m + j] = s;
            A[j * m + i] = s;
        }
    }
    __syncthreads();

    // Jacobi: rotate (p, q) until |a_pq| ≤ m·ε·max(sqrt(a_pp·a_qq), trace A) for every
    // pair. The first bound is the CPU's one-sided test on the columns of Cᵀ, whose
    // Gram matrix A is; the second is the rounding that a rotation leaves behind
    // anyway, without which the pairs of (numerically) zero eigenvalues, a_pp, a_qq
    // and a_pq all rounding noise, would rotate until the sweep limit.
    double trace = 0.0;
    for (int i = 0; i < m; ++i) trace += A[i * m + i];
    const double tol = m * SSK_DBL_EPSILON, noise = tol * trace;
    for (int sweep = 0; sweep < SSK_JACOBI_MAX_SWEEPS; ++sweep) {
        if (t == 0) changed = 0;
        __syncthreads();
        for (int round = 0; round < m2 - 1; ++round) {
            for (int s = t; s < half; s += nt) {
                int p, q;
                ttsvd_pair(round, s, m2, &p, &q);
                double cs = 1.0, sn = 0.0;
                if (q < m) {
                    const double app = A[p * m + p], aqq = A[q * m + q], apq = A[p * m + q];
                    if (fabs(apq) > noise && fabs(apq) > tol * sqrt(fabs(app * aqq))) {
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
            for (int e = t; e < m * half; e += nt) {
                const int k = e / half, s = e % half;
                const double cs = rot[2 * s], sn = rot[2 * s + 1];
                if (sn == 0.0) continue;
                int p, q;
                ttsvd_pair(round, s, m2, &p, &q);
                const double ap = A[k * m + p], aq = A[k * m + q];
                A[k * m + p] = cs * ap - sn * aq;
                A[k * m + q] = sn * ap + cs * aq;
                const double vp = V[k * m + p], vq = V[k * m + q];
                V[k * m + p] = cs * vp - sn * vq;
                V[k * m + q] = sn * vp + cs * vq;
            }
            __syncthreads();
            // A ← Jᵀ·A: rows p, q.
            for (int e = t; e < half * m; e += nt) {
                const int s = e / m, k = e % m;
                const double cs = rot[2 * s], sn = rot[2 * s + 1];
                if (sn == 0.0) continue;
                int p, q;
                ttsvd_pair(round, s, m2, &p, &q);
                const double ap = A[p * m + k], aq = A[q * m + k];
                A[p * m + k] = cs * ap - sn * aq;
                A[q * m + k] = sn * ap + cs * aq;
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
            for (int l = 0; l < m; ++l) {
                bool taken = false;
                for (int i = 0; i < j; ++i) taken = taken || order[i] == l;
                if (!taken && (best < 0 || A[l * m + l] > A[best * m + best])) best = l;
            }
            order[j] = best;
        }
    }
    __syncthreads();
    if (tall) {
        // U_r = C·W_r, then each kept column scaled to unit norm (zero when dropped).
        for (int e = t; e < rows * rank; e += nt) {
            const int i = e / rank, j = e % rank;
            double s = 0.0;
            for (int l = 0; l < cols; ++l) s += C[i * cols + l] * V[l * m + order[j]];
            U[e] = s;
        }
        __syncthreads();
        for (int j = t; j < rank; j += nt) {
            double s = 0.0;
            for (int i = 0; i < rows; ++i) s += U[i * rank + j] * U[i * rank + j];
            const bool kept = A[order[j] * m + order[j]] > tol * A[order[0] * m + order[0]] && s > 0.0;
            norm[j] = kept ? 1.0 / sqrt(s) : 0.0;
        }
        __syncthreads();
        for (int e = t; e < rows * rank; e += nt) U[e] *= norm[e % rank];
    } else {
        for (int e = t; e < rows * rank; e += nt) U[e] = V[(e / rank) * m + order[e % rank]];
    }
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
