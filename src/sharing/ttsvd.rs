//! Batched Tensor-Train SVD of the branch gradients (DESIGN.md §5, steps 2–3).
//!
//! Each branch's accumulated first-layer gradient G_b `[out, in]` (e.g. `[100, 640]`)
//! is viewed as a 4-way tensor `[n1, n2, n3, n4]` with `(n1, n2)` and `(n3, n4)` the
//! near-square factors of `out` and `in` (`near_square_factors`):
//!
//! ```text
//! T[o1, o2, i1, i2] = G[o1·n2 + o2, i1·n4 + i2]
//! ```
//!
//! which, G being row-major, is the same memory read with dims `[n1, n2, n3, n4]`
//! (numpy: `G.reshape(n1, n2, n3, n4)`). TT-SVD (Oseledets 2011, Alg. 1) with maximum
//! rank R gives the approximation Ĝ_b; the branch's descriptor is Ĝ_b / ‖Ĝ_b‖_F, and
//! the distance between branches is d(a, b) = ‖Ĝ_a/‖Ĝ_a‖ − Ĝ_b/‖Ĝ_b‖‖_F, computed from
//! the cores by contraction (`inner`), never expanding a tensor.
//!
//! **Gauge invariance.** The cores of a TT are not unique: for any invertible
//! `M_k` (`[r_k, r_k]`), replacing core k by `core_k · M_k` and core k+1 by
//! `M_k⁻¹ · core_{k+1}` leaves the tensor unchanged. TT-SVD fixes the cores only up to
//! the SVD's own freedom (the sign of each singular vector pair; a rotation within a
//! repeated singular value). The descriptor is therefore the *reconstruction* Ĝ_b,
//! never the cores: `inner`, `TensorTrain::norm` and `descriptor_distances` are
//! functions of the represented tensor only, so two SVD implementations (QR + Jacobi
//! here, LAPACK in numpy) that pick different signs give the same distances.
//!
//! The CPU path is plain Rust in f64, one rayon task per branch. Each SVD is a
//! Householder QR (nalgebra) followed by one-sided Jacobi on the small triangular
//! factor — not `nalgebra::SVD`, which is unreliable on rank-deficient matrices
//! (see `left_singular_vectors`).

use nalgebra::DMatrix;
use rayon::prelude::*;

/// `(a, b)` with `a · b = n`, `a ≤ b`, `a` the largest divisor of `n` that is ≤ √n:
/// the most nearly square factorisation. 100 → (10, 10), 640 → (20, 32),
/// 50 → (5, 10), a prime p → (1, p), 1 → (1, 1).
///
/// DESIGN.md §5 gives "10×10×16×40" as an example reshape of a 100×640 gradient;
/// ours is 10×10×20×32, the factorisation nearest to square (16·40 = 20·32 = 640).
/// Near-square modes keep the unfoldings as balanced as possible, so a rank-R
/// truncation loses the least. The choice only has to be the same for every branch.
///
/// Panics on `n == 0`.
pub fn near_square_factors(n: usize) -> (usize, usize) {
    assert!(n > 0, "near_square_factors: n must be ≥ 1, got 0");
    // Largest a with a² ≤ n, found without floating point.
    let mut a = (n as f64).sqrt() as usize;
    while a * a > n {
        a -= 1;
    }
    while (a + 1) * (a + 1) <= n {
        a += 1;
    }
    while !n.is_multiple_of(a) {
        a -= 1;
    }
    (a, n / a)
}

/// The 4-way dims `[n1, n2, n3, n4]` a branch gradient `[out, inp]` is viewed with.
pub fn branch_dims(out: usize, inp: usize) -> [usize; 4] {
    let (n1, n2) = near_square_factors(out);
    let (n3, n4) = near_square_factors(inp);
    [n1, n2, n3, n4]
}

/// TT-SVD's ranks before any numerical-rank cut, `[1, r1, …, r_{d−1}, 1]` with
/// `r_k = min(max_rank, r_{k−1}·n_k, n_{k+1}·…·n_d)`: the most `tt_svd` gives, and the
/// fixed ranks of the device's cores (`backend::TtSvd`), which stay there because a
/// Jacobi eigenvector is orthonormal even for a zero singular value
/// (kernels/ttsvd.cu).
pub fn max_ranks(dims: &[usize], max_rank: usize) -> Vec<usize> {
    let mut ranks = vec![1];
    let mut cols: usize = dims.iter().product();
    for &n in &dims[..dims.len().saturating_sub(1)] {
        cols /= n;
        let rows = ranks.last().unwrap() * n;
        ranks.push(max_rank.min(rows).min(cols));
    }
    ranks.push(1);
    ranks
}

/// A tensor of order d in Tensor-Train format:
/// `T[i1, …, id] = core_1[0, i1, :] · core_2[:, i2, :] · … · core_d[:, id, 0]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorTrain {
    /// Mode sizes `[n1, …, nd]`.
    pub dims: Vec<usize>,
    /// TT ranks `[r0 = 1, r1, …, r_{d-1}, rd = 1]` (length d + 1).
    pub ranks: Vec<usize>,
    /// Core k (0-based): `[r_k, n_k, r_{k+1}]`, row-major (the rank index of the left
    /// neighbour varies slowest).
    pub cores: Vec<Vec<f64>>,
}

