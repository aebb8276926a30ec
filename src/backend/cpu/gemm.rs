//! Blocked GEMM: `matrixmultiply` (packed, SIMD micro-kernels, arbitrary strides so a
//! transpose is just swapped strides), parallelised with rayon over fixed blocks of C.
//!
//! Packing cost: matrixmultiply copies A in MR-row panels and B in NR-column panels;
//! the copy is a fast memcpy when A is column-major (`rs == 1`) and B row-major
//! (`cs == 1`), a scalar gather otherwise. The gather costs little on A (one panel of
//! MR rows at a time) but ~10–15% of a GEMM on B, so when B would be gathered and Aᵀ
//! would not, [`gemm`] computes `Cᵀ = Bᵀ·Aᵀ` instead (C written through swapped
//! strides; each element is the same sum in the same order, so the same bits).
//! Callers therefore pass operands in the layout they are stored in; a copy pays
//! only where both operands would be gathered. [`gemm`] splits C along its longer
//! side so the operand packed per task is the small one.
//!
//! Determinism: every element of C is computed by one call whose k-loop order is
//! fixed (matrixmultiply's KC blocking) whatever block of C holds it, so the bits
//! depend neither on the blocks (which follow the thread count) nor on scheduling.

use super::real::{RawMat, Real};
use rayon::prelude::*;

/// Work per rayon task, in multiply-adds (≈ 0.1 ms on one core).
const MIN_TASK_MACS: usize = 1 << 20;
/// Most blocks of C per rayon thread (slack for uneven blocks and busy threads).
const BLOCKS_PER_THREAD: usize = 2;
/// Blocks of C are a multiple of this many rows / columns (a multiple of MR and NR).
const BLOCK_ALIGN: usize = 16;

/// A read-only strided matrix: element (i, j) is `data[i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// `rows × cols`, row-major, contiguous (the prefix of `data`).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// How a GEMM uses rayon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// C in fixed blocks run as rayon tasks, when it is big enough.
    Blocks,
    /// On the calling thread only, for callers that already run one task per image
    /// or branch (splitting again would only repeat the packing). Same bits as
    /// `Blocks`.
    Serial,
}

impl Split {
    /// For the GEMM of one of `tasks` parallel tasks: blocks only when it is the sole one.
    pub fn for_tasks(tasks: usize) -> Self {
        if tasks > 1 {
            Split::Serial
        } else {
            Split::Blocks
        }
    }
}

/// A raw pointer to C shared by tasks that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct CPtr<T>(*mut T);
// SAFETY: tasks write disjoint column ranges of C (see `gemm`).
unsafe impl<T: Send> Send for CPtr<T> {}
unsafe impl<T: Send> Sync for CPtr<T> {}

/// `C ← α·A·B + β·C`, A: `[m, k]`, B: `[k, n]`, C: `[m, n]` row-major with row
/// stride `ldc` (the prefix of `c`). With β = 0, C is not read (it may hold NaN).
pub fn gemm<T: Real>(
    alpha: T,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
    split: Split,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(a.cols, b.rows, "gemm: A is {m}x{k} but B is {}x{n}", b.rows);
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n, "gemm: ldc {ldc} < n {n}");
    let c_len = (m - 1) * ldc + n;
    assert!(
        c.len() >= c_len,
        "gemm: C has {} elements, needs {c_len}",
        c.len()
    );
    let c = &mut c[..c_len];
    if k == 0 {
        for row in c.chunks_mut(ldc) {
            for v in &mut row[..n] {
                *v = if beta == T::ZERO { T::ZERO } else { beta * *v };
            }
        }
        return;
    }
    // The safety of the raw calls rests on these two checks and on c_len.
    assert!(a.in_bounds(), "gemm: A view out of bounds");
    assert!(b.in_bounds(), "gemm: B view out of bounds");

    // Rows r0.. (rows of them) × columns j0.. (cols of them) of C.
    // SAFETY (for callers): the block must lie inside C, and concurrent calls must
    // write disjoint blocks; A and B are shared reads and do not alias C (&mut).
    // B gathered but Aᵀ copied as the B of the transposed product: swap (see above).
    let swap = b.cs != 1 && a.rs == 1;
    let block = |r0: usize, rows: usize, j0: usize, cols: usize, cp: CPtr<T>| unsafe {
        let a = RawMat {
            ptr: a.data.as_ptr().add(r0 * a.rs),
            rs: a.rs as isize,
            cs: a.cs as isize,
        };
        let b = RawMat {
            ptr: b.data.as_ptr().add(j0 * b.cs),
            rs: b.rs as isize,
            cs: b.cs as isize,
        };
        let c = RawMat {
            ptr: cp.0.add(r0 * ldc + j0),
            rs: ldc as isize,
            cs: 1,
        };
        if swap {
            let t = |m: RawMat<_>| RawMat {
                ptr: m.ptr,
                rs: m.cs,
                cs: m.rs,
            };
            let ct = RawMat {
                ptr: c.ptr,
                rs: c.cs,
                cs: c.rs,
            };
            T::gemm_raw([cols, k, rows], alpha, t(b), t(a), beta, ct)
        } else {
            T::gemm_raw([rows, k, cols], alpha, a, b, beta, c)
        }
    };
    let cp = CPtr(c.as_mut_ptr());
    // Number of blocks: enough work in each, and at most a few per thread. Split the
    // longer side of C: each block repacks the whole of the operand along the other
    // side, so extra blocks cost (the trunk's 640→640 GEMMs at one thread: 26 blocks
    // 20–35% slower than one). The blocking never changes a bit of C (module doc).
    let tasks = if split == Split::Blocks {
        ((m * n * k) / MIN_TASK_MACS).min(BLOCKS_PER_THREAD * rayon::current_num_threads())
    } else {
        1
    };
    let long = m.max(n);
    let tasks = tasks.min(long / (2 * BLOCK_ALIGN)).max(1);
    if tasks == 1 {
        block(0, m, 0, n, cp);
        return;
    }
    let size = long.div_ceil(tasks).div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN;
    let split_rows = m >= n;
    (0..long.div_ceil(size)).into_par_iter().for_each(|t| {
        let (lo, len) = (t * size, size.min(long - t * size));
        if split_rows {
            block(lo, len, 0, n, cp);
        } else {
            block(0, m, lo, len, cp);
        }
    });
}

