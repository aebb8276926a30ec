//! The sharing step's TT-SVD on the CPU: sharing::ttsvd (f64), the reference the
//! kernels of kernels/ttsvd.cu are checked against.

use super::real::Real;
use super::CpuOf;
use crate::backend::{profile, TtSvd, TtSvdOps};
use crate::sharing::ttsvd;

impl<T: Real> TtSvdOps for CpuOf<T> {
    /// `ttsvd::branch_descriptors` in f64, its cores zero-padded to `s.ranks()` (the
    /// numerical-rank cut may leave them lower) and stored as `T`.
    fn tt_svd(&self, s: &TtSvd, grads: &Vec<T>, cores: &mut Vec<T>, dist: &mut Vec<T>) {
        let _span = profile::span("tt_svd", || s.to_string());
        let (tts, d) = descriptors(s, grads);
        let (ranks, len) = (s.ranks(), s.core_len());
        for (tt, out) in tts.iter().zip(cores.chunks_exact_mut(len)) {
            for (o, v) in out.iter_mut().zip(tt.padded(&ranks)) {
                *o = T::from_f64(v);
            }
        }
        for (o, &v) in dist.iter_mut().zip(&d) {
            *o = T::from_f64(v);
        }
    }

    /// The f64 distances themselves, unrounded.
    fn branch_distances(&self, s: &TtSvd, grads: &Vec<T>) -> Vec<f64> {
        let _span = profile::span("tt_svd", || s.to_string());
        descriptors(s, grads).1
    }
}

/// The TT of every branch and their `[B, B]` distances, in f64.
fn descriptors<T: Real>(s: &TtSvd, grads: &[T]) -> (Vec<ttsvd::TensorTrain>, Vec<f64>) {
    let n = s.branches * s.out * s.inp;
    assert!(
        grads.len() >= n,
        "tt_svd {s}: grads has {} values, expected {n}",
        grads.len()
    );
    let g: Vec<f64> = grads[..n].iter().map(|&v| v.to_f64()).collect();
    let tts = ttsvd::branch_descriptors(&g, s.branches, s.out, s.inp, s.max_rank);
    let d = ttsvd::descriptor_distances(&tts);
    (tts, d)
}
