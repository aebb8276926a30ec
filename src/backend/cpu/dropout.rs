//! Inverted dropout. The mask depends only on (key, index) through
//! `backend::dropout_hash`, so every device drops the same elements.

use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{dropout_hash, dropout_threshold, Dropout, DropoutOps};

impl<T: Real> DropoutOps for CpuOf<T> {
    fn dropout_forward(
        &self,
        &Dropout { len, p, key }: &Dropout,
        x: &Vec<T>,
        mask: &mut Vec<T>,
        y: &mut Vec<T>,
    ) {
        let _span = profile::span("dropout_forward", || len.to_string());
        debug_assert!(x.len() >= len && mask.len() >= len && y.len() >= len);
        let threshold = dropout_threshold(p);
        // The scale in f32, as the kernel computes it.
        let scale = T::from_f64((1.0f32 / (1.0 - p)) as f64);
        for i in 0..len {
            let kept = dropout_hash(key, i as u32) >= threshold;
            mask[i] = if kept { scale } else { T::ZERO };
            y[i] = x[i] * mask[i];
        }
    }

    fn dropout_backward(&self, len: usize, mask: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) {
        let _span = profile::span("dropout_backward", || len.to_string());
        debug_assert!(mask.len() >= len && dy.len() >= len && dx.len() >= len);
        for ((d, &g), &m) in dx[..len].iter_mut().zip(&dy[..len]).zip(&mask[..len]) {
            *d = g * m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Cpu, Cpu64};
    use super::*;

    fn dropout(len: usize, p: f32, key: u32) -> Dropout {
        Dropout { len, p, key }
    }

    /// About p of the elements are dropped, the rest scaled by 1/(1−p); the same key
    /// gives the same mask, another key another one; the backward is the mask.
    #[test]
    fn drops_about_p_and_scales_the_rest() {
        let len = 20_000;
        let x = to_f32(&rand_vec(&mut rng(1), len));
        let run = |key: u32| {
            let (mut mask, mut y) = (poisoned(len), poisoned(len));
            Cpu.dropout_forward(&dropout(len, 0.2, key), &x, &mut mask, &mut y);
            (mask, y)
        };
        let (mask, y) = run(7);
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / len as f64;
        assert!((dropped - 0.2).abs() < 0.01, "dropped {dropped}");
        let scale = 1.0f32 / 0.8;
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
        assert!(y.iter().zip(&x).zip(&mask).all(|((&y, &x), &m)| y == x * m));
        assert!(same_bits(&run(7).0, &mask));
        let other = run(8).0;
        let differ = other.iter().zip(&mask).filter(|(a, b)| a != b).count();
        assert!(differ > len / 10, "key 8 vs 7: {differ} differ");
        let dy = to_f32(&rand_vec(&mut rng(2), len));
        let mut dx = poisoned(len);
        Cpu.dropout_backward(len, &mask, &dy, &mut dx);
        assert!(dx
            .iter()
            .zip(&dy)
            .zip(&mask)
            .all(|((&d, &g), &m)| d == g * m));
    }

    /// With the mask fixed, L = Σ r·dropout(x) has dL/dx = r·mask: central differences.
    #[test]
    fn backward_matches_finite_differences() {
        let len = 300;
        let mut g = rng(3);
        let (x, r) = (rand_vec(&mut g, len), rand_vec(&mut g, len));
        let forward = |x: &[f64]| {
            let (mut mask, mut y) = (vec![0.0; len], vec![0.0; len]);
            Cpu64.dropout_forward(&dropout(len, 0.3, 11), &x.to_vec(), &mut mask, &mut y);
            (mask, y)
        };
        let (mask, _) = forward(&x);
        let mut dx = poisoned(len);
        Cpu64.dropout_backward(len, &mask, &r, &mut dx);
        let fx = fd_grad(&x, FD_H, |x| dot(&r, &forward(x).1));
        assert!(rel_err(&dx, &fx) < GRAD_TOL);
        // p = 0 keeps everything unscaled.
        let (mut mask0, mut y0) = (poisoned(len), poisoned(len));
        Cpu64.dropout_forward(&dropout(len, 0.0, 5), &x, &mut mask0, &mut y0);
        assert!(mask0.iter().all(|&m| m == 1.0) && y0 == x);
    }
}