/// `dst[cols, rows] = srcᵀ` for row-major `src[rows, cols]` (prefixes), in 16×16
/// blocks, writing contiguously. Used to hand matrixmultiply operands it can pack by
/// plain copies: its own strided packing is ~15× slower than this (640×640: 1.75 ms
/// vs 0.12 ms, measured on the 2-core dev machine).
pub fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 16;
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose: short buffer"
    );
    for c0 in (0..cols).step_by(B) {
        for r0 in (0..rows).step_by(B) {
            let r1 = rows.min(r0 + B);
            for c in c0..cols.min(c0 + B) {
                let d = &mut dst[c * rows + r0..c * rows + r1];
                for (r, dv) in (r0..r1).zip(d.iter_mut()) {
                    *dv = src[r * cols + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// Naive triple loop in f64.
    fn naive(a: Mat<'_, f64>, b: Mat<'_, f64>) -> Vec<f64> {
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = 0.0;
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
                c[i * b.cols + j] = s;
            }
        }
        c
    }

    /// The blocks of C follow the thread count; the bits of C do not. 64×640×640
    /// (the trunk layer) is 26 blocks' worth of work: 1 block at 1 thread, 4 at 2,
    /// 6 at 3.
    #[test]
    fn same_bits_whatever_the_thread_count() {
        let mut rng = rng(2);
        let (m, k, n) = (64, 640, 640);
        let a = to_f32(&rand_vec(&mut rng, m * k));
        let b = to_f32(&rand_vec(&mut rng, k * n));
        let run = |threads: usize| {
            in_pool(threads, || {
                let mut c = vec![f32::NAN; m * n];
                let (am, bm) = (Mat::row_major(&a, m, k), Mat::row_major(&b, k, n));
                gemm(1.0, am, bm, 0.0, &mut c, n, Split::Blocks);
                c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            })
        };
        let one = run(1);
        assert!(one.iter().all(|&v| !f32::from_bits(v).is_nan()));
        assert!(run(2) == one && run(3) == one);
    }

    #[test]
    fn gemm_matches_naive_with_transposes_and_row_blocks() {
        let mut rng = rng(1);
        // (m, k, n): small, odd, and big enough to split into row / column blocks.
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (37, 19, 11),
            (300, 70, 90),
            (900, 80, 40),
            (64, 200, 650),
        ] {
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let am = Mat::row_major(&a, m, k);
            let bm = Mat::row_major(&b, k, n);
            let want = naive(am, bm);
            // A given transposed in memory: [k, m] viewed through .t().
            let mut c = poisoned(m * n);
            gemm(
                1.0,
                Mat::row_major(&at, k, m).t(),
                bm,
                0.0,
                &mut c,
                n,
                Split::Blocks,
            );
            assert!(rel_err(&c, &want) < 1e-13, "m{m} k{k} n{n}");
            // β = 1 accumulates, α scales.
            gemm(2.0, am, bm, 1.0, &mut c, n, Split::Blocks);
            let want3: Vec<f64> = want.iter().map(|v| 3.0 * v).collect();
            assert!(rel_err(&c, &want3) < 1e-13);
            // The serial path gives the same bits as the split one.
            let mut c1 = poisoned(m * n);
            let mut c2 = poisoned(m * n);
            gemm(1.0, am, bm, 0.0, &mut c1, n, Split::Blocks);
            gemm(1.0, am, bm, 0.0, &mut c2, n, Split::Serial);
            assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
            // B given transposed in memory ([n, k] through .t()) with A column-major:
            // computed as Cᵀ = Bᵀ·Aᵀ, the same bits as with B row-major.
            let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let a_cm = Mat::row_major(&at, k, m).t();
            let mut c3 = poisoned(m * n);
            gemm(1.0, a_cm, bm, 0.0, &mut c1, n, Split::Blocks);
            gemm(
                1.0,
                a_cm,
                Mat::row_major(&bt, n, k).t(),
                0.0,
                &mut c3,
                n,
                Split::Blocks,
            );
            assert!(c1.iter().zip(&c3).all(|(x, y)| x.to_bits() == y.to_bits()));
            let mut t = poisoned(m * k);
            transpose(&a, m, k, &mut t);
            assert_eq!(t, at);
        }
    }
}
