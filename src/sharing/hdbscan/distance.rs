//! Step 1: distances, core distances, mutual reachability (DESIGN.md §5.3).
//!
//! - d(a,b): Euclidean, `sqrt(Σ_k (x_a[k] − x_b[k])²)` summed over k in order, or a
//!   precomputed matrix.
//! - c_k(a): the distance from a to its k-th nearest *other* point. The library
//!   (`_hdbscan_reachability.mutual_reachability`) takes
//!   `np.partition(D, k, axis=0)[k]`, the k-th smallest of a's column counting the
//!   zero to itself at index 0, i.e. the k-th nearest other point (duplicates count
//!   as neighbours at distance 0). scikit-learn's HDBSCAN counts the point itself, so
//!   its `min_samples = k + 1` gives ours.
//! - m(a,b) = max(c_k(a), c_k(b), d(a,b)), computed the library's way:
//!   `max(max(d(a,b), c(b)), c(a))` (the library's `alpha` is 1).
//!
//! Every Euclidean distance, wherever it is needed (core distances, Prim's rows,
//! tests), goes through the same summation order, so d(a,b) has the same bits every
//! time and d(a,b) == d(b,a) exactly.

use rayon::prelude::*;

/// Lanes of the row kernel: eight distances advance together, each summing its own
/// squared differences over k in order (so the result equals the scalar loop bit for bit).
const LANES: usize = 8;

/// Below this many points the work is too small for rayon to pay off.
pub(crate) const PARALLEL_MIN: usize = 1024;

/// Where pairwise distances come from.
#[derive(Clone, Debug)]
pub enum Distances<'a> {
    /// points: [n, d]; `transposed`: [d, n], the same values column by column, so a
    /// row of distances reads contiguous memory.
    Euclidean {
        points: &'a [f64],
        transposed: Vec<f64>,
        n: usize,
        d: usize,
    },
    /// dist: [n, n], symmetric with a zero diagonal (checked by the caller).
    Precomputed { dist: &'a [f64], n: usize },
}

impl<'a> Distances<'a> {
    /// points: [n, d].
    pub fn euclidean(points: &'a [f64], n: usize, d: usize) -> Self {
        assert_eq!(points.len(), n * d, "points must be [n, d]");
        let mut transposed = vec![0.0; n * d];
        for (i, row) in points.chunks_exact(d.max(1)).enumerate().take(n) {
            for (k, &v) in row.iter().enumerate() {
                transposed[k * n + i] = v;
            }
        }
        Distances::Euclidean {
            points,
            transposed,
            n,
            d,
        }
    }

    /// dist: [n, n].
    pub fn precomputed(dist: &'a [f64], n: usize) -> Self {
        assert_eq!(dist.len(), n * n, "dist must be [n, n]");
        Distances::Precomputed { dist, n }
    }

    pub fn n(&self) -> usize {
        match self {
            Distances::Euclidean { n, .. } | Distances::Precomputed { n, .. } => *n,
        }
    }

    /// d(a, b).
    pub fn get(&self, a: usize, b: usize) -> f64 {
        match self {
            Distances::Euclidean { points, d, .. } => {
                euclidean(&points[a * d..(a + 1) * d], &points[b * d..(b + 1) * d])
            }
            Distances::Precomputed { dist, n } => dist[a * n + b],
        }
    }

    /// out[j] = d(a, j) for every j. out: [n].
    pub fn row(&self, a: usize, out: &mut [f64]) {
        match self {
            Distances::Euclidean {
                points,
                transposed,
                n,
                d,
            } => row_kernel(&points[a * d..(a + 1) * d], transposed, *n, 0, out),
            Distances::Precomputed { dist, n } => out.copy_from_slice(&dist[a * n..(a + 1) * n]),
        }
    }
}

/// `sqrt(Σ_k (x[k] − y[k])²)`, k in order.
#[inline]
pub fn euclidean(x: &[f64], y: &[f64]) -> f64 {
    squared_euclidean(x, y).sqrt()
}

/// `Σ_k (x[k] − y[k])²`, k in order: the sum `euclidean` takes the root of (and the
/// one kernels/mreach.cu computes, operation for operation).
#[inline]
pub fn squared_euclidean(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = 0.0;
    for (a, b) in x.iter().zip(y) {
        let t = a - b;
        acc += t * t;
    }
    acc
}

/// Distances from the point with coordinates `x` ([d]) to the points in columns
/// `first..first + out.len()` of `xt` ([d, stride]). Each distance is the same
/// ordered sum as `euclidean`; the lanes only interleave independent sums.
#[inline]
pub(crate) fn row_kernel(x: &[f64], xt: &[f64], stride: usize, first: usize, out: &mut [f64]) {
    row_kernel_impl::<true>(x, xt, stride, first, out);
}

/// `row_kernel` without the square roots: out[j] is the ordered sum of squares whose
/// `sqrt` is `euclidean`'s result, bit for bit. `sqrt` is monotone, so comparing the
/// sums orders the distances (ties in the sums stay ties; sums that differ may round
/// to one distance, which callers account for).
#[inline]
pub(crate) fn row_kernel_sq(x: &[f64], xt: &[f64], stride: usize, first: usize, out: &mut [f64]) {
    row_kernel_impl::<false>(x, xt, stride, first, out);
}