impl TensorTrain {
    /// Number of elements of the represented tensor, `Π n_k`.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The full tensor, row-major `[n1, …, nd]` (C order: the last index fastest).
    ///
    /// Contracts left to right: after core k the partial product is
    /// `[n1·…·nk, r_k]`; the last step leaves `[N, 1]`.
    pub fn reconstruct(&self) -> Vec<f64> {
        let mut acc = vec![1.0]; // [1, r0 = 1]
        let mut rows = 1;
        for (k, core) in self.cores.iter().enumerate() {
            let (rl, n, rr) = (self.ranks[k], self.dims[k], self.ranks[k + 1]);
            // acc [rows, rl] · core [rl, n·rr] → [rows, n·rr] = [rows·n, rr]
            let mut next = vec![0.0; rows * n * rr];
            for i in 0..rows {
                let a = &acc[i * rl..(i + 1) * rl];
                let out = &mut next[i * n * rr..(i + 1) * n * rr];
                for (alpha, &x) in a.iter().enumerate() {
                    if x == 0.0 {
                        continue;
                    }
                    let c = &core[alpha * n * rr..(alpha + 1) * n * rr];
                    for (o, &cv) in out.iter_mut().zip(c) {
                        *o += x * cv;
                    }
                }
            }
            acc = next;
            rows *= n;
        }
        acc
    }

    /// The cores zero-padded to `ranks` (each ≥ this TT's), concatenated: the
    /// device layout of `backend::TtSvdOps::tt_svd`. The tensor is unchanged.
    pub fn padded(&self, ranks: &[usize]) -> Vec<f64> {
        self.check();
        assert!(
            ranks.len() == self.ranks.len() && ranks.iter().zip(&self.ranks).all(|(p, r)| p >= r),
            "TensorTrain::padded: ranks {ranks:?} below the TT's {:?}",
            self.ranks
        );
        let mut flat = Vec::new();
        for (k, core) in self.cores.iter().enumerate() {
            let (n, rl, rr) = (self.dims[k], self.ranks[k], self.ranks[k + 1]);
            let (pl, pr) = (ranks[k], ranks[k + 1]);
            let mut padded = vec![0.0; pl * n * pr];
            for a in 0..rl {
                for i in 0..n {
                    let from = (a * n + i) * rr;
                    let to = (a * n + i) * pr;
                    padded[to..to + rr].copy_from_slice(&core[from..from + rr]);
                }
            }
            flat.extend(padded);
        }
        flat
    }

    /// The TT of dims `dims` and ranks `ranks` whose cores are `flat`, concatenated
    /// (the layout `padded` writes).
    pub fn from_flat(dims: &[usize], ranks: &[usize], flat: &[f64]) -> Self {
        let mut cores = Vec::with_capacity(dims.len());
        let mut at = 0;
        for (k, &n) in dims.iter().enumerate() {
            let len = ranks[k] * n * ranks[k + 1];
            assert!(
                at + len <= flat.len(),
                "TensorTrain::from_flat: {} values, dims {dims:?} and ranks {ranks:?} need more",
                flat.len()
            );
            cores.push(flat[at..at + len].to_vec());
            at += len;
        }
        let tt = Self {
            dims: dims.to_vec(),
            ranks: ranks.to_vec(),
            cores,
        };
        tt.check();
        tt
    }

    /// Frobenius norm ‖T‖_F of the represented tensor, from the cores (`inner`).
    pub fn norm(&self) -> f64 {
        inner(self, self).max(0.0).sqrt()
    }

    fn check(&self) {
        let d = self.dims.len();
        assert!(
            d >= 1 && self.ranks.len() == d + 1 && self.cores.len() == d,
            "TensorTrain: {d} dims need {} ranks and {d} cores, got {} ranks and {} cores",
            d + 1,
            self.ranks.len(),
            self.cores.len()
        );
        assert!(
            self.ranks[0] == 1 && self.ranks[d] == 1,
            "TensorTrain: boundary ranks must be 1, got {:?}",
            self.ranks
        );
        for (k, core) in self.cores.iter().enumerate() {
            let want = self.ranks[k] * self.dims[k] * self.ranks[k + 1];
            assert_eq!(
                core.len(),
                want,
                "TensorTrain: core {k} has {} values, expected [{}, {}, {}] = {want}",
                core.len(),
                self.ranks[k],
                self.dims[k],
                self.ranks[k + 1]
            );
        }
    }
}

