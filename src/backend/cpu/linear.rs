//! Linear layers batched across branches (see `LinearShape`): one call runs every
//! branch, each branch a GEMM on its own input picked by `x_of`.
//!
//! - forward:  `y[o] (N×out) = x[x_of[o]] (N×in) · w[o]ᵀ (in×out) + b[o]`
//! - backward: `dw[o] (out×in) = dy[o]ᵀ (out×N) · x[x_of[o]] (N×in)`,
//!   `db[o] = Σ_n dy[o, n, :]`, `dx[i] (N×in) = Σ_{o: x_of[o] = i} dy[o] (N×out) · w[o] (out×in)`
//!
//! Branches (and inputs, for dx) run as parallel tasks; the sum over branches that
//! share an input is taken in branch order, so results do not depend on scheduling.
//! Branches that all read one input (the MTL heads on the trunk) run the forward and
//! the weight gradient as one GEMM over their stacked weights instead (`one_input`),
//! with the same bits.
//!
//! x, w and dy are stored with the feature axis contiguous (see `gemm` on packing).
//! The forward transposes x (small, shared by every branch reading it), since in
//! `x·wᵀ` both operands would be gathered; `gemm` then reads w as stored (as
//! `Cᵀ = w·xᵀ`). `dx = dy·w` transposes dy, which every column block of C would
//! gather again; `dw = dyᵀ·x` reads both as stored.

use super::gemm::{gemm, transpose, Mat, Split};
use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{Backward, Forward, LinearOps, LinearShape};
use rayon::prelude::*;

fn check(s: &LinearShape) {
    debug_assert_eq!(s.x_of.len(), s.branches, "x_of has one entry per branch");
    debug_assert!(
        s.x_of.iter().all(|&i| i < s.x_branches),
        "x_of[o] < x_branches"
    );
}

/// Each `[rows, cols]` matrix of a stack, transposed to `[cols, rows]`.
fn transposed<T: Real>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::ZERO; m.len()];
    if rows * cols > 0 {
        t.par_chunks_mut(rows * cols)
            .zip(m.par_chunks(rows * cols))
            .for_each(|(t, m)| transpose(m, rows, cols, t));
    }
    t
}

/// The fused ReLU of `LinearShape::relu_out`: `relu_forward`'s operation in place.
fn relu<T: Real>(y: &mut [T]) {
    for v in y {
        *v = if *v > T::ZERO { *v } else { T::ZERO };
    }
}

/// The fused ReLU backward of `LinearShape::relu_in`: `relu_backward`'s operation
/// in place, x being the ReLU's output.
fn relu_mask<T: Real>(dx: &mut [T], x: &[T]) {
    for (d, &x) in dx.iter_mut().zip(x) {
        *d = if x > T::ZERO { *d } else { T::ZERO };
    }
}

impl<T: Real> LinearOps for CpuOf<T> {
    /// x: `[x_branches, N, in]`, w: `[branches, out, in]`, b: `[branches, out]`
    /// → y: `[branches, N, out]`.
    fn linear_forward(&self, s: &LinearShape, Forward { x, p, y }: Forward<Vec<T>>) {
        let _span = profile::span("linear_forward", || s.to_string());
        let (w, b) = (p.w, p.b);
        check(s);
        debug_assert!(x.len() >= s.x_len() && w.len() >= s.w_len());
        debug_assert!(b.len() >= s.b_len() && y.len() >= s.y_len());
        let (n, fin, fout) = (s.batch, s.in_features, s.out_features);
        if n * fout == 0 {
            return;
        }
        if one_input(s) {
            forward_stacked(s, x, w, b, y);
            return;
        }
        let x_t = transposed(&x[..s.x_len()], n, fin); // [x_branches, in, N]
        y[..s.y_len()]
            .par_chunks_mut(n * fout)
            .enumerate()
            .for_each(|(o, y_o)| {
                let x_o = Mat::row_major(&x_t[s.x_of[o] * n * fin..][..n * fin], fin, n).t();
                let w_o = Mat::row_major(&w[o * fout * fin..][..fout * fin], fout, fin).t();
                for row in y_o.chunks_mut(fout) {
                    row.copy_from_slice(&b[o * fout..][..fout]);
                }
                gemm(
                    T::ONE,
                    x_o,
                    w_o,
                    T::ONE,
                    y_o,
                    fout,
                    Split::for_tasks(s.branches),
                );
                if s.relu_out {
                    relu(y_o);
                }
            });
    }

