//! Shared helpers for the CPU op tests: seeded random inputs, NaN poisoning,
//! relative error and central finite differences (all f64).

use super::Real;
use crate::backend::{Backward, Forward, Grads, WeightBias};
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
pub fn poisoned<T: Real>(n: usize) -> Vec<T> {
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

pub fn nchw(batch: usize, channels: usize, height: usize, width: usize) -> crate::backend::Nchw {
    crate::backend::Nchw {
        batch,
        channels,
        height,
        width,
    }
}

/// Runs `f` in a rayon pool of `threads` threads.
pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Buffers of the CPU device over `T` (short, so the layer hooks fit a line).
pub type V<T> = Vec<T>;

/// A layer with a weight and a bias (conv, branch-batched linear), as the shared
/// checks below drive it: its buffer lengths and its two ops on the CPU device.
pub trait WeightBiasLayer: std::fmt::Debug + Sync {
    fn run_forward<T: Real>(&self, io: Forward<V<T>>);
    /// Lengths of `[x, w, b, y]`.
    fn lens(&self) -> [usize; 4];
    fn run_backward<T: Real>(&self, io: Backward<V<T>>);

    /// y (poisoned first), `extra` floats longer than the shape needs.
    fn forward<T: Real>(&self, x: &V<T>, [w, b]: [&V<T>; 2], extra: usize) -> V<T> {
        let mut y = poisoned(self.lens()[3] + extra);
        let p = WeightBias { w, b };
        self.run_forward(Forward { x, p, y: &mut y });
        y
    }

    /// `[dx, dw, db]` (poisoned first); dx stays poisoned without `with_dx`.
    fn backward<T: Real>(&self, x: &V<T>, w: &V<T>, dy: &V<T>, with_dx: bool) -> [V<T>; 3] {
        let [x_len, w_len, b_len, _] = self.lens();
        let [mut dx, mut dw, mut db] = [x_len, w_len, b_len].map(poisoned);
        let g = Grads {
            dx: with_dx.then_some(&mut dx),
            dw: &mut dw,
            db: &mut db,
        };
        self.run_backward(Backward { x, w, dy, g });
        [dx, dw, db]
    }

    /// Random `[x, w, b, dy]`.
    fn inputs(&self, seed: u64) -> [Vec<f64>; 4] {
        let mut g = rng(seed);
        self.lens().map(|n| rand_vec(&mut g, n))
    }
}

/// The forward against `want` in f64 (1e-13) and f32 (1e-5), writing only the prefix
/// of a longer output buffer.
pub fn check_forward<L: WeightBiasLayer>(l: &L, want: impl Fn(&[f64], &[f64], &[f64]) -> Vec<f64>) {
    let [x, w, b, _] = l.inputs(7);
    let want = want(&x, &w, &b);
    let y_len = l.lens()[3];
    let y = l.forward(&x, [&w, &b], 5);
    assert!(rel_err(&y[..y_len], &want) < 1e-13, "{l:?}");
    assert!(y[y_len..].iter().all(|v| v.is_nan()));
    let y32 = l.forward(&to_f32(&x), [&to_f32(&w), &to_f32(&b)], 0);
    assert!(rel_err(&y32, &want) < 1e-5, "{l:?}");
}

/// L = Σ r·layer(x, w, b), so dL/dy = r: every gradient against central
/// differences in f64; the f32 path against the f64 one; without dx, dw and db
/// are bitwise those with it.
pub fn check_backward<L: WeightBiasLayer>(l: &L) {
    let [x, w, b, r] = l.inputs(11);
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        let y = l.forward(&x.to_vec(), [&w.to_vec(), &b.to_vec()], 0);
        dot(&r, &y)
    };
    let [dx, dw, db] = l.backward(&x, &w, &r, true);
    let fx = fd_grad(&x, FD_H, |x| loss(x, &w, &b));
    let fw = fd_grad(&w, FD_H, |w| loss(&x, w, &b));
    let fb = fd_grad(&b, FD_H, |b| loss(&x, &w, b));
    assert!(rel_err(&dx, &fx) < GRAD_TOL, "dx {l:?}");
    assert!(rel_err(&dw, &fw) < GRAD_TOL, "dw {l:?}");
    assert!(rel_err(&db, &fb) < GRAD_TOL, "db {l:?}");
    let (x32, w32, r32) = (to_f32(&x), to_f32(&w), to_f32(&r));
    let [dx32, dw32, db32] = l.backward(&x32, &w32, &r32, true);
    assert!(rel_err(&dx32, &dx) < 1e-5, "dx f32 {l:?}");
    assert!(rel_err(&dw32, &dw) < 1e-5, "dw f32 {l:?}");
    assert!(rel_err(&db32, &db) < 1e-5, "db f32 {l:?}");
    let [_, dw2, db2] = l.backward(&x32, &w32, &r32, false);
    assert!(
        same_bits(&dw2, &dw32) && same_bits(&db2, &db32),
        "without dx {l:?}"
    );
}

/// Forward and backward give the same bits run after run and with 1 or 3 threads.
pub fn check_deterministic<L: WeightBiasLayer>(l: &L) {
    let [x, w, b, dy] = l.inputs(3).map(|v| to_f32(&v));
    let run = || {
        let [dx, dw, db] = l.backward(&x, &w, &dy, true);
        [l.forward(&x, [&w, &b], 0), dx, dw, db]
    };
    let first = run();
    for other in [run(), in_pool(1, run), in_pool(3, run)] {
        for (a, b) in first.iter().zip(&other) {
            assert!(same_bits(a, b), "{l:?}");
        }
    }
}

/// The three tests of a [`WeightBiasLayer`]: the forward against direct loops
/// (`naive(&shape, x, w, b)`) on every `forward` shape, the backward against
/// finite differences on every `backward` shape, and bit-identical results across
/// runs and thread counts at the `deterministic` shape.
macro_rules! weight_bias_layer_tests {
    (forward: $fwd:expr, naive: $naive:path, backward: $bwd:expr, deterministic: $det:expr $(,)?) => {
        #[test]
        fn forward_matches_direct_loops_f64_and_f32() {
            for s in $fwd {
                check_forward(&s, |x, w, b| $naive(&s, x, w, b));
            }
        }

        #[test]
        fn backward_matches_finite_differences() {
            for s in $bwd {
                check_backward(&s);
            }
        }

        #[test]
        fn deterministic_across_runs_and_thread_counts() {
            check_deterministic(&$det);
        }
    };
}
pub(crate) use weight_bias_layer_tests;
