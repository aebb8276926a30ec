//! Losses; each writes the loss and its gradient w.r.t. the logits. Sums over the
//! batch run sequentially in index order, in f64 (the batch is small).

use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{LossIo, LossOps};

impl<T: Real> LossOps for CpuOf<T> {
    /// Softmax cross-entropy, mean over the rows present (targets summing to non-0).
    /// logits, targets: `[N, C]` (targets one-hot rows) → loss: `[1]`, dlogits: `[N, C]`.
    ///
    /// `loss = −(1/n) Σ_n Σ_c t·log softmax(z)`, `dz = (softmax(z)·Σ_c t − t)/n`
    /// (= (p − t)/n for one-hot rows; the general form keeps the FD check exact); an
    /// all-zero row (a missing target) adds nothing and gets dz = 0.
    fn softmax_cross_entropy(&self, batch: usize, classes: usize, io: LossIo<Vec<T>>) {
        let _span = profile::span("softmax_cross_entropy", || format!("{batch}×{classes}"));
        let (logits, targets, loss, dlogits) = (io.logits, io.targets, io.loss, io.dlogits);
        let len = batch * classes;
        debug_assert!(logits.len() >= len && targets.len() >= len && dlogits.len() >= len);
        debug_assert!(!loss.is_empty());
        let row_sum = |n: usize| -> f64 {
            let t = &targets[n * classes..(n + 1) * classes];
            t.iter().map(|v| v.to_f64()).sum()
        };
        let present = (0..batch).filter(|&n| row_sum(n) != 0.0).count();
        let inv_n = 1.0 / present.max(1) as f64;
        let mut total = 0.0f64;
        for n in 0..batch {
            let z = &logits[n * classes..(n + 1) * classes];
            let t = &targets[n * classes..(n + 1) * classes];
            let zmax = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
            let sum_exp: f64 = z.iter().map(|&v| (v.to_f64() - zmax).exp()).sum();
            let lse = zmax + sum_exp.ln();
            let t_sum = row_sum(n);
            total += z
                .iter()
                .zip(t)
                .map(|(&z, &t)| t.to_f64() * (lse - z.to_f64()))
                .sum::<f64>();
            let d = &mut dlogits[n * classes..(n + 1) * classes];
            for ((d, &z), &t) in d.iter_mut().zip(z).zip(t) {
                let p = (z.to_f64() - lse).exp();
                *d = T::from_f64((p * t_sum - t.to_f64()) * inv_n);
            }
        }
        loss[0] = T::from_f64(total * inv_n);
    }

    /// Sigmoid binary cross-entropy per task, stable form, mean over the samples
    /// present (a NaN target is missing: no loss, dz = 0).
    /// logits: `[T, N]` (task-major), targets: `[N, T]` → loss: `[T]`, dlogits: `[T, N]`.
    ///
    /// `loss[t] = (1/n) Σ_n max(z,0) − z·y + log(1 + exp(−|z|))`, `dz = (σ(z) − y)/n`.
    fn sigmoid_bce(&self, tasks: usize, batch: usize, io: LossIo<Vec<T>>) {
        let _span = profile::span("sigmoid_bce", || format!("{tasks}×{batch}"));
        let (logits, targets, loss, dlogits) = (io.logits, io.targets, io.loss, io.dlogits);
        let len = tasks * batch;
        debug_assert!(logits.len() >= len && targets.len() >= len && dlogits.len() >= len);
        debug_assert!(loss.len() >= tasks);
        for t in 0..tasks {
            let y_of = |n: usize| targets[n * tasks + t].to_f64();
            let present = (0..batch).filter(|&n| !y_of(n).is_nan()).count();
            let inv_n = 1.0 / present.max(1) as f64;
            let mut total = 0.0f64;
            for n in 0..batch {
                let (z, y) = (logits[t * batch + n].to_f64(), y_of(n));
                if y.is_nan() {
                    dlogits[t * batch + n] = T::ZERO;
                    continue;
                }
                let e = (-z.abs()).exp();
                total += z.max(0.0) - z * y + e.ln_1p();
                // σ(z) without overflow: exp(−|z|) ≤ 1.
                let sig = if z >= 0.0 {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                };
                dlogits[t * batch + n] = T::from_f64((sig - y) * inv_n);
            }
            loss[t] = T::from_f64(total * inv_n);
        }
    }

