//! Batch normalisation over N·H·W per channel, PyTorch semantics.
//!
//! Statistics are accumulated in f64 whatever T is (M = N·H·W can be ~10⁵), each
//! channel summed sequentially in (n, h, w) order by one task: deterministic.
//! Then every (n, c) plane is written by its own task.

use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{
    Backward, BatchNorm2d, BatchStats, Forward, Nchw, NormOps, PoolOps, RunningStats, TrainStats,
};
use rayon::prelude::*;

/// Independent partial sums per channel reduction. One running f64 sum is a chain of
/// dependent adds (latency-bound, ~4 cycles per element); `LANES` interleaved sums,
/// lane i taking the elements at i mod LANES of each plane, run at throughput and
/// vectorise. The lanes are added in lane order at the end: a fixed order that
/// depends on the shape only.
const LANES: usize = 8;

/// Σ over the planes of channel `c`: `f(plane of a, plane of b)` summed in f64.
fn channel_sum<T: Real, const K: usize>(
    s: &Nchw,
    c: usize,
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> [f64; K],
) -> [f64; K] {
    let hw = s.height * s.width;
    let mut lanes = [[0.0; LANES]; K];
    let mut add = |lane: usize, u: T, v: T| {
        for (l, t) in lanes.iter_mut().zip(f(u, v)) {
            l[lane] += t;
        }
    };
    for n in 0..s.batch {
        let off = (n * s.channels + c) * hw;
        let (a_p, b_p) = (&a[off..off + hw], &b[off..off + hw]);
        let (a_c, b_c) = (a_p.chunks_exact(LANES), b_p.chunks_exact(LANES));
        let (a_r, b_r) = (a_c.remainder(), b_c.remainder());
        for (u, v) in a_c.zip(b_c) {
            for i in 0..LANES {
                add(i, u[i], v[i]);
            }
        }
        for (i, (&u, &v)) in a_r.iter().zip(b_r).enumerate() {
            add(i, u, v);
        }
    }
    lanes.map(|l| l.iter().sum())
}

impl<T: Real> NormOps for CpuOf<T> {
    /// Training mode. x: `[N, C, H, W]`, γ = p.w, β = p.b: `[C]` → y: `[N, C, H, W]`,
    /// batch mean `[C]` and inv_std `[C]` = 1/sqrt(var_biased + eps); updates the
    /// running mean and var `[C]`: `running = (1−momentum)·running + momentum·stat`,
    /// with the unbiased variance var·M/(M−1).
    fn batchnorm2d_forward_train(
        &self,
        bn: &BatchNorm2d,
        Forward { x, p, y }: Forward<Vec<T>>,
        TrainStats { batch, running }: TrainStats<Vec<T>>,
    ) {
        let _span = profile::span("batchnorm2d_forward_train", || bn.shape.to_string());
        let s = &bn.shape;
        let (gamma, beta) = (p.w, p.b);
        let (mean, inv_std) = (batch.mean, batch.inv_std);
        let (running_mean, running_var) = (running.mean, running.var);
        let c_n = s.channels;
        debug_assert!(x.len() >= s.len() && y.len() >= s.len());
        debug_assert!(gamma.len() >= c_n && beta.len() >= c_n && mean.len() >= c_n);
        debug_assert!(
            inv_std.len() >= c_n && running_mean.len() >= c_n && running_var.len() >= c_n
        );
        let m = (s.batch * s.height * s.width) as f64;
        let (mom, eps) = (bn.momentum as f64, bn.eps as f64);
        // (mean, biased var) per channel; two passes for accuracy.
        let stats: Vec<(f64, f64)> = (0..c_n)
            .into_par_iter()
            .map(|c| {
                let [sum] = channel_sum(s, c, x, x, |u, _| [u.to_f64()]);
                let mu = sum / m;
                let [sq] = channel_sum(s, c, x, x, |u, _| {
                    let d = u.to_f64() - mu;
                    [d * d]
                });
                (mu, sq / m)
            })
            .collect();
        for c in 0..c_n {
            let (mu, var) = stats[c];
            mean[c] = T::from_f64(mu);
            inv_std[c] = T::from_f64(1.0 / (var + eps).sqrt());
            let unbiased = if m > 1.0 { var * m / (m - 1.0) } else { var };
            running_mean[c] = T::from_f64((1.0 - mom) * running_mean[c].to_f64() + mom * mu);
            running_var[c] = T::from_f64((1.0 - mom) * running_var[c].to_f64() + mom * unbiased);
        }
        let (mean, inv_std) = (&mean[..c_n], &inv_std[..c_n]);
        normalise(s, x, y, |c| {
            let scale = gamma[c] * inv_std[c];
            (scale, beta[c] - mean[c] * scale)
        });
    }

