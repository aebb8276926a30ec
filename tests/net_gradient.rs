//! The whole network's gradient against central finite differences, in f64.
//!
//! Every device runs the same wiring of the net (src/model/net.rs: which buffer
//! feeds which op in forward and backward, the task→branch map of the heads, the
//! sum over branches into the trunk), so a wiring error would agree with itself on
//! cpu, sim and cuda, and the per-op checks (src/backend/cpu/*, f64 finite
//! differences) cannot see it. Here the real `Net<B>` runs on `Cpu64`, a test-only
//! backend whose buffers are `Vec<f64>` and whose ops are the CPU backend's own
//! generic ops instantiated in f64, and the gradient `Net::backward` writes is
//! compared, for a sample of the elements of every parameter tensor, with
//! (L(p + h) − L(p − h)) / 2h of the full training loss: the sum over tasks of the
//! per-task BCE (MTL, also after a merge that makes heads share branches) and the
//! softmax cross-entropy (STL), in training mode (batch statistics).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::{batchnorm, conv, linear, loss, optim, pool};
use sskernel::backend::{Backend, Conv2dShape, LinearShape, Nchw, OptimStep};
use sskernel::model::{Activations, Mode, Net, NetSpec};

/// The CPU backend in f64 (the same generic op bodies as `Cpu`, other instantiation).
struct Cpu64;

impl Backend for Cpu64 {
    type Buf = Vec<f64>;

    fn name(&self) -> String {
        "cpu64".into()
    }
    fn zeros(&self, len: usize) -> Vec<f64> {
        vec![0.0; len]
    }
    fn upload(&self, host: &[f32]) -> Vec<f64> {
        host.iter().map(|&v| v as f64).collect()
    }
    fn download(&self, buf: &Vec<f64>) -> Vec<f32> {
        buf.iter().map(|&v| v as f32).collect()
    }
    fn write(&self, buf: &mut Vec<f64>, host: &[f32]) {
        for (b, &h) in buf.iter_mut().zip(host) {
            *b = h as f64;
        }
    }
    fn buf_len(&self, buf: &Vec<f64>) -> usize {
        buf.len()
    }
    fn axpy(&self, alpha: f32, x: &Vec<f64>, y: &mut Vec<f64>, len: usize) {
        for (y, &x) in y[..len].iter_mut().zip(&x[..len]) {
            *y += alpha as f64 * x;
        }
    }
    fn compact_rows(&self, buf: &mut Vec<f64>, row_len: usize, keep: &[usize]) {
        let kept: Vec<f64> = keep
            .iter()
            .flat_map(|&k| buf[k * row_len..(k + 1) * row_len].iter().copied())
            .collect();
        *buf = kept;
    }
    fn conv2d_forward(
        &self,
        s: &Conv2dShape,
        x: &Vec<f64>,
        w: &Vec<f64>,
        b: &Vec<f64>,
        y: &mut Vec<f64>,
    ) {
        conv::conv2d_forward(s, x, w, b, y);
    }
    fn conv2d_backward(
        &self,
        s: &Conv2dShape,
        x: &Vec<f64>,
        w: &Vec<f64>,
        dy: &Vec<f64>,
        dx: Option<&mut Vec<f64>>,
        dw: &mut Vec<f64>,
        db: &mut Vec<f64>,
    ) {
        conv::conv2d_backward(s, x, w, dy, dx.map(|d| d.as_mut_slice()), dw, db);
    }
    fn batchnorm2d_forward_train(
        &self,
        s: &Nchw,
        x: &Vec<f64>,
        gamma: &Vec<f64>,
        beta: &Vec<f64>,
        y: &mut Vec<f64>,
        mean: &mut Vec<f64>,
        inv_std: &mut Vec<f64>,
        running_mean: &mut Vec<f64>,
        running_var: &mut Vec<f64>,
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
            momentum as f64,
            eps as f64,
        );
    }
    fn batchnorm2d_forward_eval(
        &self,
        s: &Nchw,
        x: &Vec<f64>,
        gamma: &Vec<f64>,
        beta: &Vec<f64>,
        running_mean: &Vec<f64>,
        running_var: &Vec<f64>,
        eps: f32,
        y: &mut Vec<f64>,
    ) {
        batchnorm::batchnorm2d_forward_eval(
            s,
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            eps as f64,
            y,
        );
    }
    fn batchnorm2d_backward(
        &self,
        s: &Nchw,
        x: &Vec<f64>,
        gamma: &Vec<f64>,
        mean: &Vec<f64>,
        inv_std: &Vec<f64>,
        dy: &Vec<f64>,
        dx: &mut Vec<f64>,
        dgamma: &mut Vec<f64>,
        dbeta: &mut Vec<f64>,
    ) {
        batchnorm::batchnorm2d_backward(s, x, gamma, mean, inv_std, dy, dx, dgamma, dbeta);
    }
    fn relu_forward(&self, len: usize, x: &Vec<f64>, y: &mut Vec<f64>) {
        pool::relu_forward(len, x, y);
    }
    fn relu_backward(&self, len: usize, y: &Vec<f64>, dy: &Vec<f64>, dx: &mut Vec<f64>) {
        pool::relu_backward(len, y, dy, dx);
    }
    fn maxpool2x2_forward(&self, s: &Nchw, x: &Vec<f64>, y: &mut Vec<f64>) {
        pool::maxpool2x2_forward(s, x, y);
    }
    fn maxpool2x2_backward(
        &self,
        s: &Nchw,
        x: &Vec<f64>,
        y: &Vec<f64>,
        dy: &Vec<f64>,
        dx: &mut Vec<f64>,
    ) {
        pool::maxpool2x2_backward(s, x, y, dy, dx);
    }
    fn linear_forward(
        &self,
        s: &LinearShape,
        x: &Vec<f64>,
        w: &Vec<f64>,
        b: &Vec<f64>,
        y: &mut Vec<f64>,
    ) {
        linear::linear_forward(s, x, w, b, y);
    }
    fn linear_backward(
        &self,
        s: &LinearShape,
        x: &Vec<f64>,
        w: &Vec<f64>,
        dy: &Vec<f64>,
        dx: Option<&mut Vec<f64>>,
        dw: &mut Vec<f64>,
        db: &mut Vec<f64>,
    ) {
        linear::linear_backward(s, x, w, dy, dx.map(|d| d.as_mut_slice()), dw, db);
    }
    fn softmax_cross_entropy(
        &self,
        batch: usize,
        classes: usize,
        logits: &Vec<f64>,
        targets: &Vec<f64>,
        loss: &mut Vec<f64>,
        dlogits: &mut Vec<f64>,
    ) {
        loss::softmax_cross_entropy(batch, classes, logits, targets, loss, dlogits);
    }
    fn sigmoid_bce(
        &self,
        tasks: usize,
        batch: usize,
        logits: &Vec<f64>,
        targets: &Vec<f64>,
        loss: &mut Vec<f64>,
        dlogits: &mut Vec<f64>,
    ) {
        loss::sigmoid_bce(tasks, batch, logits, targets, loss, dlogits);
    }
    fn optim_step(
        &self,
        step: &OptimStep,
        len: usize,
        param: &mut Vec<f64>,
        grad: &Vec<f64>,
        state: &mut [Vec<f64>],
    ) {
        match *step {
            OptimStep::Sgd { lr, momentum } => {
                optim::sgd_step(len, lr as f64, momentum as f64, param, grad, &mut state[0])
            }
            OptimStep::Adam { .. } => unimplemented!("not needed by these tests"),
        }
    }
}

