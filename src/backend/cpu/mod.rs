//! The CPU backend: Rust + rayon, f32. The parity reference for every other device.
//!
//! Every op is written once, generic over [`Real`], in the file of its family:
//! `gemm` (matrixmultiply + rayon), `conv` (im2col + GEMM), `batchnorm`, `pool`
//! (ReLU, 2×2 max-pool), `linear` (branch-batched), `loss`, `optim`.
//! `impl Backend for Cpu` calls the f32 instantiation; the tests call the f64 one
//! for finite-difference gradient checks, so the code that is checked is the code
//! that runs.
//!
//! Determinism: every reduction has a fixed order and fixed chunking that does not
//! depend on the number of rayon threads; results are bitwise reproducible.

pub mod batchnorm;
pub mod conv;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod real;

#[cfg(test)]
mod testutil;

pub use real::Real;

use super::{Backend, Conv2dShape, LinearShape, Nchw, OptimStep};

/// The CPU device. Buffers are `Vec<f32>`.
#[derive(Clone, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn write(&self, buf: &mut Vec<f32>, host: &[f32]) {
        buf[..host.len()].copy_from_slice(host);
    }
    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn compact_rows(&self, buf: &mut Vec<f32>, row_len: usize, keep: &[usize]) {
        debug_assert!(keep.windows(2).all(|w| w[0] < w[1]));
        // keep[i] >= i, so moving rows front to back never overwrites a row still to move.
        for (i, &k) in keep.iter().enumerate() {
            buf.copy_within(k * row_len..(k + 1) * row_len, i * row_len);
        }
        buf.truncate(keep.len() * row_len);
        buf.shrink_to_fit();
    }
    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>, len: usize) {
        for (y, &x) in y[..len].iter_mut().zip(&x[..len]) {
            *y += alpha * x;
        }
    }

    fn conv2d_forward(
        &self,
        s: &Conv2dShape,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        conv::conv2d_forward(s, x, w, b, y);
    }
    fn conv2d_backward(
        &self,
        s: &Conv2dShape,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
    ) {
        conv::conv2d_backward(s, x, w, dy, dx.map(|d| d.as_mut_slice()), dw, db);
    }

    fn batchnorm2d_forward_train(
        &self,
        s: &Nchw,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        inv_std: &mut Vec<f32>,
        running_mean: &mut Vec<f32>,
        running_var: &mut Vec<f32>,
        momentum: f32,
        eps: f32,
    ) {
        batchnorm::batchnorm2d_forward_train(
            s,
            x,
            gamma,
            beta,
            y,
            mean,
            inv_std,
            running_mean,
            running_var,
            momentum,
            eps,
        );
    }
    fn batchnorm2d_forward_eval(
        &self,
        s: &Nchw,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        running_mean: &Vec<f32>,
        running_var: &Vec<f32>,
        eps: f32,
        y: &mut Vec<f32>,
    ) {
        batchnorm::batchnorm2d_forward_eval(s, x, gamma, beta, running_mean, running_var, eps, y);
    }
    fn batchnorm2d_backward(
        &self,
        s: &Nchw,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        mean: &Vec<f32>,
        inv_std: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
    ) {
        batchnorm::batchnorm2d_backward(s, x, gamma, mean, inv_std, dy, dx, dgamma, dbeta);
    }

    fn relu_forward(&self, len: usize, x: &Vec<f32>, y: &mut Vec<f32>) {
        pool::relu_forward(len, x, y);
    }
    fn relu_backward(&self, len: usize, y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        pool::relu_backward(len, y, dy, dx);
    }
    fn maxpool2x2_forward(&self, s: &Nchw, x: &Vec<f32>, y: &mut Vec<f32>) {
        pool::maxpool2x2_forward(s, x, y);
    }
    fn maxpool2x2_backward(
        &self,
        s: &Nchw,
        x: &Vec<f32>,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) {
        pool::maxpool2x2_backward(s, x, y, dy, dx);
    }

    fn linear_forward(
        &self,
        s: &LinearShape,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        linear::linear_forward(s, x, w, b, y);
    }
    fn linear_backward(
        &self,
        s: &LinearShape,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
    ) {
        linear::linear_backward(s, x, w, dy, dx.map(|d| d.as_mut_slice()), dw, db);
    }

    fn softmax_cross_entropy(
        &self,
        batch: usize,
        classes: usize,
        logits: &Vec<f32>,
        targets: &Vec<f32>,
        loss: &mut Vec<f32>,
        dlogits: &mut Vec<f32>,
    ) {
        loss::softmax_cross_entropy(batch, classes, logits, targets, loss, dlogits);
    }
    fn sigmoid_bce(
        &self,
        tasks: usize,
        batch: usize,
        logits: &Vec<f32>,
        targets: &Vec<f32>,
        loss: &mut Vec<f32>,
        dlogits: &mut Vec<f32>,
    ) {
        loss::sigmoid_bce(tasks, batch, logits, targets, loss, dlogits);
    }

    fn optim_step(
        &self,
        step: &OptimStep,
        len: usize,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        state: &mut [Vec<f32>],
    ) {
        match *step {
            OptimStep::Sgd { lr, momentum } => {
                assert!(!state.is_empty(), "SGD needs state [velocity]");
                optim::sgd_step(len, lr, momentum, param, grad, &mut state[0]);
            }
            OptimStep::Adam {
                lr,
                beta1,
                beta2,
                eps,
                step,
            } => {
                let [m, v, ..] = state else {
                    panic!("Adam needs state [m, v], got {} buffers", state.len());
                };
                optim::adam_step(len, lr, beta1, beta2, eps, step, param, grad, m, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trait surface: memory ops and that each op reaches its f32 kernel.
    #[test]
    fn backend_memory_ops() {
        let cpu = Cpu;
        let mut b = cpu.zeros(5);
        cpu.write(&mut b, &[1.0, 2.0]);
        assert_eq!(cpu.download(&b), [1.0, 2.0, 0.0, 0.0, 0.0]);
        let x = cpu.upload(&[1.0, 1.0, 1.0, 1.0, 1.0]);
        cpu.axpy(2.0, &x, &mut b, 4);
        assert_eq!(cpu.download(&b), [3.0, 4.0, 2.0, 2.0, 0.0]);
        assert_eq!(cpu.buf_len(&b), 5);
        let mut st = [cpu.zeros(5), cpu.zeros(5)];
        let g = cpu.upload(&[1.0; 5]);
        cpu.optim_step(
            &OptimStep::Sgd {
                lr: 0.5,
                momentum: 0.9,
            },
            5,
            &mut b,
            &g,
            &mut st[..1],
        );
        assert_eq!(cpu.download(&b), [2.5, 3.5, 1.5, 1.5, -0.5]);
        let adam = OptimStep::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 1,
        };
        let mut st = [cpu.zeros(5), cpu.zeros(5)];
        cpu.optim_step(&adam, 5, &mut b, &g, &mut st);
        assert!((b[0] - 2.4).abs() < 1e-6);
    }
}