    /// Evaluation mode: `y = (x − running_mean)/sqrt(running_var + eps)·γ + β`.
    fn batchnorm2d_forward_eval(
        &self,
        bn: &BatchNorm2d,
        Forward { x, p, y }: Forward<Vec<T>>,
        running: RunningStats<&Vec<T>>,
    ) {
        let _span = profile::span("batchnorm2d_forward_eval", || bn.shape.to_string());
        let s = &bn.shape;
        let (gamma, beta) = (p.w, p.b);
        let (running_mean, running_var) = (running.mean, running.var);
        let c_n = s.channels;
        debug_assert!(x.len() >= s.len() && y.len() >= s.len());
        debug_assert!(gamma.len() >= c_n && beta.len() >= c_n);
        debug_assert!(running_mean.len() >= c_n && running_var.len() >= c_n);
        let eps = bn.eps as f64;
        normalise(s, x, y, |c| {
            let scale = gamma[c].to_f64() / (running_var[c].to_f64() + eps).sqrt();
            let shift = beta[c].to_f64() - running_mean[c].to_f64() * scale;
            (T::from_f64(scale), T::from_f64(shift))
        });
    }

    /// Backward of the training-mode forward. With x̂ = (x − mean)·inv_std, M = N·H·W:
    /// `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ·inv_std·(dy − dβ/M − x̂·dγ/M)`.
    /// x, dy, dx: `[N, C, H, W]`; gamma, mean, inv_std, dγ (g.dw), dβ (g.db): `[C]`.
    /// Without `g.dx` the input gradient is computed into scratch (the kernel always
    /// writes one).
    fn batchnorm2d_backward(
        &self,
        s: &Nchw,
        Backward { x, w: gamma, dy, g }: Backward<Vec<T>>,
        batch: BatchStats<&Vec<T>>,
    ) {
        let _span = profile::span("batchnorm2d_backward", || s.to_string());
        let (mean, inv_std) = (batch.mean, batch.inv_std);
        let (dgamma, dbeta) = (g.dw, g.db);
        let mut scratch = Vec::new();
        let dx = match g.dx {
            Some(dx) => dx,
            None => {
                scratch.resize(s.len(), T::ZERO);
                &mut scratch
            }
        };
        let c_n = s.channels;
        let hw = s.height * s.width;
        debug_assert!(x.len() >= s.len() && dy.len() >= s.len() && dx.len() >= s.len());
        debug_assert!(gamma.len() >= c_n && mean.len() >= c_n && inv_std.len() >= c_n);
        debug_assert!(dgamma.len() >= c_n && dbeta.len() >= c_n);
        let m = (s.batch * hw) as f64;
        let sums: Vec<[f64; 2]> = (0..c_n)
            .into_par_iter()
            .map(|c| {
                let (mu, is) = (mean[c].to_f64(), inv_std[c].to_f64());
                channel_sum(s, c, dy, x, |g, u| {
                    let g = g.to_f64();
                    [g, g * (u.to_f64() - mu) * is]
                })
            })
            .collect();
        // Per channel: dx = a·dy + b·x + c, folded from the formula above.
        let coef: Vec<[T; 3]> = (0..c_n)
            .map(|c| {
                let [sdy, sdyxh] = sums[c];
                dbeta[c] = T::from_f64(sdy);
                dgamma[c] = T::from_f64(sdyxh);
                let (mu, is) = (mean[c].to_f64(), inv_std[c].to_f64());
                let k = gamma[c].to_f64() * is;
                // dx = k·dy − k·sdy/M − k·is·(x − mu)·sdyxh/M
                let bx = -k * is * sdyxh / m;
                let c0 = -k * sdy / m - bx * mu;
                [T::from_f64(k), T::from_f64(bx), T::from_f64(c0)]
            })
            .collect();
        // hw.max(1): with empty planes dx is empty and no chunk is visited.
        dx[..s.len()]
            .par_chunks_mut(hw.max(1))
            .enumerate()
            .for_each(|(plane, dx_p)| {
                let [a, b, c0] = coef[plane % c_n];
                let off = plane * hw;
                for ((d, &g), &u) in dx_p
                    .iter_mut()
                    .zip(&dy[off..off + hw])
                    .zip(&x[off..off + hw])
                {
                    *d = a * g + b * u + c0;
                }
            });
    }