/// ⟨A, B⟩ = Σ_i A[i]·B[i] of two TTs with the same dims, from the cores.
///
/// Carries the `[ra_k, rb_k]` matrix W_k = Σ over i1..ik of the left partial products,
/// `W_k[α', β'] = Σ_{α, β, i} W_{k-1}[α, β] · A_k[α, i, α'] · B_k[β, i, β']`,
/// in two steps of O(n·ra·rb·(ra + rb)) each, so O(d·n·r³) in all, never O(Π n_k).
pub fn inner(a: &TensorTrain, b: &TensorTrain) -> f64 {
    a.check();
    b.check();
    assert_eq!(
        a.dims, b.dims,
        "inner: TTs of different dims {:?} and {:?}",
        a.dims, b.dims
    );
    let mut w = vec![1.0]; // [ra0 = 1, rb0 = 1]
    for k in 0..a.dims.len() {
        let n = a.dims[k];
        let (ral, rar) = (a.ranks[k], a.ranks[k + 1]);
        let (rbl, rbr) = (b.ranks[k], b.ranks[k + 1]);
        let (ca, cb) = (&a.cores[k], &b.cores[k]);
        // t[β, i, α'] = Σ_α W[α, β] · A[α, i, α']      ([rbl, n, rar])
        let mut t = vec![0.0; rbl * n * rar];
        for alpha in 0..ral {
            let arow = &ca[alpha * n * rar..(alpha + 1) * n * rar]; // [n, rar]
            for beta in 0..rbl {
                let x = w[alpha * rbl + beta];
                let trow = &mut t[beta * n * rar..(beta + 1) * n * rar];
                for (o, &av) in trow.iter_mut().zip(arow) {
                    *o += x * av;
                }
            }
        }
        // W'[α', β'] = Σ_{β, i} t[β, i, α'] · B[β, i, β']   ([rar, rbr])
        let mut next = vec![0.0; rar * rbr];
        for bi in 0..rbl * n {
            let trow = &t[bi * rar..(bi + 1) * rar];
            let brow = &cb[bi * rbr..(bi + 1) * rbr];
            for (ap, &tv) in trow.iter().enumerate() {
                let out = &mut next[ap * rbr..(ap + 1) * rbr];
                for (o, &bv) in out.iter_mut().zip(brow) {
                    *o += tv * bv;
                }
            }
        }
        w = next;
    }
    w[0]
}

/// TT-SVD (Oseledets 2011, Alg. 1) of a row-major tensor `[n1, …, nd]`.
///
/// For k = 1..d−1: view the remainder C as the unfolding `[r_{k−1}·n_k, rest]`, take
/// its thin SVD C = U·S·Vᵀ, keep r_k columns of U as core k (`[r_{k−1}, n_k, r_k]`) and
/// S_r·V_rᵀ = U_rᵀ·C (`[r_k, rest]`) as the next remainder; the last remainder is
/// core d. The cores 1..d−1 are left-orthonormal, so ‖T̂‖ = ‖core d‖.
///
/// r_k = min(max_rank, numerical rank, r_{k−1}·n_k, rest), the numerical rank counting
/// the singular values above `max(rows, cols) · ε · σ_1` (numpy's `matrix_rank`
/// default): exactly rank-deficient inputs get the smaller ranks instead of cores
/// that span rounding noise. Unlike Oseledets' δ-truncation there is no error budget:
/// the maximum rank is the only approximation.
///
/// A zero unfolding (only possible when the whole tensor is zero) has numerical rank
/// 0; it is kept as rank 1 with a zero core and a zero remainder, so an exactly zero
/// tensor gives ranks all 1 and zero cores, and nothing is NaN.
///
/// Panics if `dims` is empty, does not match `tensor.len()`, `max_rank` is 0, or the
/// tensor holds NaN or ±inf (a diverged gradient; the SVD is undefined there).
pub fn tt_svd(tensor: &[f64], dims: &[usize], max_rank: usize) -> TensorTrain {
    let d = dims.len();
    let numel: usize = dims.iter().product();
    assert!(d >= 1, "tt_svd: dims must not be empty");
    assert!(max_rank >= 1, "tt_svd: max_rank must be ≥ 1, got 0");
    assert_eq!(
        tensor.len(),
        numel,
        "tt_svd: tensor has {} values, dims {dims:?} need {numel}",
        tensor.len()
    );
    if let Some(i) = tensor.iter().position(|v| !v.is_finite()) {
        panic!(
            "tt_svd: tensor {dims:?} holds {} at flat index {i}; expected finite values",
            tensor[i]
        );
    }

    let mut ranks = vec![1usize];
    let mut cores = Vec::with_capacity(d);
    let mut rem = tensor.to_vec(); // [r_{k−1}, n_k · … · n_d], row-major
    let mut cols = numel;
    for &n in &dims[..d - 1] {
        let r_prev = *ranks.last().unwrap();
        let rows = r_prev * n;
        cols /= n;
        let (core, next, r) = truncated_svd_step(&rem, rows, cols, max_rank);
        cores.push(core);
        ranks.push(r);
        rem = next;
    }
    // The last remainder [r_{d−1}, n_d] is core d [r_{d−1}, n_d, 1].
    cores.push(rem);
    ranks.push(1);
    TensorTrain {
        dims: dims.to_vec(),
        ranks,
        cores,
    }
}