    /// Squared error, mean over the samples present (a NaN target is missing).
    /// logits, targets, dlogits: `[N]` → loss `[1]`.
    /// `loss = (1/n) Σ (z − t)²`, `dz = 2(z − t)/n`.
    fn mse(&self, batch: usize, io: LossIo<Vec<T>>) {
        let _span = profile::span("mse", || batch.to_string());
        let (logits, targets, loss, dlogits) = (io.logits, io.targets, io.loss, io.dlogits);
        debug_assert!(logits.len() >= batch && targets.len() >= batch && dlogits.len() >= batch);
        let present = targets[..batch].iter().filter(|t| !t.is_nan()).count();
        let inv_n = 1.0 / present.max(1) as f64;
        let mut total = 0.0f64;
        for n in 0..batch {
            let (z, t) = (logits[n].to_f64(), targets[n].to_f64());
            if t.is_nan() {
                dlogits[n] = T::ZERO;
                continue;
            }
            total += (z - t) * (z - t);
            dlogits[n] = T::from_f64(2.0 * (z - t) * inv_n);
        }
        loss[0] = T::from_f64(total * inv_n);
    }

    /// Pairwise logistic ranking loss over the ordered pairs (i, j) of present
    /// samples with `t_i > t_j`: `loss = (1/P) Σ log(1 + exp(−(z_i − z_j)))`, P the
    /// number of such pairs; each dz_i sums its pairs in index order.
    /// logits, targets, dlogits: `[N]` → loss `[1]`.
    fn pairwise_rank(&self, batch: usize, io: LossIo<Vec<T>>) {
        let _span = profile::span("pairwise_rank", || batch.to_string());
        let (logits, targets, loss, dlogits) = (io.logits, io.targets, io.loss, io.dlogits);
        debug_assert!(logits.len() >= batch && targets.len() >= batch && dlogits.len() >= batch);
        let t = |n: usize| targets[n].to_f64();
        let z = |n: usize| logits[n].to_f64();
        let pairs: usize = (0..batch)
            .map(|i| (0..batch).filter(|&j| t(i) > t(j)).count())
            .sum();
        let inv_p = 1.0 / pairs.max(1) as f64;
        let mut total = 0.0f64;
        for (i, dz) in dlogits[..batch].iter_mut().enumerate() {
            let mut d = 0.0f64;
            for j in 0..batch {
                if t(i) > t(j) {
                    // i should score above j: softplus(−(z_i − z_j)).
                    let m = z(i) - z(j);
                    total += softplus(-m);
                    d -= sigmoid(-m);
                } else if t(j) > t(i) {
                    d += sigmoid(-(z(j) - z(i)));
                }
            }
            *dz = T::from_f64(d * inv_p);
        }
        loss[0] = T::from_f64(total * inv_p);
    }
}

