//! Shared helpers for the CPU op tests: seeded random inputs, NaN poisoning,
//! relative error and central finite differences (all f64).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in ±[0.1, 1): random sign, never (near) zero.
pub fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let v: f64 = rng.random_range(0.1..1.0);
            if rng.random_bool(0.5) {
                v
            } else {
                -v
            }
        })
        .collect()
}

/// Uniform in [lo, hi).
pub fn rand_range(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// A buffer of NaN: an element the op forgets to write fails every comparison.
pub fn poisoned<T: super::real::Real>(n: usize) -> Vec<T> {
    vec![T::from_f64(f64::NAN); n]
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// ‖a − b‖ / ‖b‖ (NaN anywhere gives NaN, which fails any `<` check).
pub fn rel_err<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[A], b: &[B]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y): (f64, f64) = (x.into(), y.into());
        num += (x - y) * (x - y);
        den += y * y;
    }
    if a.iter().any(|&x| x.into().is_nan()) {
        return f64::NAN;
    }
    (num / den.max(1e-300)).sqrt()
}

/// Σ r·y.
pub fn dot(r: &[f64], y: &[f64]) -> f64 {
    r.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// Central finite differences of the scalar `f` at `x`, step `h`.
pub fn fd_grad(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = xp[i];
            xp[i] = x0 + h;
            let fp = f(&xp);
            xp[i] = x0 - h;
            let fm = f(&xp);
            xp[i] = x0;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// Finite-difference step and the tolerance every gradient check uses:
/// ‖analytic − fd‖ / ‖fd‖ ≤ GRAD_TOL. In f64 the central difference is accurate to
/// O(h²) ≈ 1e-10 plus rounding ≈ 1e-16/h, so 1e-6 leaves a wide margin.
pub const FD_H: f64 = 1e-5;
pub const GRAD_TOL: f64 = 1e-6;

/// Bitwise equality of two f32 buffers.
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Runs `f` in a rayon pool of `threads` threads.
pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}