/// Batch size: small, the check is about wiring, not statistics (BN still sees
/// N·H·W ≥ 128 values per channel).
const N: usize = 2;
/// Central-difference step. f64 rounding gives ≈ 1e-16·L/h ≈ 1e-9 absolute error in
/// a derivative; a smaller h makes crossing a ReLU or max-pool kink less likely.
const H: f64 = 1e-6;
/// ‖analytic − fd‖ / ‖fd‖ over a tensor's sampled elements. A wiring error (a
/// wrong buffer, a missing sum, a head reading the wrong branch) is O(1).
const TOL: f64 = 1e-5;
/// Elements sampled per tensor: this many at random, and as many of the largest
/// analytic |∂L/∂p| (so that the sample is not all dead ReLUs).
const RANDOM: usize = 3;
const LARGEST: usize = 3;

/// A net of `mode` on a random batch (pixels in [0, 1), one label per sample).
fn setup(mode: Mode, seed: u64) -> (Net<Cpu64>, Activations<Cpu64>) {
    let spec = NetSpec::mnist(mode, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let net = Net::new(&Cpu64, spec.clone(), &mut rng);
    let mut act = Activations::new(&Cpu64, &spec, N);
    let x: Vec<f32> = (0..N * 28 * 28)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let mut t = vec![0.0f32; N * 10];
    for i in 0..N {
        t[i * 10 + rng.random_range(0..10)] = 1.0;
    }
    Cpu64.write(&mut act.x, &x);
    Cpu64.write(&mut act.targets, &t);
    (net, act)
}

/// The training loss of the batch at the current parameters (training-mode
/// forward, as `train_step` runs it): the sum of `act.loss`.
fn total_loss(net: &mut Net<Cpu64>, act: &mut Activations<Cpu64>) -> f64 {
    net.forward(&Cpu64, act, N, true);
    net.loss(&Cpu64, act, N);
    act.loss.iter().sum()
}

/// Checks ∂L/∂p of every parameter tensor against central differences; returns
/// the worst relative error (for the log).
fn check_gradient(net: &mut Net<Cpu64>, act: &mut Activations<Cpu64>, seed: u64) -> f64 {
    net.forward(&Cpu64, act, N, true);
    net.loss(&Cpu64, act, N);
    net.backward(&Cpu64, act, N);
    let grads: Vec<(String, Vec<f64>)> = net
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.grad[..p.len()].to_vec()))
        .collect();
    assert_eq!(grads.len(), 16);
    let scale = grads
        .iter()
        .flat_map(|(_, g)| g.iter())
        .fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale.is_finite() && scale > 0.0, "gradient scale {scale}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut worst = 0.0f64;
    for (i, (name, grad)) in grads.iter().enumerate() {
        let mut picks: Vec<usize> = (0..RANDOM)
            .map(|_| rng.random_range(0..grad.len()))
            .collect();
        let mut by_size: Vec<usize> = (0..grad.len()).collect();
        by_size.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
        picks.extend(by_size.iter().take(LARGEST));
        picks.sort_unstable();
        picks.dedup();
        let mut fd = Vec::with_capacity(picks.len());
        for &j in &picks {
            let at = |net: &mut Net<Cpu64>, v: f64| net.params_mut()[i].value[j] = v;
            let p0 = net.params()[i].value[j];
            at(net, p0 + H);
            let plus = total_loss(net, act);
            at(net, p0 - H);
            let minus = total_loss(net, act);
            at(net, p0);
            fd.push((plus - minus) / (2.0 * H));
        }
        let analytic: Vec<f64> = picks.iter().map(|&j| grad[j]).collect();
        let num: f64 = analytic.iter().zip(&fd).map(|(a, f)| (a - f).powi(2)).sum();
        let den: f64 = fd.iter().map(|f| f * f).sum();
        let largest = analytic
            .iter()
            .chain(&fd)
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if name.starts_with("trunk.conv") && name.ends_with(".bias") {
            // A bias followed by batchnorm: the mean subtraction cancels it, so the
            // gradient is zero analytically; both sides are rounding noise.
            assert!(
                largest <= 1e-6 * scale,
                "{name}: |∂L/∂b| up to {largest:e} (scale {scale:e}); analytic {analytic:?}, fd {fd:?}"
            );
            continue;
        }
        let err = (num / den).sqrt();
        println!(
            "{name:24} {} elements: ‖analytic − fd‖/‖fd‖ = {err:.1e}",
            picks.len()
        );
        assert!(
            err <= TOL && largest > 0.0,
            "{name}: ‖analytic − fd‖/‖fd‖ = {err:e} at elements {picks:?}\nanalytic {analytic:?}\nfd       {fd:?}"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn mtl_gradient_of_the_summed_task_losses_matches_finite_differences() {
    let (mut net, mut act) = setup(Mode::Mtl, 1);
    let worst = check_gradient(&mut net, &mut act, 10);
    println!("MTL: worst {worst:.1e}");
}

/// After a merge, several heads read one branch: the branch's gradient is the sum of
/// theirs, and the branches no head reads get none.
#[test]
fn merged_heads_sum_into_their_shared_branch() {
    let (mut net, mut act) = setup(Mode::Mtl, 2);
    // Tasks 0, 3, 7 on branch 3; 2 and 5 on branch 2; branches 0, 5, 7 unread.
    net.task_branch = vec![3, 1, 2, 3, 4, 2, 6, 3, 8, 9];
    let worst = check_gradient(&mut net, &mut act, 20);
    println!("MTL, merged heads: worst {worst:.1e}");
    let fc1 = &net.params()[10];
    assert_eq!(fc1.name, "branches.fc1.weight");
    let row = fc1.len() / fc1.shape[0];
    for b in 0..10 {
        let g = &fc1.grad[b * row..(b + 1) * row];
        let unread = [0, 5, 7].contains(&b);
        assert_eq!(
            g.iter().all(|&v| v == 0.0),
            unread,
            "branch {b}: read by no head: {unread}"
        );
    }
}

#[test]
fn stl_gradient_of_the_cross_entropy_matches_finite_differences() {
    let (mut net, mut act) = setup(Mode::Stl, 3);
    let worst = check_gradient(&mut net, &mut act, 30);
    println!("STL: worst {worst:.1e}");
}