/// One step of TT-SVD on the row-major unfolding `c` `[rows, cols]`:
/// returns (U_r `[rows, r]`, U_rᵀ·C `[r, cols]`, r).
///
/// U_rᵀ·C equals S_r·V_rᵀ (the rows of C projected on the kept singular vectors), so
/// V is never formed.
fn truncated_svd_step(
    c: &[f64],
    rows: usize,
    cols: usize,
    max_rank: usize,
) -> (Vec<f64>, Vec<f64>, usize) {
    if c.iter().all(|&v| v == 0.0) {
        // Numerical rank 0: rank 1 with a zero core (see `tt_svd`).
        return (vec![0.0; rows], vec![0.0; cols], 1);
    }
    let (sigma, u) = left_singular_vectors(c, rows, cols);
    let tol = rows.max(cols) as f64 * f64::EPSILON * sigma[0];
    let numerical_rank = sigma.iter().take_while(|&&x| x > tol).count();
    let r = max_rank.min(numerical_rank).min(sigma.len()).max(1);

    let mut core = vec![0.0; rows * r];
    for i in 0..rows {
        for j in 0..r {
            core[i * r + j] = u[(i, j)];
        }
    }
    // next[j, :] = Σ_i U[i, j] · C[i, :]
    let mut next = vec![0.0; r * cols];
    for (j, out) in next.chunks_exact_mut(cols).enumerate() {
        for (i, crow) in c.chunks_exact(cols).enumerate() {
            let x = u[(i, j)];
            for (o, &cv) in out.iter_mut().zip(crow) {
                *o += x * cv;
            }
        }
    }
    (core, next, r)
}

/// Thin SVD of the row-major C `[rows, cols]`, left half only: the singular values
/// (descending, k = min(rows, cols) of them) and U `[rows, k]`.
///
/// Householder QR (nalgebra) reduces C to a `[k, k]` triangle, whose SVD comes from
/// one-sided Jacobi (`jacobi_svd`):
/// - wide (rows ≤ cols): Cᵀ = Q·R, so C = Rᵀ·Qᵀ; with R = Û·Σ·Vᵀ, C = V·Σ·(Q·Û)ᵀ and
///   U = V. The row-major C is already the column-major Cᵀ: no transpose copy.
/// - tall: C = Q·R = (Q·Û)·Σ·Vᵀ, U = Q·Û.
///
/// Why not `nalgebra::SVD`: in nalgebra 0.34 its implicit-shift QR iteration loses
/// the factorisation on rank-deficient input (U·S·Vᵀ off by up to 50% of ‖C‖ on a
/// quarter of random rank-2 6×216 matrices; dimforge/nalgebra#1172, fix proposed in
/// PR #1590), which is exactly what TT-SVD meets after a truncation or with dead
/// units. QR is backward stable unconditionally, and Jacobi on a small square
/// triangle is accurate to the last bits and cheap (k ≤ R·n_k).
fn left_singular_vectors(c: &[f64], rows: usize, cols: usize) -> (Vec<f64>, DMatrix<f64>) {
    if rows <= cols {
        let r = DMatrix::from_column_slice(cols, rows, c).qr().r();
        let (sigma, _u_hat, v) = jacobi_svd(r);
        (sigma, v)
    } else {
        let qr = DMatrix::from_row_slice(rows, cols, c).qr();
        let (q, r) = (qr.q(), qr.r());
        let (sigma, u_hat, _v) = jacobi_svd(r);
        (sigma, q * u_hat)
    }
}