#[inline(always)]
fn row_kernel_impl<const SQRT: bool>(
    x: &[f64],
    xt: &[f64],
    stride: usize,
    first: usize,
    out: &mut [f64],
) {
    let finish = |acc: f64| if SQRT { acc.sqrt() } else { acc };
    let len = out.len();
    let mut s = 0;
    while s + LANES <= len {
        let mut acc = [0.0f64; LANES];
        for (k, &xa) in x.iter().enumerate() {
            let col = &xt[k * stride + first + s..k * stride + first + s + LANES];
            for l in 0..LANES {
                let t = xa - col[l];
                acc[l] += t * t;
            }
        }
        for l in 0..LANES {
            out[s + l] = finish(acc[l]);
        }
        s += LANES;
    }
    for (j, o) in out.iter_mut().enumerate().skip(s) {
        let mut acc = 0.0;
        for (k, &xa) in x.iter().enumerate() {
            let t = xa - xt[k * stride + first + j];
            acc += t * t;
        }
        *o = finish(acc);
    }
}

/// All pairwise Euclidean distances. points: [n, d] → [n, n].
pub fn pairwise_euclidean(points: &[f64], n: usize, d: usize) -> Vec<f64> {
    let dist = Distances::euclidean(points, n, d);
    let mut out = vec![0.0; n * n];
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(a, row)| dist.row(a, row));
    out
}

/// c_k(a) for every a: the k-th smallest entry of a's row of distances, counting
/// d(a,a) = 0 at index 0 (so the k-th nearest other point). 1 ≤ k ≤ n − 1.
pub fn core_distances(dist: &Distances, k: usize) -> Vec<f64> {
    let n = dist.n();
    assert!(
        k >= 1 && k < n,
        "core distance k = {k} needs 1 <= k <= n - 1 = {}",
        n - 1
    );
    let one = |buf: &mut Vec<f64>, a: usize| {
        dist.row(a, buf);
        *buf.select_nth_unstable_by(k, |x, y| x.partial_cmp(y).unwrap())
            .1
    };
    if n < PARALLEL_MIN {
        let mut buf = vec![0.0; n];
        (0..n).map(|a| one(&mut buf, a)).collect()
    } else {
        (0..n)
            .into_par_iter()
            .map_init(|| vec![0.0; n], one)
            .collect()
    }
}

/// m(a,b) = max(c(a), c(b), d(a,b)) in the library's order of operations.
#[inline]
pub fn mutual_reachability(d_ab: f64, core_a: f64, core_b: f64) -> f64 {
    d_ab.max(core_b).max(core_a)
}

/// The dense mutual-reachability matrix. dist: [n, n], core: [n] → [n, n].
/// Prim's algorithm computes these on the fly; this is for tests and small inputs.
pub fn mutual_reachability_matrix(dist: &[f64], core: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for a in 0..n {
        for b in 0..n {
            out[a * n + b] = mutual_reachability(dist[a * n + b], core[a], core[b]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a line at 0, 1, 3, 7: every distance is checkable by hand.
    fn line() -> Vec<f64> {
        vec![0.0, 1.0, 3.0, 7.0]
    }

    #[test]
    fn pairwise_and_rows_agree_bitwise() {
        let pts: Vec<f64> = (0..37 * 5)
            .map(|i| ((i * 7919) % 101) as f64 / 7.0)
            .collect();
        let m = pairwise_euclidean(&pts, 37, 5);
        let dist = Distances::euclidean(&pts, 37, 5);
        for a in 0..37 {
            for b in 0..37 {
                let e = euclidean(&pts[a * 5..a * 5 + 5], &pts[b * 5..b * 5 + 5]);
                assert_eq!(m[a * 37 + b].to_bits(), e.to_bits());
                assert_eq!(m[a * 37 + b].to_bits(), m[b * 37 + a].to_bits());
                assert_eq!(dist.get(a, b).to_bits(), e.to_bits());
            }
            assert_eq!(m[a * 37 + a], 0.0);
        }
    }

    #[test]
    fn core_distance_is_kth_nearest_other_point() {
        let pts = line();
        let dist = Distances::euclidean(&pts, 4, 1);
        // Nearest others: 0 → 1 (1), 3 (3); 1 → 0 (1), 3 (2); 3 → 1 (2), 0 (3); 7 → 3 (4), 1 (6).
        assert_eq!(core_distances(&dist, 1), vec![1.0, 1.0, 2.0, 4.0]);
        assert_eq!(core_distances(&dist, 2), vec![3.0, 2.0, 3.0, 6.0]);
        assert_eq!(core_distances(&dist, 3), vec![7.0, 6.0, 4.0, 7.0]);
    }

    #[test]
    fn duplicates_are_neighbours_at_zero() {
        let pts = vec![5.0, 5.0, 5.0, 9.0];
        let dist = Distances::euclidean(&pts, 4, 1);
        assert_eq!(core_distances(&dist, 1), vec![0.0, 0.0, 0.0, 4.0]);
        assert_eq!(core_distances(&dist, 2), vec![0.0, 0.0, 0.0, 4.0]);
        assert_eq!(core_distances(&dist, 3), vec![4.0, 4.0, 4.0, 4.0]);
    }

    #[test]
    fn mutual_reachability_is_the_max_of_three() {
        let pts = line();
        let d = pairwise_euclidean(&pts, 4, 1);
        let core = core_distances(&Distances::euclidean(&pts, 4, 1), 2);
        let m = mutual_reachability_matrix(&d, &core, 4);
        // m(0,1) = max(3, 2, 1) = 3; m(2,3) = max(3, 6, 4) = 6; m(1,2) = max(2, 3, 2) = 3.
        assert_eq!(m[1], 3.0);
        assert_eq!(m[2 * 4 + 3], 6.0);
        assert_eq!(m[4 + 2], 3.0);
        for a in 0..4 {
            for b in 0..4 {
                assert_eq!(m[a * 4 + b], m[b * 4 + a]);
            }
        }
    }
}