/// `log(1 + exp(x))` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + exp(−x))` without overflow.
fn sigmoid(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Cpu, Cpu64};
    use super::*;

    fn io<'a, T>(
        logits: &'a Vec<T>,
        targets: &'a Vec<T>,
        loss: &'a mut Vec<T>,
        dlogits: &'a mut Vec<T>,
    ) -> LossIo<'a, Vec<T>> {
        LossIo {
            logits,
            targets,
            loss,
            dlogits,
        }
    }

    fn one_hot(g: &mut rand_chacha::ChaCha8Rng, batch: usize, classes: usize) -> Vec<f64> {
        use rand::Rng;
        let mut t = vec![0.0; batch * classes];
        for n in 0..batch {
            t[n * classes + g.random_range(0..classes)] = 1.0;
        }
        t
    }

    #[test]
    fn softmax_ce_value_gradient_and_stability() {
        let (batch, classes) = (3, 7);
        let mut g = rng(12);
        let z = rand_range(&mut g, batch * classes, -3.0, 3.0);
        let t = one_hot(&mut g, batch, classes);
        let (mut loss, mut dz) = (poisoned(2), poisoned(batch * classes));
        Cpu64.softmax_cross_entropy(batch, classes, io(&z, &t, &mut loss, &mut dz));
        // Direct formula.
        let mut want = 0.0;
        for n in 0..batch {
            let row = &z[n * classes..(n + 1) * classes];
            let s: f64 = row.iter().map(|v| v.exp()).sum();
            let c = (0..classes).find(|&c| t[n * classes + c] == 1.0).unwrap();
            want -= (row[c].exp() / s).ln();
        }
        assert!((loss[0] - want / batch as f64).abs() < 1e-12);
        assert!(loss[1].is_nan()); // only loss[0] is written
                                   // L = r·loss, FD w.r.t. the logits; tolerance GRAD_TOL.
        let fz = fd_grad(&z, FD_H, |z| {
            let (mut l, mut d) = (vec![0.0; 1], vec![0.0; batch * classes]);
            Cpu64.softmax_cross_entropy(batch, classes, io(&z.to_vec(), &t, &mut l, &mut d));
            l[0]
        });
        assert!(rel_err(&dz, &fz) < GRAD_TOL);
        // f32 path vs f64 path.
        let (mut l32, mut d32) = (poisoned::<f32>(1), poisoned(batch * classes));
        Cpu.softmax_cross_entropy(
            batch,
            classes,
            io(&to_f32(&z), &to_f32(&t), &mut l32, &mut d32),
        );
        assert!(rel_err(&l32, &loss[..1]) < 1e-6 && rel_err(&d32, &dz) < 1e-6);
        // Huge logits stay finite.
        let zb = vec![1000.0f32, -1000.0, 0.0, 1000.0];
        let tb = vec![0.0f32, 1.0, 1.0, 0.0];
        let (mut lb, mut db) = (poisoned::<f32>(1), poisoned(4));
        Cpu.softmax_cross_entropy(2, 2, io(&zb, &tb, &mut lb, &mut db));
        assert!((lb[0] - 1500.0).abs() < 1e-3, "{lb:?}");
        assert!(db.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn sigmoid_bce_value_gradient_and_stability() {
        let (tasks, batch) = (4, 5);
        let mut g = rng(13);
        let z = rand_range(&mut g, tasks * batch, -4.0, 4.0);
        let y: Vec<f64> = one_hot(&mut g, batch * tasks, 2)
            .chunks(2)
            .map(|c| c[0])
            .collect();
        let r = rand_vec(&mut g, tasks);
        let (mut loss, mut dz) = (poisoned(tasks), poisoned(tasks * batch));
        Cpu64.sigmoid_bce(tasks, batch, io(&z, &y, &mut loss, &mut dz));
        for t in 0..tasks {
            let mut want = 0.0;
            for n in 0..batch {
                let p = 1.0 / (1.0 + (-z[t * batch + n]).exp());
                let yt = y[n * tasks + t];
                want -= yt * p.ln() + (1.0 - yt) * (1.0 - p).ln();
            }
            assert!((loss[t] - want / batch as f64).abs() < 1e-12);
        }
        // L = Σ_t r_t·loss_t; dL/dz = r_t·dz.
        let fz = fd_grad(&z, FD_H, |z| {
            let (mut l, mut d) = (vec![0.0; tasks], vec![0.0; tasks * batch]);
            Cpu64.sigmoid_bce(tasks, batch, io(&z.to_vec(), &y, &mut l, &mut d));
            dot(&r, &l)
        });
        let analytic: Vec<f64> = (0..tasks * batch).map(|i| r[i / batch] * dz[i]).collect();
        assert!(rel_err(&analytic, &fz) < GRAD_TOL);
        let (mut l32, mut d32) = (poisoned::<f32>(tasks), poisoned(tasks * batch));
        Cpu.sigmoid_bce(
            tasks,
            batch,
            io(&to_f32(&z), &to_f32(&y), &mut l32, &mut d32),
        );
        assert!(rel_err(&l32, &loss) < 1e-6 && rel_err(&d32, &dz) < 1e-6);
        // Huge logits stay finite: z = ±1000 with the wrong label costs 1000.
        let (mut lb, mut db) = (poisoned::<f32>(1), poisoned(2));
        let (z, t) = (vec![1000.0f32, -1000.0], vec![0.0, 1.0]);
        Cpu.sigmoid_bce(1, 2, io(&z, &t, &mut lb, &mut db));
        assert!(
            (lb[0] - 1000.0).abs() < 1e-3 && db == [0.5, -0.5],
            "{lb:?} {db:?}"
        );
    }

    /// The per-sample losses of the heterogeneous tasks against central differences
    /// in f64, with missing targets: the value is the mean over what is present and a
    /// missing sample's gradient is exactly 0.
    #[test]
    fn masked_losses_value_and_gradient() {
        let batch = 9;
        let mut g = rng(14);
        let z = rand_range(&mut g, batch, -3.0, 3.0);
        // Targets with a tie (pairs that a ranking skips) and two missing.
        let t = vec![0.5, -1.0, f64::NAN, 2.0, 0.5, -0.25, f64::NAN, 1.5, 0.0];
        let present: Vec<usize> = (0..batch).filter(|&n| !t[n].is_nan()).collect();
        type Op = fn(usize, LossIo<Vec<f64>>);
        let ops: [(&str, Op); 3] = [
            ("mse", |n, io| Cpu64.mse(n, io)),
            ("pairwise_rank", |n, io| Cpu64.pairwise_rank(n, io)),
            ("sigmoid_bce", |n, io| Cpu64.sigmoid_bce(1, n, io)),
        ];
        for (name, op) in ops {
            // BCE takes 0/1 targets.
            let t: Vec<f64> = if name == "sigmoid_bce" {
                t.iter()
                    .map(|&v| if v.is_nan() { v } else { f64::from(v > 0.4) })
                    .collect()
            } else {
                t.clone()
            };
            let run = |z: &[f64]| {
                let (mut l, mut d) = (poisoned(1), poisoned(batch));
                op(batch, io(&z.to_vec(), &t, &mut l, &mut d));
                (l[0], d)
            };
            let (loss, dz) = run(&z);
            let want = match name {
                "mse" => present.iter().map(|&n| (z[n] - t[n]).powi(2)).sum::<f64>() / 7.0,
                "sigmoid_bce" => {
                    present
                        .iter()
                        .map(|&n| {
                            let p = 1.0 / (1.0 + (-z[n]).exp());
                            -(t[n] * p.ln() + (1.0 - t[n]) * (1.0 - p).ln())
                        })
                        .sum::<f64>()
                        / 7.0
                }
                _ => {
                    let pairs: Vec<(usize, usize)> = present
                        .iter()
                        .flat_map(|&i| present.iter().map(move |&j| (i, j)))
                        .filter(|&(i, j)| t[i] > t[j])
                        .collect();
                    assert_eq!(pairs.len(), 20, "7 present, one tie: 21 − 1 pairs");
                    pairs
                        .iter()
                        .map(|&(i, j)| (1.0 + (z[j] - z[i]).exp()).ln())
                        .sum::<f64>()
                        / pairs.len() as f64
                }
            };
            assert!((loss - want).abs() < 1e-12, "{name}: {loss} vs {want}");
            let fz = fd_grad(&z, FD_H, |z| run(z).0);
            assert!(rel_err(&dz, &fz) < GRAD_TOL, "{name}: {dz:?} vs {fz:?}");
            assert!(
                dz[2] == 0.0 && dz[6] == 0.0,
                "{name}: missing samples get no gradient"
            );
        }
        // Softmax CE: an all-zero target row is missing.
        let (classes, z) = (4, rand_vec(&mut g, 3 * 4));
        let mut t = vec![0.0; 12];
        t[1] = 1.0;
        t[8 + 3] = 1.0; // row 1 missing
        let run = |z: &[f64]| {
            let (mut l, mut d) = (poisoned(1), poisoned(12));
            Cpu64.softmax_cross_entropy(3, classes, io(&z.to_vec(), &t, &mut l, &mut d));
            (l[0], d)
        };
        let (loss, dz) = run(&z);
        let ce = |row: usize, c: usize| {
            let r = &z[row * 4..row * 4 + 4];
            r.iter().map(|v| v.exp()).sum::<f64>().ln() - r[c]
        };
        assert!((loss - (ce(0, 1) + ce(2, 3)) / 2.0).abs() < 1e-12);
        assert!(dz[4..8].iter().all(|&v| v == 0.0));
        assert!(rel_err(&dz, &fd_grad(&z, FD_H, |z| run(z).0)) < GRAD_TOL);
    }
}
