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
    use super::testutil::*;
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

    /// One forward + backward of the MNIST MTL net's ops at batch 64, timed per op
    /// (buffers allocated once, as the trainer does; minimum of 20 runs per op).
    /// Not a benchmark of record:
    /// `CARGO_TARGET_DIR=/work/target-cpu cargo test --lib mnist_mtl_step_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn mnist_mtl_step_timing() {
        let cpu = Cpu;
        let n = 64;
        let mut g = rng(0);
        let mut rnd = |len: usize| to_f32(&rand_vec(&mut g, len));
        let conv = |c, k, hw| Conv2dShape {
            batch: n,
            in_channels: c,
            out_channels: k,
            height: hw,
            width: hw,
            kernel: 5,
        };
        let nchw = |c, hw| Nchw {
            batch: n,
            channels: c,
            height: hw,
            width: hw,
        };
        let branch = |xb: usize, fin, fout| LinearShape {
            branches: 10,
            x_branches: xb,
            batch: n,
            in_features: fin,
            out_features: fout,
            x_of: if xb == 1 {
                vec![0; 10]
            } else {
                (0..10).collect()
            },
        };
        let (c1, c2) = (conv(1, 20, 28), conv(20, 40, 12));
        let (b1, p1, b2, p2) = (nchw(20, 24), nchw(20, 12), nchw(40, 8), nchw(40, 4));
        let fc = LinearShape::single(n, 640, 640);
        let (h1, h2, h3) = (branch(1, 640, 100), branch(10, 100, 50), branch(10, 50, 1));
        // Parameters.
        let x0 = rnd(c1.x_len());
        let (w1, bb1, w2, bb2) = (rnd(c1.w_len()), rnd(20), rnd(c2.w_len()), rnd(40));
        let (wf, bf) = (rnd(fc.w_len()), rnd(fc.b_len()));
        let (wh1, bh1) = (rnd(h1.w_len()), rnd(h1.b_len()));
        let (wh2, bh2) = (rnd(h2.w_len()), rnd(h2.b_len()));
        let (wh3, bh3) = (rnd(h3.w_len()), rnd(h3.b_len()));
        let (g1, be1, g2, be2) = (vec![1.0; 20], vec![0.0; 20], vec![1.0; 40], vec![0.0; 40]);
        let targets = vec![0.0f32; n * 10];
        // Activations and gradients, allocated once.
        let z = |l: usize| vec![0.0f32; l];
        let (mut a1, mut n1, mut r1, mut q1) =
            (z(c1.y_len()), z(b1.len()), z(b1.len()), z(p1.len()));
        let (mut a2, mut n2, mut r2, mut q2) =
            (z(c2.y_len()), z(b2.len()), z(b2.len()), z(p2.len()));
        let (mut m1, mut s1, mut rm1, mut rv1) = (z(20), z(20), z(20), z(20));
        let (mut m2, mut s2, mut rm2, mut rv2) = (z(40), z(40), z(40), z(40));
        let (mut f, mut fr) = (z(fc.y_len()), z(fc.y_len()));
        let (mut y1, mut y1r, mut y2, mut y3) =
            (z(h1.y_len()), z(h1.y_len()), z(h2.y_len()), z(h3.y_len()));
        let (mut loss, mut dy3, mut dy2) = (z(10), z(h3.y_len()), z(h2.y_len()));
        let (mut dy1, mut dy1r, mut dfr, mut df) =
            (z(h1.y_len()), z(h1.y_len()), z(fc.y_len()), z(fc.y_len()));
        let (mut dq2, mut dr2, mut dn2, mut da2) =
            (z(p2.len()), z(b2.len()), z(b2.len()), z(c2.y_len()));
        let (mut dq1, mut dr1, mut dn1, mut da1) =
            (z(p1.len()), z(b1.len()), z(b1.len()), z(c1.y_len()));
        let (mut dwh3, mut dbh3, mut dwh2, mut dbh2) =
            (z(h3.w_len()), z(10), z(h2.w_len()), z(h2.b_len()));
        let (mut dwh1, mut dbh1, mut dwf, mut dbf) =
            (z(h1.w_len()), z(h1.b_len()), z(fc.w_len()), z(640));
        let (mut dg2, mut dbe2, mut dw2, mut db2) = (z(40), z(40), z(c2.w_len()), z(40));
        let (mut dg1, mut dbe1, mut dw1, mut db1) = (z(20), z(20), z(c1.w_len()), z(20));

        let mut times: Vec<(&str, f64)> = Vec::new();
        let reps = 20;
        for rep in 0..=reps {
            let mut i = 0;
            let mut tick = |name: &'static str, t: std::time::Instant| {
                // Minimum over the repetitions: robust to other load on the machine.
                if rep == 0 {
                    times.push((name, f64::MAX));
                } else {
                    times[i].1 = times[i].1.min(t.elapsed().as_secs_f64());
                }
                i += 1;
            };
            macro_rules! timed {
                ($name:literal, $e:expr) => {{
                    let t = std::time::Instant::now();
                    $e;
                    tick($name, t);
                }};
            }
            timed!(
                "conv1 fwd",
                cpu.conv2d_forward(&c1, &x0, &w1, &bb1, &mut a1)
            );
            timed!(
                "bn1 fwd",
                cpu.batchnorm2d_forward_train(
                    &b1, &a1, &g1, &be1, &mut n1, &mut m1, &mut s1, &mut rm1, &mut rv1, 0.1, 1e-5
                )
            );
            timed!("relu1 fwd", cpu.relu_forward(b1.len(), &n1, &mut r1));
            timed!("pool1 fwd", cpu.maxpool2x2_forward(&b1, &r1, &mut q1));
            timed!(
                "conv2 fwd",
                cpu.conv2d_forward(&c2, &q1, &w2, &bb2, &mut a2)
            );
            timed!(
                "bn2 fwd",
                cpu.batchnorm2d_forward_train(
                    &b2, &a2, &g2, &be2, &mut n2, &mut m2, &mut s2, &mut rm2, &mut rv2, 0.1, 1e-5
                )
            );
            timed!("relu2 fwd", cpu.relu_forward(b2.len(), &n2, &mut r2));
            timed!("pool2 fwd", cpu.maxpool2x2_forward(&b2, &r2, &mut q2));
            timed!(
                "fc 640x640 fwd",
                cpu.linear_forward(&fc, &q2, &wf, &bf, &mut f)
            );
            timed!("relu fc fwd", cpu.relu_forward(fc.y_len(), &f, &mut fr));
            timed!(
                "heads 640x100 fwd",
                cpu.linear_forward(&h1, &fr, &wh1, &bh1, &mut y1)
            );
            timed!(
                "relu heads fwd",
                cpu.relu_forward(h1.y_len(), &y1, &mut y1r)
            );
            timed!(
                "heads 100x50 fwd",
                cpu.linear_forward(&h2, &y1r, &wh2, &bh2, &mut y2)
            );
            timed!(
                "heads 50x1 fwd",
                cpu.linear_forward(&h3, &y2, &wh3, &bh3, &mut y3)
            );
            timed!(
                "sigmoid bce",
                cpu.sigmoid_bce(10, n, &y3, &targets, &mut loss, &mut dy3)
            );
            timed!(
                "heads 50x1 bwd",
                cpu.linear_backward(&h3, &y2, &wh3, &dy3, Some(&mut dy2), &mut dwh3, &mut dbh3)
            );
            timed!(
                "heads 100x50 bwd",
                cpu.linear_backward(&h2, &y1r, &wh2, &dy2, Some(&mut dy1r), &mut dwh2, &mut dbh2)
            );
            timed!(
                "relu heads bwd",
                cpu.relu_backward(h1.y_len(), &y1r, &dy1r, &mut dy1)
            );
            timed!(
                "heads 640x100 bwd",
                cpu.linear_backward(&h1, &fr, &wh1, &dy1, Some(&mut dfr), &mut dwh1, &mut dbh1)
            );
            timed!(
                "relu fc bwd",
                cpu.relu_backward(fc.y_len(), &fr, &dfr, &mut df)
            );
            timed!(
                "fc 640x640 bwd",
                cpu.linear_backward(&fc, &q2, &wf, &df, Some(&mut dq2), &mut dwf, &mut dbf)
            );
            timed!(
                "pool2 bwd",
                cpu.maxpool2x2_backward(&b2, &r2, &q2, &dq2, &mut dr2)
            );
            timed!(
                "relu2 bwd",
                cpu.relu_backward(b2.len(), &r2, &dr2, &mut dn2)
            );
            timed!(
                "bn2 bwd",
                cpu.batchnorm2d_backward(
                    &b2, &a2, &g2, &m2, &s2, &dn2, &mut da2, &mut dg2, &mut dbe2
                )
            );
            timed!(
                "conv2 bwd (dx, dw)",
                cpu.conv2d_backward(&c2, &q1, &w2, &da2, Some(&mut dq1), &mut dw2, &mut db2)
            );
            timed!(
                "pool1 bwd",
                cpu.maxpool2x2_backward(&b1, &r1, &q1, &dq1, &mut dr1)
            );
            timed!(
                "relu1 bwd",
                cpu.relu_backward(b1.len(), &r1, &dr1, &mut dn1)
            );
            timed!(
                "bn1 bwd",
                cpu.batchnorm2d_backward(
                    &b1, &a1, &g1, &m1, &s1, &dn1, &mut da1, &mut dg1, &mut dbe1
                )
            );
            timed!(
                "conv1 bwd (dw)",
                cpu.conv2d_backward(&c1, &x0, &w1, &da1, None, &mut dw1, &mut db1)
            );
        }
        let total: f64 = times.iter().map(|t| t.1).sum::<f64>();
        for (name, t) in &times {
            println!("  {name:20} {:7.3} ms", t * 1e3);
        }
        println!(
            "MNIST MTL fwd+bwd, batch 64, {} threads: {:.2} ms/step (sum of per-op minima)",
            rayon::current_num_threads(),
            total * 1e3
        );
    }
}
