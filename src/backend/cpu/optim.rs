//! Optimiser steps, torch.optim semantics (no weight decay). Elementwise, in fixed
//! chunks; scalars (bias corrections) in f64 as PyTorch computes them in Python floats.

use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{Hyper, OptimOps, OptimStep, ParamBufs};
use rayon::prelude::*;

const ELEM_CHUNK: usize = 1 << 14;

/// SGD with momentum (dampening 0, no Nesterov): `v = μ·v + g; p −= lr·v`.
/// PyTorch sets v = g on the first step, which is μ·0 + g: zero-initialised v matches.
/// param, grad, velocity: `[len]`.
fn sgd_step<T: Real>(
    len: usize,
    lr: T,
    momentum: T,
    param: &mut [T],
    grad: &[T],
    velocity: &mut [T],
) {
    debug_assert!(param.len() >= len && grad.len() >= len && velocity.len() >= len);
    param[..len]
        .par_chunks_mut(ELEM_CHUNK)
        .zip(velocity[..len].par_chunks_mut(ELEM_CHUNK))
        .zip(grad[..len].par_chunks(ELEM_CHUNK))
        .for_each(|((p, v), g)| {
            for ((p, v), &g) in p.iter_mut().zip(v).zip(g) {
                *v = momentum * *v + g;
                *p -= lr * *v;
            }
        });
}

/// Adam's step size `lr/(1−β1^t)` and `sqrt(1−β2^t)` at step `t` (from 1), in f64
/// as PyTorch computes them in Python floats (optim.cu: optim_prepare, same bits).
fn adam_scalars<T: Real>(lr: T, beta1: T, beta2: T, t: u32) -> (T, T) {
    debug_assert!(t >= 1, "Adam steps count from 1");
    let t = t.max(1) as i32;
    let bc1 = 1.0 - beta1.to_f64().powi(t);
    let bc2 = 1.0 - beta2.to_f64().powi(t);
    (T::from_f64(lr.to_f64() / bc1), T::from_f64(bc2.sqrt()))
}

/// Adam as torch.optim.Adam (single-tensor path), `step` counting from 1:
/// `m = lerp(m, g, 1−β1)` (= β1·m + (1−β1)·g), `v = β2·v + (1−β2)·g²`,
/// `p −= (lr/(1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + eps)`, the two scalars from
/// [`adam_scalars`]. param, grad, m, v: `[len]`.
fn adam_step<T: Real>(
    len: usize,
    h: &AdamScalars<T>,
    (step_size, bc2_sqrt): (T, T),
    param: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
) {
    let AdamScalars {
        beta1, beta2, eps, ..
    } = *h;
    debug_assert!(param.len() >= len && grad.len() >= len && m.len() >= len && v.len() >= len);
    let w1 = T::ONE - beta1;
    let w2 = T::ONE - beta2;
    param[..len]
        .par_chunks_mut(ELEM_CHUNK)
        .zip(m[..len].par_chunks_mut(ELEM_CHUNK))
        .zip(v[..len].par_chunks_mut(ELEM_CHUNK))
        .zip(grad[..len].par_chunks(ELEM_CHUNK))
        .for_each(|(((p, m), v), g)| {
            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                *m += w1 * (g - *m);
                *v = *v * beta2 + g * g * w2;
                *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
        });
}

/// Adam's hyper-parameters in the op's float type.
#[derive(Clone, Copy)]
struct AdamScalars<T> {
    beta1: T,
    beta2: T,
    eps: T,
}

impl<T: Real> OptimOps for CpuOf<T> {
    /// The twin of optim.cu's optim_prepare.
    fn optim_prepare(&self, step: &OptimStep, hyper: &mut Vec<T>) {
        let real = |v: f32| T::from_f64(v as f64);
        let t = hyper[Hyper::STEP].to_f64() as u32 + 1;
        hyper[Hyper::STEP] = T::from_f64(t as f64);
        let lr = hyper[Hyper::LR];
        let (step_size, bc2_sqrt) = match *step {
            OptimStep::Sgd { .. } => (lr, T::ONE),
            OptimStep::Adam { beta1, beta2, .. } => adam_scalars(lr, real(beta1), real(beta2), t),
        };
        hyper[Hyper::STEP_SIZE] = step_size;
        hyper[Hyper::BC2_SQRT] = bc2_sqrt;
    }