    /// The two ops in turn (no span of its own: each op times itself, so the
    /// per-op table counts them once).
    fn batchnorm2d_relu_maxpool_train(
        &self,
        bn: &BatchNorm2d,
        Forward { x, p, y }: Forward<Vec<T>>,
        pooled: &mut Vec<T>,
        stats: TrainStats<Vec<T>>,
    ) {
        self.batchnorm2d_forward_train(bn, Forward { x, p, y: &mut *y }, stats);
        self.relu_maxpool2x2_forward(&bn.shape, y, pooled);
    }

    /// The two ops in turn, as the forward.
    fn relu_maxpool_batchnorm2d_backward(
        &self,
        s: &Nchw,
        Backward { x, w, dy, g }: Backward<Vec<T>>,
        n: &Vec<T>,
        dn: &mut Vec<T>,
        batch: BatchStats<&Vec<T>>,
    ) {
        self.relu_maxpool2x2_backward(s, n, dy, dn);
        self.batchnorm2d_backward(s, Backward { x, w, dy: &*dn, g }, batch);
    }
}

/// `y = x·scale_c + shift_c` per (n, c) plane; `affine(c)` gives (scale, shift).
fn normalise<T: Real>(s: &Nchw, x: &[T], y: &mut [T], affine: impl Fn(usize) -> (T, T) + Sync) {
    let hw = s.height * s.width;
    if hw == 0 {
        return;
    }
    let coef: Vec<(T, T)> = (0..s.channels).map(affine).collect();
    y[..s.len()]
        .par_chunks_mut(hw)
        .zip(x[..s.len()].par_chunks(hw))
        .enumerate()
        .for_each(|(plane, (y_p, x_p))| {
            let (scale, shift) = coef[plane % s.channels];
            for (y, &x) in y_p.iter_mut().zip(x_p) {
                *y = x * scale + shift;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Cpu, Cpu64};
    use super::*;
    use crate::backend::{Grads, WeightBias};

    const BN: fn(Nchw) -> BatchNorm2d = |shape| BatchNorm2d {
        shape,
        momentum: 0.1,
        eps: 1e-5,
    };
    /// The constants as the f64 path sees them (f32 values widened).
    const MOMENTUM: f64 = 0.1f32 as f64;
    const EPS: f64 = 1e-5f32 as f64;

    /// Training forward then backward on `cpu`: `[y, mean, inv_std, running_mean,
    /// running_var, dx, dγ, dβ]`, every output poisoned first; the running
    /// statistics start at `running0` (default: mean 0, var 1).
    fn train_and_backward<T: Real>(
        cpu: CpuOf<T>,
        s: &Nchw,
        [x, gamma, beta, dy]: [&Vec<T>; 4],
        running0: Option<[&Vec<T>; 2]>,
    ) -> [Vec<T>; 8] {
        let c_n = s.channels;
        let mut y = poisoned(s.len());
        let (mut mean, mut is) = (poisoned(c_n), poisoned(c_n));
        let [mut rm, mut rv] = match running0 {
            Some([m, v]) => [m.clone(), v.clone()],
            None => [vec![T::ZERO; c_n], vec![T::ONE; c_n]],
        };
        let p = WeightBias { w: gamma, b: beta };
        let batch = BatchStats {
            mean: &mut mean,
            inv_std: &mut is,
        };
        let running = RunningStats {
            mean: &mut rm,
            var: &mut rv,
        };
        let io = Forward { x, p, y: &mut y };
        cpu.batchnorm2d_forward_train(&BN(*s), io, TrainStats { batch, running });
        let (mut dx, mut dg, mut db) = (poisoned(s.len()), poisoned(c_n), poisoned(c_n));
        let stats = BatchStats {
            mean: &mean,
            inv_std: &is,
        };
        let g = Grads {
            dx: Some(&mut dx),
            dw: &mut dg,
            db: &mut db,
        };
        let io = Backward { x, w: gamma, dy, g };
        cpu.batchnorm2d_backward(s, io, stats);
        [y, mean, is, rm, rv, dx, dg, db]
    }

    /// Training forward in f64 (discarding the rest).
    fn forward(s: &Nchw, x: &[f64], g: &[f64], b: &[f64]) -> Vec<f64> {
        let dy = vec![0.0; s.len()];
        let [y, ..] =
            train_and_backward(Cpu64, s, [&x.to_vec(), &g.to_vec(), &b.to_vec(), &dy], None);
        y
    }

    #[test]
    fn train_forward_stats_running_stats_and_eval() {
        for s in [nchw(3, 2, 5, 7), nchw(4, 3, 1, 1)] {
            let mut g = rng(5);
            let c_n = s.channels;
            let x: Vec<f64> = rand_range(&mut g, s.len(), -1.0, 3.0);
            let (gamma, beta) = (rand_vec(&mut g, c_n), rand_vec(&mut g, c_n));
            let rm0 = rand_vec(&mut g, c_n);
            let rv0 = rand_range(&mut g, c_n, 0.5, 2.0);
            let dy = rand_vec(&mut g, s.len());
            let [y, mean, is, rm, rv, ..] =
                train_and_backward(Cpu64, &s, [&x, &gamma, &beta, &dy], Some([&rm0, &rv0]));
            let hw = s.height * s.width;
            let m = (s.batch * hw) as f64;
            let mut want_y = vec![0.0; s.len()];
            for c in 0..c_n {
                let vals: Vec<(usize, f64)> = (0..s.batch)
                    .flat_map(|n| (0..hw).map(move |i| (n * c_n + c) * hw + i))
                    .map(|i| (i, x[i]))
                    .collect();
                let mu = vals.iter().map(|v| v.1).sum::<f64>() / m;
                let var = vals.iter().map(|v| (v.1 - mu).powi(2)).sum::<f64>() / m;
                assert!((mean[c] - mu).abs() < 1e-12);
                assert!((is[c] - 1.0 / (var + EPS).sqrt()).abs() < 1e-10);
                assert!((rm[c] - ((1.0 - MOMENTUM) * rm0[c] + MOMENTUM * mu)).abs() < 1e-12);
                assert!(
                    (rv[c] - ((1.0 - MOMENTUM) * rv0[c] + MOMENTUM * var * m / (m - 1.0))).abs()
                        < 1e-12
                );
                for (i, v) in vals {
                    want_y[i] = (v - mu) / (var + EPS).sqrt() * gamma[c] + beta[c];
                }
            }
            assert!(rel_err(&y, &want_y) < 1e-12);

            let mut ye = poisoned(s.len());
            let p = WeightBias {
                w: &gamma,
                b: &beta,
            };
            let running = RunningStats {
                mean: &rm,
                var: &rv,
            };
            let io = Forward {
                x: &x,
                p,
                y: &mut ye,
            };
            Cpu64.batchnorm2d_forward_eval(&BN(s), io, running);
            let want_e: Vec<f64> = (0..s.len())
                .map(|i| {
                    let c = (i / hw) % c_n;
                    (x[i] - rm[c]) / (rv[c] + EPS).sqrt() * gamma[c] + beta[c]
                })
                .collect();
            assert!(rel_err(&ye, &want_e) < 1e-12);
        }
    }

    /// L = Σ r·bn(x, γ, β) (training mode, stats depend on x).
    #[test]
    fn backward_matches_finite_differences() {
        for s in [nchw(3, 2, 5, 7), nchw(5, 3, 1, 1), nchw(2, 4, 3, 3)] {
            let mut g = rng(9);
            let c_n = s.channels;
            let x = rand_vec(&mut g, s.len());
            let (gamma, beta) = (rand_vec(&mut g, c_n), rand_vec(&mut g, c_n));
            let r = rand_vec(&mut g, s.len());
            let [y, _, _, _, _, dx, dg, db] =
                train_and_backward(Cpu64, &s, [&x, &gamma, &beta, &r], None);
            let fx = fd_grad(&x, FD_H, |x| dot(&r, &forward(&s, x, &gamma, &beta)));
            let fg = fd_grad(&gamma, FD_H, |gm| dot(&r, &forward(&s, &x, gm, &beta)));
            let fb = fd_grad(&beta, FD_H, |bt| dot(&r, &forward(&s, &x, &gamma, bt)));
            assert!(
                rel_err(&dx, &fx) < GRAD_TOL,
                "dx {s:?} {}",
                rel_err(&dx, &fx)
            );
            assert!(rel_err(&dg, &fg) < GRAD_TOL, "dgamma {s:?}");
            assert!(rel_err(&db, &fb) < GRAD_TOL, "dbeta {s:?}");

            // f32 path vs f64 path (forward and backward).
            let f = to_f32;
            let (x32, g32, b32, r32) = (f(&x), f(&gamma), f(&beta), f(&r));
            let [y32, _, _, _, _, dx32, dg32, db32] =
                train_and_backward(Cpu, &s, [&x32, &g32, &b32, &r32], None);
            assert!(rel_err(&y32, &y) < 1e-5);
            assert!(rel_err(&dx32, &dx) < 1e-5);
            assert!(rel_err(&dg32, &dg) < 1e-5);
            assert!(rel_err(&db32, &db) < 1e-5);
        }
    }

    /// The conv block's fused pair (batchnorm → ReLU → 2×2 max-pool) on Cpu64:
    /// L = Σ r·pool(relu(bn(x, γ, β))) in training mode, its gradients by
    /// `relu_maxpool_batchnorm2d_backward` against central differences. Odd H and W
    /// (a dropped row and column). Random x: no ReLU kink or window tie lies
    /// within FD_H of the points checked.
    #[test]
    fn fused_relu_maxpool_matches_finite_differences() {
        for s in [nchw(3, 2, 5, 7), nchw(2, 3, 4, 4)] {
            let mut g = rng(21);
            let c_n = s.channels;
            let p_len = s.batch * c_n * (s.height / 2) * (s.width / 2);
            let x = rand_vec(&mut g, s.len());
            let (gamma, beta) = (rand_vec(&mut g, c_n), rand_vec(&mut g, c_n));
            let r = rand_vec(&mut g, p_len);
            // [n, pooled, mean, inv_std] of the fused forward.
            let forward = |x: &[f64], gm: &[f64], bt: &[f64]| {
                let (mut n, mut p) = (poisoned(s.len()), poisoned(p_len));
                let (mut mean, mut is) = (poisoned(c_n), poisoned(c_n));
                let (mut rm, mut rv) = (vec![0.0; c_n], vec![1.0; c_n]);
                let (x, gm, bt) = (x.to_vec(), gm.to_vec(), bt.to_vec());
                let io = Forward {
                    x: &x,
                    p: WeightBias { w: &gm, b: &bt },
                    y: &mut n,
                };
                let stats = TrainStats {
                    batch: BatchStats {
                        mean: &mut mean,
                        inv_std: &mut is,
                    },
                    running: RunningStats {
                        mean: &mut rm,
                        var: &mut rv,
                    },
                };
                Cpu64.batchnorm2d_relu_maxpool_train(&BN(s), io, &mut p, stats);
                [n, p, mean, is]
            };
            let [n, _, mean, is] = forward(&x, &gamma, &beta);
            let (mut dn, mut dx) = (poisoned(s.len()), poisoned(s.len()));
            let (mut dg, mut db) = (poisoned(c_n), poisoned(c_n));
            let io = Backward {
                x: &x,
                w: &gamma,
                dy: &r,
                g: Grads {
                    dx: Some(&mut dx),
                    dw: &mut dg,
                    db: &mut db,
                },
            };
            let stats = BatchStats {
                mean: &mean,
                inv_std: &is,
            };
            Cpu64.relu_maxpool_batchnorm2d_backward(&s, io, &n, &mut dn, stats);
            let loss = |x: &[f64], gm: &[f64], bt: &[f64]| dot(&r, &forward(x, gm, bt)[1]);
            let fx = fd_grad(&x, FD_H, |x| loss(x, &gamma, &beta));
            let fg = fd_grad(&gamma, FD_H, |gm| loss(&x, gm, &beta));
            let fb = fd_grad(&beta, FD_H, |bt| loss(&x, &gamma, bt));
            assert!(
                rel_err(&dx, &fx) < GRAD_TOL,
                "dx {s:?} {}",
                rel_err(&dx, &fx)
            );
            assert!(rel_err(&dg, &fg) < GRAD_TOL, "dgamma {s:?}");
            assert!(rel_err(&db, &fb) < GRAD_TOL, "dbeta {s:?}");
            assert!(dn.iter().all(|v| !v.is_nan()), "dn written {s:?}");
        }
    }

    /// Without `dx` the parameter gradients are the same.
    #[test]
    fn backward_without_dx() {
        let s = nchw(3, 2, 5, 7);
        let mut g = rng(4);
        let c_n = s.channels;
        let [x, gamma, beta, dy] =
            [s.len(), c_n, c_n, s.len()].map(|n| to_f32(&rand_vec(&mut g, n)));
        let [_, mean, is, _, _, _, dg, db] =
            train_and_backward(Cpu, &s, [&x, &gamma, &beta, &dy], None);
        let (mut dg2, mut db2) = (poisoned(c_n), poisoned(c_n));
        let stats = BatchStats {
            mean: &mean,
            inv_std: &is,
        };
        let grads = Grads {
            dx: None,
            dw: &mut dg2,
            db: &mut db2,
        };
        let io = Backward {
            x: &x,
            w: &gamma,
            dy: &dy,
            g: grads,
        };
        Cpu.batchnorm2d_backward(&s, io, stats);
        assert!(same_bits(&dg, &dg2) && same_bits(&db, &db2));
    }

    #[test]
    fn deterministic_across_runs_and_thread_counts() {
        let s = nchw(17, 6, 9, 11);
        let mut g = rng(2);
        let c_n = s.channels;
        let x = to_f32(&rand_vec(&mut g, s.len()));
        let dy = to_f32(&rand_vec(&mut g, s.len()));
        let (gamma, beta) = (
            to_f32(&rand_vec(&mut g, c_n)),
            to_f32(&rand_vec(&mut g, c_n)),
        );
        let run = || train_and_backward(Cpu, &s, [&x, &gamma, &beta, &dy], None);
        let first = run();
        for other in [run(), in_pool(1, run), in_pool(3, run)] {
            for (a, b) in first.iter().zip(&other) {
                assert!(same_bits(a, b));
            }
        }
    }
}
