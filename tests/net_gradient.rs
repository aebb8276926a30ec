//! The whole network's gradient against central finite differences, in f64.
//!
//! Every device runs the same wiring of the net (src/model/net.rs: which buffer
//! feeds which op in forward and backward, the task→branch map of the heads, the
//! sum over branches into the trunk), so a wiring error would agree with itself on
//! cpu, sim and cuda, and the per-op checks (src/backend/cpu/*, f64 finite
//! differences) cannot see it. Here the real `Net<B>` runs on `Cpu64`, the CPU
//! backend's own generic ops instantiated in f64 (buffers `Vec<f64>`), and the
//! gradient `Net::backward` writes is compared, for a sample of the elements of every parameter tensor, with
//! (L(p + h) − L(p − h)) / 2h of the full training loss: the sum over tasks of the
//! per-task BCE (MTL, also after a merge that makes heads share branches) and the
//! softmax cross-entropy (STL), in training mode (batch statistics).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu64;
use sskernel::backend::ops::*;
use sskernel::model::{Activations, Mode, Net, NetSpec};

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
    net.branches.task_branch = vec![3, 1, 2, 3, 4, 2, 6, 3, 8, 9];
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
