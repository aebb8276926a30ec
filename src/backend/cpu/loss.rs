//! Losses; each writes the loss and its gradient w.r.t. the logits. Sums over the
//! batch run sequentially in index order, in f64 (the batch is small).

use super::real::Real;
use super::CpuOf;
use crate::backend::{LossIo, LossOps};

impl<T: Real> LossOps for CpuOf<T> {
    /// Softmax cross-entropy, mean over the batch.
    /// logits, targets: `[N, C]` (targets one-hot rows) → loss: `[1]`, dlogits: `[N, C]`.
    ///
    /// `loss = −(1/N) Σ_n Σ_c t·log softmax(z)`, `dz = (softmax(z)·Σ_c t − t)/N`
    /// (= (p − t)/N for one-hot rows; the general form keeps the FD check exact).
    fn softmax_cross_entropy(&self, batch: usize, classes: usize, io: LossIo<Vec<T>>) {
        let (logits, targets, loss, dlogits) = (io.logits, io.targets, io.loss, io.dlogits);
        let len = batch * classes;
        debug_assert!(logits.len() >= len && targets.len() >= len && dlogits.len() >= len);
        debug_assert!(!loss.is_empty());
        let inv_n = 1.0 / batch.max(1) as f64;
        let mut total = 0.0f64;
        for n in 0..batch {
            let z = &logits[n * classes..(n + 1) * classes];
            let t = &targets[n * classes..(n + 1) * classes];
            let zmax = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
            let sum_exp: f64 = z.iter().map(|&v| (v.to_f64() - zmax).exp()).sum();
            let lse = zmax + sum_exp.ln();
            let t_sum: f64 = t.iter().map(|v| v.to_f64()).sum();
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

    /// Sigmoid binary cross-entropy per task, stable form, mean over the batch per task.
    /// logits: `[T, N]` (task-major), targets: `[N, T]` → loss: `[T]`, dlogits: `[T, N]`.
    ///
    /// `loss[t] = (1/N) Σ_n max(z,0) − z·y + log(1 + exp(−|z|))`, `dz = (σ(z) − y)/N`.
    fn sigmoid_bce(&self, tasks: usize, batch: usize, io: LossIo<Vec<T>>) {
        let (logits, targets, loss, dlogits) = (io.logits, io.targets, io.loss, io.dlogits);
        let len = tasks * batch;
        debug_assert!(logits.len() >= len && targets.len() >= len && dlogits.len() >= len);
        debug_assert!(loss.len() >= tasks);
        let inv_n = 1.0 / batch.max(1) as f64;
        for t in 0..tasks {
            let mut total = 0.0f64;
            for n in 0..batch {
                let z = logits[t * batch + n].to_f64();
                let y = targets[n * tasks + t].to_f64();
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
}