/// One-sided (Hestenes) Jacobi SVD of a square A `[k, k]`: A = Û·diag(σ)·Vᵀ with σ
/// descending, Û's columns of unit norm (zero where σ = 0), V orthogonal.
///
/// Rotates pairs of columns of A (and of V = I) until every pair is orthogonal to
/// |a_iᵀa_j| ≤ k·ε·‖a_i‖‖a_j‖; then σ_j = ‖a_j‖ and û_j = a_j/σ_j. Each rotation
/// zeroes a_iᵀa_j exactly in exact arithmetic (Demmel & Veselić 1992), so zero or
/// tiny columns never divide by zero. Converges quadratically; the sweep cap only
/// guards against a pathological input, and the result is still an orthogonal
/// factorisation then.
fn jacobi_svd(mut a: DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>, DMatrix<f64>) {
    let k = a.ncols();
    assert_eq!(a.nrows(), k, "jacobi_svd: A must be square");
    // Scale to max |a| = 1 so that the squared norms neither overflow nor underflow.
    let scale = a.amax();
    if scale > 0.0 {
        a /= scale;
    }
    let mut v = DMatrix::<f64>::identity(k, k);
    let tol = k as f64 * f64::EPSILON;
    for _sweep in 0..64 {
        let mut rotated = false;
        for i in 0..k {
            for j in i + 1..k {
                let (ai, aj) = (a.column(i), a.column(j));
                let (alpha, beta, gamma) = (ai.norm_squared(), aj.norm_squared(), ai.dot(&aj));
                if gamma == 0.0 || gamma.abs() <= tol * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let cs = 1.0 / (1.0 + t * t).sqrt();
                let sn = cs * t;
                rotate_columns(&mut a, i, j, cs, sn);
                rotate_columns(&mut v, i, j, cs, sn);
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..k).map(|j| a.column(j).norm()).collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&x, &y| norms[y].total_cmp(&norms[x]));
    let sigma = order.iter().map(|&j| norms[j] * scale).collect();
    let u_hat = DMatrix::from_fn(k, k, |r, c| {
        let j = order[c];
        if norms[j] > 0.0 {
            a[(r, j)] / norms[j]
        } else {
            0.0
        }
    });
    let v = DMatrix::from_fn(k, k, |r, c| v[(r, order[c])]);
    (sigma, u_hat, v)
}

/// (x_i, x_j) ← (c·x_i − s·x_j, s·x_i + c·x_j) for columns i < j of m.
fn rotate_columns(m: &mut DMatrix<f64>, i: usize, j: usize, c: f64, s: f64) {
    let n = m.nrows();
    let data = m.as_mut_slice(); // column-major
    let (left, right) = data.split_at_mut(j * n);
    let xi = &mut left[i * n..(i + 1) * n];
    let xj = &mut right[..n];
    for (p, q) in xi.iter_mut().zip(xj.iter_mut()) {
        let (x, y) = (*p, *q);
        *p = c * x - s * y;
        *q = s * x + c * y;
    }
}

/// ‖T − T̂‖_F / ‖T‖_F, expanding the TT. `tensor`: row-major `tt.dims`.
/// For a zero tensor: 0 when T̂ is zero too (as `tt_svd` returns), else +∞.
pub fn relative_error(tensor: &[f64], tt: &TensorTrain) -> f64 {
    let approx = tt.reconstruct();
    assert_eq!(
        tensor.len(),
        approx.len(),
        "relative_error: tensor has {} values, the TT {:?} has {}",
        tensor.len(),
        tt.dims,
        approx.len()
    );
    let diff: f64 = tensor
        .iter()
        .zip(&approx)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let norm = tensor.iter().map(|a| a * a).sum::<f64>().sqrt();
    if norm == 0.0 {
        return if diff == 0.0 { 0.0 } else { f64::INFINITY };
    }
    diff / norm
}

/// The batched TT-SVD of the sharing step: one TT per branch.
///
/// grads: `[branches, out, inp]` (the capture buffer, f32; f64 on `Cpu64`). Each
/// branch is converted to f64, viewed as `[n1, n2, n3, n4] = branch_dims(out, inp)` and factorised with
/// `tt_svd(·, max_rank)`; branches run in parallel on the rayon pool. The result for
/// a branch does not depend on the others or on the order of the branches.
pub fn branch_descriptors<T: Copy + Into<f64> + Sync>(
    grads: &[T],
    branches: usize,
    out: usize,
    inp: usize,
    max_rank: usize,
) -> Vec<TensorTrain> {
    assert_eq!(
        grads.len(),
        branches * out * inp,
        "branch_descriptors: grads has {} values, expected [branches={branches}, out={out}, in={inp}]",
        grads.len()
    );
    let dims = branch_dims(out, inp);
    let per = out * inp;
    (0..branches)
        .into_par_iter()
        .map(|b| {
            let g: Vec<f64> = grads[b * per..(b + 1) * per]
                .iter()
                .map(|&v| v.into())
                .collect();
            tt_svd(&g, &dims, max_rank)
        })
        .collect()
}

/// Distances between branch descriptors, `[B, B]` row-major, symmetric, zero diagonal:
///
/// ```text
/// d(a, b) = ‖Ĝa/‖Ĝa‖ − Ĝb/‖Ĝb‖‖_F = sqrt(max(0, 2 − 2·⟨Ĝa, Ĝb⟩ / (‖Ĝa‖·‖Ĝb‖)))
/// ```
///
/// from the cores (`inner`, `TensorTrain::norm`); gauge-invariant (module docs).
///
/// A zero gradient has a zero TT and no direction; its descriptor is taken to be the
/// zero tensor itself, so d = 1 (the norm of a unit descriptor) between it and any
/// non-zero branch, and d = 0 between two zero branches. Never NaN.
///
/// Precision: through 2 − 2·cos, d has an absolute rounding error of about √ε ≈ 1e-8
/// when two descriptors nearly coincide (≈ ε·d otherwise); the expanded
/// ‖x − y‖ would be exact there but costs O(Π n_k) per pair.
pub fn descriptor_distances(tts: &[TensorTrain]) -> Vec<f64> {
    let n = tts.len();
    let norms: Vec<f64> = tts.iter().map(TensorTrain::norm).collect();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect();
    let upper: Vec<f64> = pairs
        .par_iter()
        .map(|&(a, b)| match (norms[a] > 0.0, norms[b] > 0.0) {
            (false, false) => 0.0,
            (true, false) | (false, true) => 1.0,
            (true, true) => {
                let cos = (inner(&tts[a], &tts[b]) / (norms[a] * norms[b])).clamp(-1.0, 1.0);
                (2.0 - 2.0 * cos).max(0.0).sqrt()
            }
        })
        .collect();
    let mut dist = vec![0.0; n * n];
    for (&(a, b), &d) in pairs.iter().zip(&upper) {
        dist[a * n + b] = d;
        dist[b * n + a] = d;
    }
    dist
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
        // Box–Muller; rand 0.9 has no normal distribution without rand_distr.
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A TT with the given dims and ranks and Gaussian cores (not orthonormal).
    fn random_tt(rng: &mut ChaCha8Rng, dims: &[usize], ranks: &[usize]) -> TensorTrain {
        let cores = (0..dims.len())
            .map(|k| {
                (0..ranks[k] * dims[k] * ranks[k + 1])
                    .map(|_| gaussian(rng))
                    .collect()
            })
            .collect();
        TensorTrain {
            dims: dims.to_vec(),
            ranks: ranks.to_vec(),
            cores,
        }
    }

    fn norm2(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        norm2(&d) / norm2(b)
    }

    /// d(a, b) from the expanded reconstructions: ‖x/‖x‖ − y/‖y‖‖.
    fn expanded_distances(tts: &[TensorTrain]) -> Vec<f64> {
        let units: Vec<Vec<f64>> = tts
            .iter()
            .map(|t| {
                let x = t.reconstruct();
                let nx = norm2(&x);
                x.iter().map(|v| v / nx).collect()
            })
            .collect();
        let n = tts.len();
        let mut d = vec![0.0; n * n];
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    let diff: Vec<f64> =
                        units[a].iter().zip(&units[b]).map(|(x, y)| x - y).collect();
                    d[a * n + b] = norm2(&diff);
                }
            }
        }
        d
    }

    #[test]
    fn near_square_factors_examples() {
        assert_eq!(near_square_factors(100), (10, 10));
        assert_eq!(near_square_factors(640), (20, 32));
        assert_eq!(near_square_factors(50), (5, 10));
        assert_eq!(near_square_factors(1), (1, 1));
        assert_eq!(near_square_factors(13), (1, 13));
        assert_eq!(branch_dims(100, 640), [10, 10, 20, 32]);
        for n in 1..2000usize {
            let (a, b) = near_square_factors(n);
            assert_eq!(a * b, n);
            assert!(a <= b);
            assert!((a + 1..=b).all(|c| c * c > n || n % c != 0), "n={n}");
        }
    }

    #[test]
    fn exact_low_rank_tt_is_recovered() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (dims, ranks, max_rank) in [
            (vec![3, 4, 5, 6], vec![1, 3, 3, 3, 1], 3),
            (vec![10, 10, 20, 32], vec![1, 4, 4, 4, 1], 4),
            (vec![4, 6, 5], vec![1, 2, 3, 1], 3),
            (vec![7], vec![1, 1], 2),
        ] {
            let t = random_tt(&mut rng, &dims, &ranks).reconstruct();
            let tt = tt_svd(&t, &dims, max_rank);
            let err = relative_error(&t, &tt);
            assert!(err < 1e-12, "dims {dims:?}: relative error {err:e}");
            assert_eq!(tt.ranks, ranks, "dims {dims:?}");
            // Cores 1..d−1 are left-orthonormal: ‖T̂‖ = ‖last core‖.
            let last = norm2(tt.cores.last().unwrap());
            assert!((tt.norm() - last).abs() <= 1e-12 * last);
        }
    }

    #[test]
    fn padding_to_max_ranks_keeps_the_tensor() {
        assert_eq!(max_ranks(&[10, 10, 20, 32], 4), vec![1, 4, 4, 4, 1]);
        assert_eq!(max_ranks(&[1, 13, 3, 7], 4), vec![1, 1, 4, 4, 1]);
        assert_eq!(max_ranks(&[2, 3, 2, 2], 8), vec![1, 2, 4, 2, 1]);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let dims = [5, 6, 7, 8];
        let tt = random_tt(&mut rng, &dims, &[1, 2, 1, 2, 1]);
        let ranks = max_ranks(&dims, 3);
        let padded = TensorTrain::from_flat(&dims, &ranks, &tt.padded(&ranks));
        assert_eq!(padded.ranks, ranks);
        assert_eq!(padded.reconstruct(), tt.reconstruct());
    }

    #[test]
    fn numerical_rank_caps_the_ranks() {
        // Exact TT ranks [1, 2, 1, 2, 1] asked at max_rank 4: the ranks stay exact.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let dims = [5, 6, 7, 8];
        let t = random_tt(&mut rng, &dims, &[1, 2, 1, 2, 1]).reconstruct();
        let tt = tt_svd(&t, &dims, 4);
        assert_eq!(tt.ranks, vec![1, 2, 1, 2, 1]);
        assert!(relative_error(&t, &tt) < 1e-12);
    }

    #[test]
    fn inner_equals_dot_of_reconstructions() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let dims = [3, 5, 7, 4];
        let a = random_tt(&mut rng, &dims, &[1, 3, 4, 2, 1]);
        let b = random_tt(&mut rng, &dims, &[1, 2, 5, 4, 1]);
        let (xa, xb) = (a.reconstruct(), b.reconstruct());
        let dot: f64 = xa.iter().zip(&xb).map(|(x, y)| x * y).sum();
        let got = inner(&a, &b);
        assert!((got - dot).abs() <= 1e-12 * dot.abs(), "{got} vs {dot}");
        assert!((inner(&b, &a) - dot).abs() <= 1e-12 * dot.abs());
        let na = norm2(&xa);
        assert!((a.norm() - na).abs() <= 1e-12 * na);
    }

    fn random_grads(rng: &mut ChaCha8Rng, branches: usize, out: usize, inp: usize) -> Vec<f32> {
        (0..branches * out * inp)
            .map(|_| gaussian(rng) as f32)
            .collect()
    }

    #[test]
    fn distances_equal_expanded_computation() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (b, out, inp) = (5, 12, 30);
        let mut grads = random_grads(&mut rng, b, out, inp);
        // Branch 1 = branch 0 + small noise; branch 2 = −3 · branch 0.
        let per = out * inp;
        for i in 0..per {
            grads[per + i] = grads[i] + 1e-3 * gaussian(&mut rng) as f32;
            grads[2 * per + i] = -3.0 * grads[i];
        }
        let tts = branch_descriptors(&grads, b, out, inp, 3);
        let d = descriptor_distances(&tts);
        let e = expanded_distances(&tts);
        for a in 0..b {
            assert_eq!(d[a * b + a], 0.0);
            for c in 0..b {
                assert_eq!(d[a * b + c], d[c * b + a]);
                // Relative 1e-12 when well apart; near coincidence the √ε floor of
                // 2 − 2·cos (see the doc) allows 1e-7 absolute.
                let tol = if e[a * b + c] >= 0.1 {
                    1e-12 * e[a * b + c]
                } else {
                    1e-7
                };
                assert!(
                    (d[a * b + c] - e[a * b + c]).abs() <= tol,
                    "d[{a},{c}] = {} vs expanded {}",
                    d[a * b + c],
                    e[a * b + c]
                );
            }
        }
        // Scale does not matter, sign does: d(0, 2) = ‖u − (−u)‖ = 2.
        assert!((d[2] - 2.0).abs() < 1e-7);
    }

    #[test]
    fn permuting_branches_permutes_distances() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (b, out, inp) = (6, 10, 20);
        let grads = random_grads(&mut rng, b, out, inp);
        let perm = [3, 0, 5, 1, 4, 2];
        let per = out * inp;
        let permuted: Vec<f32> = perm
            .iter()
            .flat_map(|&p| grads[p * per..(p + 1) * per].iter().copied())
            .collect();
        let d = descriptor_distances(&branch_descriptors(&grads, b, out, inp, 4));
        let dp = descriptor_distances(&branch_descriptors(&permuted, b, out, inp, 4));
        for i in 0..b {
            for j in 0..b {
                let (x, y) = (dp[i * b + j], d[perm[i] * b + perm[j]]);
                assert!((x - y).abs() <= 1e-14, "dp[{i},{j}] = {x} vs d = {y}");
            }
        }
    }

    #[test]
    fn zero_and_rank_one_gradients_are_finite() {
        let (out, inp) = (10, 12);
        let per = out * inp;
        let mut grads = vec![0.0f32; 4 * per];
        // Branch 1: rank-1 outer product; branch 2: random; branches 0 and 3 zero.
        for o in 0..out {
            for i in 0..inp {
                grads[per + o * inp + i] = (o as f32 + 1.0) * (i as f32 - 5.5);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for v in &mut grads[2 * per..3 * per] {
            *v = gaussian(&mut rng) as f32;
        }
        let tts = branch_descriptors(&grads, 4, out, inp, 4);
        for tt in &tts {
            assert!(tt.cores.iter().flatten().all(|v| v.is_finite()));
        }
        assert_eq!(tts[0].ranks, vec![1; 5]);
        assert_eq!(tts[0].norm(), 0.0);
        assert!(tts[0].reconstruct().iter().all(|&v| v == 0.0));
        assert_eq!(relative_error(&vec![0.0; per], &tts[0]), 0.0);
        // A rank-1 matrix u·vᵀ has middle TT rank 1 (r1, r3: the ranks of u and v
        // reshaped to [2, 5] and [3, 4], here 2 each since u, v are affine ramps).
        assert_eq!(tts[1].ranks, vec![1, 2, 1, 2, 1]);
        let g1: Vec<f64> = grads[per..2 * per].iter().map(|&v| v as f64).collect();
        assert!(relative_error(&g1, &tts[1]) < 1e-12);

        let d = descriptor_distances(&tts);
        assert!(d.iter().all(|v| v.is_finite()));
        assert_eq!(d[3], 0.0); // two zero branches
        assert_eq!(d[1], 1.0); // zero vs non-zero
        assert_eq!(d[2 * 4], 1.0);
        assert!(d[4 + 2] > 0.0 && d[4 + 2] <= 2.0);
    }

    #[test]
    fn branch_descriptors_use_the_row_major_reshape() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (b, out, inp) = (2, 100, 640);
        let grads = random_grads(&mut rng, b, out, inp);
        let tts = branch_descriptors(&grads, b, out, inp, 4);
        let g1: Vec<f64> = grads[out * inp..].iter().map(|&v| v as f64).collect();
        let direct = tt_svd(&g1, &[10, 10, 20, 32], 4);
        assert_eq!(tts[1], direct);
        assert_eq!(tts[1].ranks, vec![1, 4, 4, 4, 1]);
        let rec = tts[1].reconstruct();
        assert!(rel_diff(&rec, &direct.reconstruct()) == 0.0);
    }

    #[test]
    fn svd_step_is_exact_on_rank_deficient_unfoldings() {
        // The shapes where nalgebra::SVD fails (see `left_singular_vectors`), wide and tall.
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for (rows, cols, rank) in [
            (6, 216, 2),
            (12, 36, 2),
            (40, 640, 4),
            (80, 32, 4),
            (10, 640, 3),
        ] {
            for _ in 0..20 {
                let a: Vec<f64> = (0..rows * rank).map(|_| gaussian(&mut rng)).collect();
                let b: Vec<f64> = (0..rank * cols).map(|_| gaussian(&mut rng)).collect();
                let c: Vec<f64> = (0..rows * cols)
                    .map(|ij| {
                        let (i, j) = (ij / cols, ij % cols);
                        (0..rank).map(|k| a[i * rank + k] * b[k * cols + j]).sum()
                    })
                    .collect();
                let (sigma, u) = left_singular_vectors(&c, rows, cols);
                assert!(sigma.windows(2).all(|w| w[0] >= w[1]));
                assert!(
                    sigma[rank] <= 1e-14 * sigma[0],
                    "[{rows}, {cols}]: σ = {sigma:?}"
                );
                let (core, next, r) = truncated_svd_step(&c, rows, cols, 8);
                assert_eq!(r, rank, "[{rows}, {cols}]");
                // U_r·(U_rᵀ·C) = C, U_rᵀ·U_r = I.
                let mut rec = vec![0.0; rows * cols];
                for i in 0..rows {
                    for k in 0..r {
                        for j in 0..cols {
                            rec[i * cols + j] += core[i * r + k] * next[k * cols + j];
                        }
                    }
                }
                assert!(
                    rel_diff(&rec, &c) < 1e-14,
                    "[{rows}, {cols}]: {:e}",
                    rel_diff(&rec, &c)
                );
                assert_eq!(u.shape(), (rows, rows.min(cols)));
                for p in 0..r {
                    for q in 0..r {
                        let dot: f64 = (0..rows).map(|i| core[i * r + p] * core[i * r + q]).sum();
                        let want = if p == q { 1.0 } else { 0.0 };
                        assert!((dot - want).abs() < 1e-14);
                    }
                }
            }
        }
    }

    #[test]
    fn jacobi_svd_factorises_square_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for k in [1, 2, 5, 17, 40] {
            let a = DMatrix::from_fn(k, k, |_, _| gaussian(&mut rng));
            let (sigma, u, v) = jacobi_svd(a.clone());
            let rec = &u
                * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(sigma.clone()))
                * v.transpose();
            assert!((rec - &a).norm() <= 1e-14 * a.norm() * k as f64, "k = {k}");
            let eye = DMatrix::<f64>::identity(k, k);
            assert!((u.transpose() * &u - &eye).norm() < 1e-13);
            assert!((v.transpose() * &v - &eye).norm() < 1e-13);
            assert!(sigma.windows(2).all(|w| w[0] >= w[1]));
        }
        let (sigma, u, _) = jacobi_svd(DMatrix::zeros(3, 3));
        assert_eq!(sigma, vec![0.0; 3]);
        assert!(u.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn dead_units_give_exact_low_rank_descriptors() {
        // Rows of dead ReLU units are exactly zero: rank-deficient unfoldings.
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let (out, inp) = (100, 640);
        let dims = branch_dims(out, inp);
        // Random live rows o = 10·o1 + 3: every unfolding is rank-deficient but
        // the ranks still reach the cap.
        let mut g: Vec<f64> = (0..out * inp).map(|_| gaussian(&mut rng)).collect();
        for o in (0..out).filter(|o| o % 10 != 3) {
            g[o * inp..(o + 1) * inp].fill(0.0);
        }
        let tt = tt_svd(&g, &dims, 4);
        assert_eq!(tt.ranks, vec![1, 4, 4, 4, 1]);
        assert!(tt.cores.iter().flatten().all(|v| v.is_finite()));
        let err = relative_error(&g, &tt);
        assert!(err > 0.0 && err < 1.0);
        // The same live rows holding a ⊗ (p ⊗ q): a rank-1 TT among zeros.
        let a: Vec<f64> = (0..10).map(|_| gaussian(&mut rng)).collect();
        let p: Vec<f64> = (0..20).map(|_| gaussian(&mut rng)).collect();
        let q: Vec<f64> = (0..32).map(|_| gaussian(&mut rng)).collect();
        let mut g1 = vec![0.0; out * inp];
        for (o1, &av) in a.iter().enumerate() {
            for i in 0..inp {
                g1[(10 * o1 + 3) * inp + i] = av * p[i / 32] * q[i % 32];
            }
        }
        let tt1 = tt_svd(&g1, &dims, 4);
        assert_eq!(tt1.ranks, vec![1; 5]);
        assert!(relative_error(&g1, &tt1) < 1e-14);
    }
}