    /// x: `[x_branches, N, in]`, w: `[branches, out, in]`, dy: `[branches, N, out]`
    /// → dw: `[branches, out, in]`, db: `[branches, out]`, and when asked for
    /// dx: `[x_branches, N, in]`, summed over the branches reading each input
    /// (0 for an input no branch reads).
    fn linear_backward(&self, s: &LinearShape, Backward { x, w, dy, g }: Backward<Vec<T>>) {
        let _span = profile::span("linear_backward", || s.to_string());
        let (dx, dw, db) = (g.dx, g.dw, g.db);
        check(s);
        debug_assert!(x.len() >= s.x_len() && w.len() >= s.w_len() && dy.len() >= s.y_len());
        debug_assert!(dw.len() >= s.w_len() && db.len() >= s.b_len());
        let (n, fin, fout) = (s.batch, s.in_features, s.out_features);
        let dy_of = |o: usize| &dy[o * n * fout..][..n * fout];
        if let Some(dx) = dx {
            debug_assert!(dx.len() >= s.x_len());
            if n * fin > 0 {
                // dy is the A of every column block of C: read as stored it would be
                // gathered once per block (measured slower on the 640→640 trunk).
                let dy_t = transposed(&dy[..s.y_len()], n, fout); // [branches, out, N]
                dx[..s.x_len()]
                    .par_chunks_mut(n * fin)
                    .enumerate()
                    .for_each(|(i, dx_i)| {
                        let mut beta = T::ZERO;
                        for o in (0..s.branches).filter(|&o| s.x_of[o] == i) {
                            let dy_o = Mat::row_major(&dy_t[o * n * fout..][..n * fout], fout, n);
                            let w_o = Mat::row_major(&w[o * fout * fin..][..fout * fin], fout, fin);
                            gemm(
                                T::ONE,
                                dy_o.t(),
                                w_o,
                                beta,
                                dx_i,
                                fin,
                                Split::for_tasks(s.x_branches),
                            );
                            beta = T::ONE;
                        }
                        if beta == T::ZERO {
                            dx_i.fill(T::ZERO);
                        }
                        if s.relu_in {
                            relu_mask(dx_i, &x[i * n * fin..][..n * fin]);
                        }
                    });
            }
        }
        if fout == 0 {
            return;
        }
        db[..s.b_len()]
            .par_chunks_mut(fout)
            .enumerate()
            .for_each(|(o, db_o)| {
                db_o.fill(T::ZERO);
                for row in dy_of(o).chunks(fout) {
                    for (d, &g) in db_o.iter_mut().zip(row) {
                        *d += g;
                    }
                }
            });
        if fin == 0 {
            return;
        }
        if one_input(s) {
            weight_grads_stacked(s, x, dy, dw);
            return;
        }
        dw[..s.w_len()]
            .par_chunks_mut(fout * fin)
            .enumerate()
            .for_each(|(o, dw_o)| {
                let x_o = &x[s.x_of[o] * n * fin..][..n * fin];
                let dyt = Mat::row_major(dy_of(o), n, fout).t();
                let x_o = Mat::row_major(x_o, n, fin);
                gemm(
                    T::ONE,
                    dyt,
                    x_o,
                    T::ZERO,
                    dw_o,
                    fin,
                    Split::for_tasks(s.branches),
                );
            });
    }
}

/// Several branches, all reading one input (the MTL heads on the trunk): their
/// GEMMs are then one, over the branches' weights stacked as stored
/// (`[branches·out, in]`), which packs the input once rather than once per branch
/// and runs at a big GEMM's speed. Every element is the same sum in the same order
/// as in its branch's own GEMM (see `gemm`), so the same bits.
fn one_input(s: &LinearShape) -> bool {
    s.branches > 1 && s.x_of.iter().all(|&i| i == s.x_of[0])
}

/// The forward of [`one_input`] layers: `t[o·out + j, n] = b[o, j] + Σ_i w[o, j, i]·x[n, i]`
/// (the per-branch GEMM's `Cᵀ = w·xᵀ`, bias first as there), then each branch's
/// block of t transposed into y. Only the input read is transposed (`[in, N]`).
fn forward_stacked<T: Real>(s: &LinearShape, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    let (n, fin, fout) = (s.batch, s.in_features, s.out_features);
    let rows = s.branches * fout;
    let x_t = transposed(&x[s.x_of[0] * n * fin..][..n * fin], n, fin);
    let mut t = vec![T::ZERO; rows * n];
    for (row, &b_r) in t.chunks_mut(n).zip(&b[..rows]) {
        row.fill(b_r);
    }
    let w_all = Mat::row_major(&w[..rows * fin], rows, fin);
    gemm(
        T::ONE,
        w_all,
        Mat::row_major(&x_t, fin, n),
        T::ONE,
        &mut t,
        n,
        Split::Blocks,
    );
    y[..s.y_len()]
        .par_chunks_mut(n * fout)
        .zip(t.par_chunks(fout * n))
        .for_each(|(y_o, t_o)| {
            transpose(t_o, fout, n, y_o);
            if s.relu_out {
                relu(y_o);
            }
        });
}