    /// Tensor after tensor, each as the kernels' blocks update it (elementwise: the
    /// order of the tensors changes no bits).
    fn optim_step(&self, step: &OptimStep, hyper: &Vec<T>, params: &mut [ParamBufs<Vec<T>>]) {
        let total: usize = params.iter().map(|p| p.len).sum();
        let _span = profile::span("optim_step", || {
            format!("{} tensors, {total}", params.len())
        });
        let real = |v: f32| T::from_f64(v as f64);
        let step_size = hyper[Hyper::STEP_SIZE];
        for p in params {
            step.check_state(p.state);
            let (len, param, grad, state) = (p.len, &mut *p.value, p.grad, &mut *p.state);
            match *step {
                OptimStep::Sgd { momentum, .. } => {
                    sgd_step(len, step_size, real(momentum), param, grad, &mut state[0]);
                }
                OptimStep::Adam {
                    beta1, beta2, eps, ..
                } => {
                    let (m, v) = state.split_at_mut(1);
                    let h = AdamScalars {
                        beta1: real(beta1),
                        beta2: real(beta2),
                        eps: real(eps),
                    };
                    let scalars = (step_size, hyper[Hyper::BC2_SQRT]);
                    adam_step(len, &h, scalars, param, grad, &mut m[0], &mut v[0]);
                }
            }
        }
    }

    fn axpy(&self, alpha: f32, x: &Vec<T>, y: &mut Vec<T>, len: usize) {
        let _span = profile::span("axpy", || len.to_string());
        let alpha = T::from_f64(alpha as f64);
        for (y, &x) in y[..len].iter_mut().zip(&x[..len]) {
            *y += alpha * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn sgd_three_steps_by_hand() {
        // p = 1, g = 0.5 every step, lr 0.1, μ 0.9:
        // v: 0.5, 0.95, 1.355; p: 0.95, 0.855, 0.7195.
        let (mut p, mut v) = (vec![1.0f64, -2.0], vec![0.0; 2]);
        let g = [0.5, -1.0];
        let want = [[0.95, -1.9], [0.855, -1.71], [0.7195, -1.439]];
        for w in want {
            sgd_step(2, 0.1, 0.9, &mut p, &g, &mut v);
            assert!(rel_err(&p, &w) < 1e-14, "{p:?} {w:?}");
        }
        // f32 path, one element longer buffers (prefix only).
        let (mut p32, mut v32) = (vec![1.0f32, -2.0, 7.0], vec![0.0f32; 3]);
        for _ in 0..3 {
            sgd_step(2, 0.1, 0.9, &mut p32, &[0.5, -1.0, 9.0], &mut v32);
        }
        assert!(rel_err(&p32[..2], &want[2]) < 1e-6 && p32[2] == 7.0 && v32[2] == 0.0);
    }

    #[test]
    fn adam_steps_by_hand() {
        let (lr, eps) = (0.1, 1e-8);
        let h = AdamScalars {
            beta1: 0.9,
            beta2: 0.999,
            eps,
        };
        let h32 = AdamScalars {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        // Constant g: m̂ = g and v̂ = g² exactly, so each step moves p by
        // lr·g/(|g| + eps) = 0.1·0.5/(0.5 + 1e-8).
        let (mut p, mut m, mut v) = (vec![1.0f64], vec![0.0], vec![0.0]);
        for t in 1..=3u32 {
            adam_step(
                1,
                &h,
                adam_scalars(lr, 0.9, 0.999, t),
                &mut p,
                &[0.5],
                &mut m,
                &mut v,
            );
            let want = 1.0 - t as f64 * 0.1 * 0.5 / (0.5 + 1e-8);
            assert!((p[0] - want).abs() < 1e-14, "step {t}: {} vs {want}", p[0]);
        }
        // Varying g = 0.5, −1, 2 by hand:
        // t=1: m=0.05, v=0.00025; m̂=0.5, v̂=0.25 → Δ = 0.1·0.5/(0.5+eps)
        // t=2: m=0.045−0.1=−0.055, v=0.00024975+0.001=0.00124975;
        //      m̂=−0.055/0.19, v̂=0.00124975/0.001999
        // t=3: m=−0.0495+0.2=0.1505, v=0.00124850025+0.004=0.00524850025;
        //      m̂=0.1505/0.271, v̂=0.00524850025/0.002997001
        let steps = [
            (0.5, 0.5, 0.25),
            (-1.0, -0.055 / 0.19, 0.00124975 / 0.001999),
            (2.0, 0.1505 / 0.271, 0.00524850025 / 0.002997001),
        ];
        let (mut p, mut m, mut v) = (vec![1.0f64], vec![0.0], vec![0.0]);
        let (mut p32, mut m32, mut v32) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
        let mut want = 1.0;
        for (t, (g, mh, vh)) in steps.into_iter().enumerate() {
            let t = t as u32 + 1;
            let s32 = adam_scalars(0.1f32, 0.9, 0.999, t);
            adam_step(
                1,
                &h,
                adam_scalars(lr, 0.9, 0.999, t),
                &mut p,
                &[g],
                &mut m,
                &mut v,
            );
            adam_step(1, &h32, s32, &mut p32, &[g as f32], &mut m32, &mut v32);
            want -= lr * mh / (f64::sqrt(vh) + eps);
            assert!((p[0] - want).abs() < 1e-12, "step {t}: {} vs {want}", p[0]);
            assert!((p32[0] as f64 - want).abs() < 1e-6);
        }
    }
}
