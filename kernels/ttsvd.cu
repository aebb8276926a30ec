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
// (entry, part) items of the Gram matrix a thread sums in one pass over C (registers).
#define SSK_GRAM_ITEMS 8

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

// A round's rotations, per index i of the m: row/column i of the rotated matrix is
// cs[i]·(row i) + sn[i]·(row partner[i]). For a rotated pair (p, q) by (c, s):
// p → (c, −s, q), q → (c, s, p); any other index → (1, 0, i), which leaves it exactly
// as it was. One Rot per buffer of the double-buffered rounds.
struct TtsvdRot {
    double* cs;
    double* sn;
    int* partner;
};

// Entry (i, j) of Jᵀ·A·J, J the round's rotation (A: m × m, row-major).
__device__ __forceinline__ double ttsvd_rotated(const double* A, int m, TtsvdRot r, int i, int j) {
    const double ci = r.cs[i], si = r.sn[i], cj = r.cs[j], sj = r.sn[j];
    const int pi = r.partner[i], pj = r.partner[j];
    return ci * (cj * A[i * m + j] + sj * A[i * m + pj]) + si * (cj * A[pi * m + j] + sj * A[pi * m + pj]);
}

// The rotations of round `round` (slots s ≡ t mod nt) from the 2×2 blocks of the
// matrix they will rotate, Jᵀ·A·J with J = `prev` (the round before, still to be
// applied): a pair rotates until |a_pq| ≤ max(noise, tol·sqrt(|a_pp·a_qq|)) (see
// the caller). Sets *rotated when one does.
__device__ __forceinline__ void ttsvd_rotations(const double* A, int m, TtsvdRot prev, TtsvdRot next, int round,
                                                double tol, double noise, int* rotated, int t, int nt) {
    const int half = (m + 1) / 2, m2 = 2 * half;
    for (int s = t; s < half; s += nt) {
        int p, q;
        ttsvd_pair(round, s, m2, &p, &q);
        if (q >= m) {  // p's partner is padding: p stays
            next.cs[p] = 1.0;
            next.sn[p] = 0.0;
            next.partner[p] = p;
            continue;
        }
        const double app = ttsvd_rotated(A, m, prev, p, p), aqq = ttsvd_rotated(A, m, prev, q, q);
        const double apq = ttsvd_rotated(A, m, prev, p, q);
        double cs = 1.0, sn = 0.0;
        if (fabs(apq) > noise && apq * apq > tol * tol * fabs(app * aqq)) {
            // tan θ: the smaller root of t² + 2ζt − 1 = 0 zeroes a_pq.
            const double zeta = (aqq - app) / (2.0 * apq);
            const double tn = (zeta >= 0.0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
            cs = 1.0 / sqrt(1.0 + tn * tn);
            sn = cs * tn;
            *rotated = 1;
        }
        next.cs[p] = cs;
        next.sn[p] = -sn;
        next.partner[p] = sn == 0.0 ? p : q;
        next.cs[q] = cs;
        next.sn[q] = sn;
        next.partner[q] = sn == 0.0 ? q : p;
    }
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
// work: [B, work_stride ≥ 3·m²], A, its rotated copy and V, unless `work_in_shared`
// (then all three sit in dynamic shared memory, which is far quicker for the Jacobi
// rounds' reads and writes).
// grid (B), block (256: whole warps), dynamic shared memory: 32·m + 8·rank bytes (two
// rounds' cs, sn; the kept columns' norms) + 4·⌈(2·m + rank)/2⌉·2 bytes (two rounds'
// partners; the kept columns' order), then with work_in_shared A and 8·chunk bytes
// (the Gram matrix's chunks of C, then A's copy and V: chunk ≥ 2·m²), else 8·chunk
// bytes. chunk ≥ max(2·m, 256); rank ≤ m.
extern "C" __global__ void ttsvd_step(const double* __restrict__ c, double* __restrict__ work, double* cores,
                                      double* next, int rows, int cols, int rank, int c_stride, int work_stride,
                                      int core_stride, int core_off, int next_stride, int next_off,
                                      int work_in_shared, int chunk) {
    SSK_DYNAMIC_SHARED(double, smem);
    // rotated_in[s]: a rotation of sweep s was computed (a flag per sweep, never reset:
    // the rotations of a sweep are computed a round ahead, while the sweep before it
    // still runs).
    __shared__ int rotated_in[SSK_JACOBI_MAX_SWEEPS + 1];
    const int t = threadIdx.x, nt = blockDim.x;
    const bool tall = rows > cols;
    const int m = tall ? cols : rows;
    const int half = (m + 1) / 2, m2 = 2 * half, rounds = m2 - 1;
    double* norm = smem + 4 * m;                                  // [rank]
    int* partners = reinterpret_cast<int*>(norm + rank);         // [2][m]
    int* order = partners + 2 * m;                               // [rank]
    double* shared_work = norm + rank + (2 * m + rank + 1) / 2;  // [3][m][m]
    // The rounds' rotations alternate between two buffers (even rounds, odd rounds).
    const TtsvdRot even = {smem, smem + m, partners}, odd = {smem + 2 * m, smem + 3 * m, partners + m};
    const double* C = c + (size_t)blockIdx.x * c_stride;
    double* A = work_in_shared ? shared_work : work + (size_t)blockIdx.x * work_stride;
    double* A_next = A + m * m;
    double* V = A_next + m * m;
    double* U = cores + (size_t)blockIdx.x * core_stride + core_off;
    double* N = next + (size_t)blockIdx.x * next_stride + next_off;

    // A = the Gram matrix of C's m short-side vectors (rows when wide, columns when
    // tall), the upper triangle i ≤ j, mirrored (exactly symmetric). C streams through
    // shared memory in chunks of `ld` long-side elements, each read from global memory
    // once (entry by entry, MNIST's step 2 would read its 40 × 640 C 41 times), and
    // when the triangle has fewer entries than the block has threads each entry's sum
    // is cut into `parts` (MNIST's step 1: 55 entries 6400 long, 4 parts): part g sums
    // the elements l ≡ g (mod parts) of each chunk in order, then the parts are added in
    // order. A thread holds up to SSK_GRAM_ITEMS (entry, part) items a pass over C.
    const int len = tall ? rows : cols;
    const int vec_stride = tall ? 1 : cols, sum_stride = tall ? cols : 1;
    const int entries = m * (m + 1) / 2, parts = nt / entries > 1 ? nt / entries : 1, items = entries * parts;
    const int ld = (chunk / m - 1) | 1;  // an odd row stride: no bank conflicts between rows
    double* S = shared_work + (work_in_shared ? m * m : 0);  // [m][ld], over A_next and V
    for (int i = t; i < m; i += nt) {  // "round −1", applied by the first rotations: none
        odd.cs[i] = 1.0;
        odd.sn[i] = 0.0;
        odd.partner[i] = i;
    }
    for (int s = t; s <= SSK_JACOBI_MAX_SWEEPS; s += nt) rotated_in[s] = 0;
    for (int base = 0; base < items; base += SSK_GRAM_ITEMS * nt) {
        double acc[SSK_GRAM_ITEMS];
        int ei[SSK_GRAM_ITEMS], ej[SSK_GRAM_ITEMS], eg[SSK_GRAM_ITEMS];
#pragma unroll
        for (int n = 0; n < SSK_GRAM_ITEMS; ++n) {
            const int k = base + n * nt + t;
            acc[n] = 0.0;
            ei[n] = -1;
            if (k >= items) continue;
            int e = k % entries, i = 0;
            while (e >= m - i) e -= m - i++;
            ei[n] = i;
            ej[n] = i + e;
            eg[n] = k / entries;
        }
        for (int l0 = 0; l0 < len; l0 += ld) {
            const int w = len - l0 < ld ? len - l0 : ld;
            __syncthreads();  // the last chunk's sums are done
            for (int x = t; x < m * w; x += nt) {
                // Along the memory's contiguous side: C's rows when wide, its columns' index when tall.
                const int i = tall ? x % m : x / w, l = tall ? x / m : x % w;
                S[i * ld + l] = C[(size_t)i * vec_stride + (size_t)(l0 + l) * sum_stride];
            }
            __syncthreads();
#pragma unroll
            for (int n = 0; n < SSK_GRAM_ITEMS; ++n) {
                if (ei[n] < 0) continue;
                const double *si = S + ei[n] * ld, *sj = S + ej[n] * ld;
                double s = acc[n];
                for (int l = eg[n]; l < w; l += parts) s += si[l] * sj[l];
                acc[n] = s;
            }
        }
        if (parts == 1) {
#pragma unroll
            for (int n = 0; n < SSK_GRAM_ITEMS; ++n) {
                if (ei[n] < 0) continue;
                A[ei[n] * m + ej[n]] = acc[n];
                A[ej[n] * m + ei[n]] = acc[n];
            }
        } else {  // one pass, a thread an item (items ≤ nt): the parts through S, in order
            __syncthreads();
            if (t < items) S[t] = acc[0];
            __syncthreads();
            if (t < entries) {
                double s = S[t];
                for (int g = 1; g < parts; ++g) s += S[g * entries + t];
                A[ei[0] * m + ej[0]] = s;
                A[ej[0] * m + ei[0]] = s;
            }
        }
    }
    __syncthreads();
    for (int e = t; e < m * m; e += nt) V[e] = e / m == e % m ? 1.0 : 0.0;  // S is done with

    // Jacobi: rotate (p, q) until |a_pq| ≤ m·ε·max(sqrt(a_pp·a_qq), trace A) for every
    // pair. The first bound is the CPU's one-sided test on the columns of Cᵀ, whose
    // Gram matrix A is; the second is the rounding that a rotation leaves behind
    // anyway, without which the pairs of (numerically) zero eigenvalues, a_pp, a_qq
    // and a_pq all rounding noise, would rotate until the sweep limit.
    //
    // One barrier a round: while the block applies round r's rotations (A_next =
    // Jᵀ·A·J, V ← V·J), the threads of round r + 1's pairs compute the three entries of
    // A_next they need themselves and from them round r + 1's rotations, into the
    // other rotation buffer. A sweep without a rotation ends it (its rounds then
    // change nothing: an index that does not rotate keeps its row exactly).
    double trace = 0.0;
    for (int i = 0; i < m; ++i) trace += A[i * m + i];
    const double tol = m * SSK_DBL_EPSILON, noise = tol * trace;
    ttsvd_rotations(A, m, odd, even, 0, tol, noise, &rotated_in[0], t, nt);
    __syncthreads();
    // This thread's entries (i, j) of the m × m, e = t, t + nt, …: i = e / m, j = e % m,
    // stepped without a division.
    const int di = nt / m, dj = nt % m;
    for (int sweep = 0, r = 0; sweep < SSK_JACOBI_MAX_SWEEPS; ++sweep) {
        for (int round = 0; round < rounds; ++round, ++r) {
            const TtsvdRot now = r & 1 ? odd : even, ahead = r & 1 ? even : odd;
            for (int i = t / m, j = t % m; i < m; i += di, j += dj) {
                if (j >= m) {
                    j -= m;
                    ++i;
                    if (i >= m) break;
                }
                A_next[i * m + j] = ttsvd_rotated(A, m, now, i, j);
                // V ← V·J: the thread of p's column rotates p's and q's (disjoint pairs).
                const int pj = now.partner[j];
                if (pj > j) {
                    const double vp = V[i * m + j], vq = V[i * m + pj];
                    V[i * m + j] = now.cs[j] * vp + now.sn[j] * vq;
                    V[i * m + pj] = now.cs[pj] * vq + now.sn[pj] * vp;
                }
            }
            const bool last = round + 1 == rounds;
            ttsvd_rotations(A, m, now, ahead, last ? 0 : round + 1, tol, noise, &rotated_in[sweep + last], t, nt);
            __syncthreads();
            double* done = A_next;
            A_next = A;
            A = done;
        }
        if (!rotated_in[sweep]) break;  // all set before the barrier that ended the sweep
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
    // U_rᵀ·C, each entry summed over the rows in order; a thread a column l, four rows
    // of U_rᵀ at a time (each element of C read once per four).
    for (int j0 = 0; j0 < rank; j0 += 4) {
        const int nj = rank - j0 < 4 ? rank - j0 : 4;
        for (int l = t; l < cols; l += nt) {
            double s[4] = {0.0, 0.0, 0.0, 0.0};
            for (int i = 0; i < rows; ++i) {
                const double x = C[i * cols + l];
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (j < nj) s[j] += U[i * rank + j0 + j] * x;
            }
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (j < nj) N[(j0 + j) * cols + l] = s[j];
        }
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