/// The weight gradients of [`one_input`] layers: `dw (branches·out × in) = A · x`
/// with `A[o·out + j, n] = dy[o, n, j]`, read column-major from its transpose
/// `[N, branches·out]` (each row the branches' dy rows side by side), as the
/// per-branch GEMM reads `dy[o]ᵀ`.
fn weight_grads_stacked<T: Real>(s: &LinearShape, x: &[T], dy: &[T], dw: &mut [T]) {
    let (n, fin, fout) = (s.batch, s.in_features, s.out_features);
    let rows = s.branches * fout;
    let mut a_t = vec![T::ZERO; n * rows];
    for (o, dy_o) in dy[..s.y_len()].chunks(n * fout).enumerate() {
        for (row, dy_r) in a_t.chunks_mut(rows).zip(dy_o.chunks(fout)) {
            row[o * fout..][..fout].copy_from_slice(dy_r);
        }
    }
    let a = Mat::row_major(&a_t, n, rows).t();
    let x = Mat::row_major(&x[s.x_of[0] * n * fin..][..n * fin], n, fin);
    gemm(
        T::ONE,
        a,
        x,
        T::ZERO,
        &mut dw[..rows * fin],
        fin,
        Split::Blocks,
    );
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn shape(
        x_branches: usize,
        x_of: &[usize],
        batch: usize,
        fin: usize,
        fout: usize,
    ) -> LinearShape {
        LinearShape {
            branches: x_of.len(),
            x_branches,
            batch,
            in_features: fin,
            out_features: fout,
            x_of: x_of.to_vec(),
            relu_out: false,
            relu_in: false,
        }
    }

    fn shapes() -> Vec<LinearShape> {
        vec![
            shape(1, &[0], 3, 5, 7),          // one ordinary layer
            shape(1, &[0, 0, 0], 3, 5, 4),    // shared trunk input
            shape(3, &[0, 1, 2], 5, 4, 3),    // per-branch chain
            shape(3, &[0, 0, 2, 1], 3, 6, 1), // task → branch map (heads)
            shape(3, &[0, 0, 2], 2, 3, 2),    // input 1 unread: dx[1] = 0
            shape(1, &[0, 0], 70, 40, 33),    // big enough to split GEMM rows
        ]
    }

    fn naive_forward(s: &LinearShape, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (n, fin, fout) = (s.batch, s.in_features, s.out_features);
        let mut y = vec![0.0; s.y_len()];
        for o in 0..s.branches {
            for r in 0..n {
                for j in 0..fout {
                    let mut acc = b[o * fout + j];
                    for i in 0..fin {
                        acc += x[(s.x_of[o] * n + r) * fin + i] * w[(o * fout + j) * fin + i];
                    }
                    y[(o * n + r) * fout + j] = acc;
                }
            }
        }
        y
    }

    impl WeightBiasLayer for LinearShape {
        fn run_forward<T: Real>(&self, io: Forward<V<T>>) {
            CpuOf::<T>::default().linear_forward(self, io)
        }
        fn lens(&self) -> [usize; 4] {
            [self.x_len(), self.w_len(), self.b_len(), self.y_len()]
        }
        fn run_backward<T: Real>(&self, io: Backward<V<T>>) {
            CpuOf::<T>::default().linear_backward(self, io)
        }
    }

    /// The fused ReLUs are the unfused composition bit for bit: forward with
    /// `relu_out` = `linear_forward` then `relu_forward`; backward with `relu_in`
    /// = `linear_backward` then `relu_backward` on dx with y = x (x holding
    /// negative values and zeros, so the mask bites).
    #[test]
    fn fused_relus_are_the_composition_bitwise() {
        use crate::backend::{Grads, PoolOps, WeightBias};
        let cpu = CpuOf::<f32>::default();
        let mut g = rng(17);
        for s in shapes() {
            let fused = s.clone().with_relu(true, true);
            let mut x = to_f32(&rand_vec(&mut g, s.x_len()));
            x.iter_mut().step_by(7).for_each(|v| *v = 0.0);
            let w = to_f32(&rand_vec(&mut g, s.w_len()));
            let b = to_f32(&rand_vec(&mut g, s.b_len()));
            let dy = to_f32(&rand_vec(&mut g, s.y_len()));
            let p = || WeightBias { w: &w, b: &b };
            let (mut y, mut yr, mut y_fused) = (
                poisoned(s.y_len()),
                poisoned(s.y_len()),
                poisoned(s.y_len()),
            );
            cpu.linear_forward(
                &s,
                Forward {
                    x: &x,
                    p: p(),
                    y: &mut y,
                },
            );
            cpu.relu_forward(s.y_len(), &y, &mut yr);
            cpu.linear_forward(
                &fused,
                Forward {
                    x: &x,
                    p: p(),
                    y: &mut y_fused,
                },
            );
            assert!(same_bits(&yr, &y_fused), "forward {s}");
            assert!(yr.contains(&0.0));

            let out = |s: &LinearShape| {
                let (mut dx, mut dw, mut db) = (
                    poisoned(s.x_len()),
                    poisoned(s.w_len()),
                    poisoned(s.b_len()),
                );
                let g = Grads {
                    dx: Some(&mut dx),
                    dw: &mut dw,
                    db: &mut db,
                };
                cpu.linear_backward(
                    s,
                    Backward {
                        x: &x,
                        w: &w,
                        dy: &dy,
                        g,
                    },
                );
                (dx, dw, db)
            };
            let (dx, dw, db) = out(&s);
            let (dx_fused, dw_fused, db_fused) = out(&fused);
            let mut dx_masked = poisoned(s.x_len());
            cpu.relu_backward(s.x_len(), &x, &dx, &mut dx_masked);
            assert!(same_bits(&dx_masked, &dx_fused), "backward dx {s}");
            assert!(
                same_bits(&dw, &dw_fused) && same_bits(&db, &db_fused),
                "dw, db {s}"
            );
        }
    }

    /// Branches on one input run as one stacked GEMM (`one_input`); each branch's
    /// y, dw and db are those of the same branch run as a layer of its own, bit for
    /// bit (the MNIST heads' shape: k = 640 spans several of the GEMM's k-blocks).
    #[test]
    fn stacked_branches_are_each_branch_alone_bitwise() {
        use crate::backend::{Grads, WeightBias};
        let cpu = CpuOf::<f32>::default();
        let mut g = rng(23);
        for s in [
            shape(1, &[0; 10], 64, 640, 100),
            shape(2, &[1, 1, 1], 5, 7, 3),
        ] {
            let s = s.with_relu(true, true);
            assert!(one_input(&s));
            let (n, fin, fout) = (s.batch, s.in_features, s.out_features);
            let x = to_f32(&rand_vec(&mut g, s.x_len()));
            let w = to_f32(&rand_vec(&mut g, s.w_len()));
            let b = to_f32(&rand_vec(&mut g, s.b_len()));
            let dy = to_f32(&rand_vec(&mut g, s.y_len()));
            let run = |s: &LinearShape, w: &[f32], b: &[f32], dy: &[f32]| {
                let (w, b) = (w.to_vec(), b.to_vec());
                let mut y = poisoned(s.y_len());
                let p = WeightBias { w: &w, b: &b };
                cpu.linear_forward(
                    s,
                    Forward {
                        x: &x,
                        p,
                        y: &mut y,
                    },
                );
                let (mut dw, mut db) = (poisoned(s.w_len()), poisoned(s.b_len()));
                let g = Grads {
                    dx: None,
                    dw: &mut dw,
                    db: &mut db,
                };
                let dy = dy.to_vec();
                cpu.linear_backward(
                    s,
                    Backward {
                        x: &x,
                        w: &w,
                        dy: &dy,
                        g,
                    },
                );
                (y, dw, db)
            };
            let (y, dw, db) = run(&s, &w, &b, &dy);
            for o in 0..s.branches {
                let alone = LinearShape {
                    branches: 1,
                    x_of: vec![s.x_of[o]],
                    ..s.clone()
                };
                let (y_o, dw_o, db_o) = run(
                    &alone,
                    &w[o * fout * fin..][..fout * fin],
                    &b[o * fout..][..fout],
                    &dy[o * n * fout..][..n * fout],
                );
                assert!(same_bits(&y[o * n * fout..][..n * fout], &y_o), "y {o} {s}");
                assert!(
                    same_bits(&dw[o * fout * fin..][..fout * fin], &dw_o),
                    "dw {o} {s}"
                );
                assert!(same_bits(&db[o * fout..][..fout], &db_o), "db {o} {s}");
            }
        }
    }

    // The deterministic shape is the MNIST heads': ten branches on one shared
    // 640-wide input.
    weight_bias_layer_tests! {
        forward: shapes(),
        naive: naive_forward,
        backward: shapes(),
        deterministic: shape(1, &[0; 10], 64, 640, 100),
    }
}
