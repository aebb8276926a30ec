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
use sskernel::data::TaskKind;
use sskernel::model::Branched;
use sskernel::model::{
    Activations, ConvBlock, ConvEnd, ConvStackSpec, HeteroActs, HeteroNet, HeteroSpec, Mode, Net,
    NetSpec, Param,
};

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
/// Biases whose gradient batchnorm cancels.
const CONV_BIASES: [&str; 2] = ["trunk.conv1.bias", "trunk.conv2.bias"];

/// Samples of the heterogeneous check: enough for pairs and missing targets.
const N_HETERO: usize = 8;

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

/// A net with its activations, as the check drives it.
trait Checked {
    /// The training loss of the batch at the current parameters (training-mode
    /// forward, as a training step runs it): the sum of the task losses.
    fn total_loss(&mut self) -> f64;
    /// Forward, loss and backward: every parameter's gradient.
    fn backward(&mut self);
    fn params(&self) -> Vec<&Param<Cpu64>>;
    fn params_mut(&mut self) -> Vec<&mut Param<Cpu64>>;
}

impl Checked for (Net<Cpu64>, Activations<Cpu64>) {
    fn total_loss(&mut self) -> f64 {
        let (net, act) = self;
        net.forward(&Cpu64, act, N, true);
        net.loss(&Cpu64, act, N);
        act.loss.iter().sum()
    }
    fn backward(&mut self) {
        self.total_loss();
        self.0.backward(&Cpu64, &mut self.1, N);
    }
    fn params(&self) -> Vec<&Param<Cpu64>> {
        self.0.params().to_vec()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<Cpu64>> {
        self.0.params_mut().into_iter().collect()
    }
}

impl Checked for (HeteroNet<Cpu64>, HeteroActs<Cpu64>) {
    fn total_loss(&mut self) -> f64 {
        let (net, act) = self;
        net.forward(&Cpu64, act, N_HETERO, true);
        net.loss(&Cpu64, act, N_HETERO);
        act.loss.iter().map(|l| l[0]).sum()
    }
    fn backward(&mut self) {
        self.total_loss();
        self.0.backward(&Cpu64, &mut self.1, N_HETERO);
    }
    fn params(&self) -> Vec<&Param<Cpu64>> {
        self.0.params()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<Cpu64>> {
        self.0.params_mut()
    }
}

/// Checks ∂L/∂p of every parameter tensor against central differences; returns
/// the worst relative error (for the log).
/// `zero`: the tensors whose gradient is zero analytically — a conv bias followed
/// by batchnorm (the mean subtraction cancels it), a ranking head's bias (the loss
/// depends only on differences of scores).
fn check_gradient(net: &mut impl Checked, tensors: usize, zero: &[&str], seed: u64) -> f64 {
    net.backward();
    let grads: Vec<(String, Vec<f64>)> = net
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.grad[..p.len()].to_vec()))
        .collect();
    assert_eq!(grads.len(), tensors);
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
            let p0 = net.params()[i].value[j];
            net.params_mut()[i].value[j] = p0 + H;
            let plus = net.total_loss();
            net.params_mut()[i].value[j] = p0 - H;
            let minus = net.total_loss();
            net.params_mut()[i].value[j] = p0;
            fd.push((plus - minus) / (2.0 * H));
        }
        let analytic: Vec<f64> = picks.iter().map(|&j| grad[j]).collect();
        let num: f64 = analytic.iter().zip(&fd).map(|(a, f)| (a - f).powi(2)).sum();
        let den: f64 = fd.iter().map(|f| f * f).sum();
        let largest = analytic
            .iter()
            .chain(&fd)
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if zero.contains(&name.as_str()) {
            // Zero analytically; both sides are rounding noise.
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
    let mut net = setup(Mode::Mtl, 1);
    let worst = check_gradient(&mut net, 16, &CONV_BIASES, 10);
    println!("MTL: worst {worst:.1e}");
}

/// After a merge, several heads read one branch: the branch's gradient is the sum of
/// theirs, and the branches no head reads get none.
#[test]
fn merged_heads_sum_into_their_shared_branch() {
    let mut net = setup(Mode::Mtl, 2);
    // Tasks 0, 3, 7 on branch 3; 2 and 5 on branch 2; branches 0, 5, 7 unread.
    net.0.branches.task_branch = vec![3, 1, 2, 3, 4, 2, 6, 3, 8, 9];
    let worst = check_gradient(&mut net, 16, &CONV_BIASES, 20);
    println!("MTL, merged heads: worst {worst:.1e}");
    let fc1 = &net.0.params()[10];
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
    let mut net = setup(Mode::Stl, 3);
    let worst = check_gradient(&mut net, 16, &CONV_BIASES, 30);
    println!("STL: worst {worst:.1e}");
}

/// The heterogeneous net with one task of every kind — softmax, binary, regression,
/// ranking — some targets missing, and two heads of different kinds on one branch
/// (a merge): its gradient of the summed task losses against central differences.
/// Dropout is off here (its mask changes every training forward); the dropout op
/// has its own finite-difference check (cpu/dropout.rs).
#[test]
fn heterogeneous_gradient_of_every_task_kind_matches_finite_differences() {
    let kinds = vec![
        TaskKind::Class { classes: 3 },
        TaskKind::Binary,
        TaskKind::Regression,
        TaskKind::Rank,
    ];
    let spec = HeteroSpec {
        input: 7,
        convs: None,
        shared: 9,
        branch_hidden: [6, 5],
        dropout: 0.0,
        branches: kinds.len(),
        tasks: kinds.clone(),
        identical_branches: false,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut net = HeteroNet::new(&Cpu64, spec.clone(), 4, &mut rng);
    // The regression and the ranking head share branch 2; branch 3 is unread.
    net.branches.task_branch = vec![0, 1, 2, 2];
    let mut act = HeteroActs::new(&Cpu64, &spec, N_HETERO);
    let x: Vec<f32> = (0..N_HETERO * 7)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Cpu64.write(&mut act.x, &x);
    let missing = |n: usize, t: usize| (n + t) % 4 == 3;
    for (t, kind) in kinds.iter().enumerate() {
        let host: Vec<f32> = match kind {
            TaskKind::Class { classes } => (0..N_HETERO)
                .flat_map(|n| {
                    let c = rng.random_range(0..*classes);
                    (0..*classes).map(move |k| f32::from(k == c && !missing(n, t)))
                })
                .collect(),
            _ => (0..N_HETERO)
                .map(|n| match (missing(n, t), kind) {
                    (true, _) => f32::NAN,
                    (false, TaskKind::Binary) => f32::from(rng.random_bool(0.5)),
                    _ => rng.random_range(-2.0..2.0),
                })
                .collect(),
        };
        Cpu64.write(&mut act.targets[t], &host);
    }
    let mut both = (net, act);
    let worst = check_gradient(&mut both, 2 + 4 + 2 * 4, &["heads.3.bias"], 40);
    println!("heterogeneous: worst {worst:.1e}");
    let fc1 = &both.0.params()[2];
    assert_eq!(fc1.name, "branches.fc1.weight");
    let row = fc1.len() / 4;
    assert!(
        fc1.grad[3 * row..].iter().all(|&v| v == 0.0),
        "branch 3 is read by no head"
    );
}

/// The image problems' net (CIFAR-10, OmniGlot): a conv stack — padded and valid
/// 3×3 convs, batchnorm, ReLU, a 2×2 max-pool — ending in a global average pool or
/// flattened, under the shared FC and binary heads; its gradient against central
/// differences. The conv biases sit before batchnorm: zero gradient analytically.
#[test]
fn conv_stack_gradient_matches_finite_differences_for_both_ends() {
    for (end, seed) in [(ConvEnd::GlobalAvgPool, 5), (ConvEnd::Flatten, 6)] {
        let block = |out_channels, pad, pool| ConvBlock {
            out_channels,
            kernel: 3,
            pad,
            pool,
        };
        let convs = ConvStackSpec {
            input: [2, 6, 6],
            blocks: vec![block(3, 1, true), block(4, 0, false)],
            end,
        };
        let tasks = vec![TaskKind::Binary; 3];
        let spec = HeteroSpec {
            input: convs.input_len(),
            convs: Some(convs),
            shared: 5,
            branch_hidden: [4, 3],
            dropout: 0.0,
            branches: tasks.len(),
            tasks: tasks.clone(),
            identical_branches: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let net = HeteroNet::new(&Cpu64, spec.clone(), seed, &mut rng);
        let mut act = HeteroActs::new(&Cpu64, &spec, N_HETERO);
        let x: Vec<f32> = (0..N_HETERO * spec.input)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Cpu64.write(&mut act.x, &x);
        for t in 0..tasks.len() {
            let host: Vec<f32> = (0..N_HETERO)
                .map(|_| f32::from(rng.random_bool(0.5)))
                .collect();
            Cpu64.write(&mut act.targets[t], &host);
        }
        let mut both = (net, act);
        let names: Vec<String> = both.0.params().iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            names[..4],
            [
                "trunk.convs.0.conv.weight",
                "trunk.convs.0.conv.bias",
                "trunk.convs.0.bn.weight",
                "trunk.convs.0.bn.bias"
            ]
        );
        let zero = ["trunk.convs.0.conv.bias", "trunk.convs.1.conv.bias"];
        let worst = check_gradient(&mut both, 2 * 4 + 2 + 4 + 2 * 3, &zero, 50 + seed);
        println!("conv stack ({end:?}): worst {worst:.1e}");
    }
}

/// `Net::input_gradient` (what `sskernel explain` maps): the gradient of one output's
/// logit of each image with respect to that image, in evaluation mode (running
/// statistics, which a few training steps first move away from 0 and 1, and γ away
/// from 1), against central differences of the summed logit over the batch, for an
/// MTL task and an STL class, with heads sharing a branch.
#[test]
fn input_gradient_of_one_output_matches_finite_differences() {
    use sskernel::backend::OptimStep;
    for (mode, output, seed) in [(Mode::Mtl, 3, 40), (Mode::Stl, 7, 41)] {
        let (mut net, mut act) = setup(mode, seed);
        if mode == Mode::Mtl {
            net.branches.task_branch = vec![0, 1, 2, 0, 4, 5, 6, 7, 8, 9];
        }
        let step = OptimStep::Sgd {
            lr: 0.2,
            momentum: 0.0,
        };
        for _ in 0..3 {
            net.train_step(&Cpu64, &mut act, N, &step);
        }
        let selected = |net: &Net<Cpu64>, logits: &[f64]| -> f64 {
            let head_out = net.spec.head_out;
            (0..N)
                .map(|i| match head_out {
                    1 => logits[output * N + i],
                    _ => logits[i * head_out + output],
                })
                .sum()
        };
        net.forward(&Cpu64, &mut act, N, false);
        let analytic = net.input_gradient(&Cpu64, &mut act, N, output);
        let pixels = N * 28 * 28;
        assert_eq!(analytic.len(), pixels);
        // The largest |∂/∂x| and a random sample.
        let mut order: Vec<usize> = (0..pixels).collect();
        order.sort_by(|&a, &b| analytic[b].abs().total_cmp(&analytic[a].abs()));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut picks: Vec<usize> = order[..8].to_vec();
        picks.extend((0..8).map(|_| rng.random_range(0..pixels)));
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for &p in &picks {
            let x0 = act.x[p];
            act.x[p] = x0 + H;
            net.forward(&Cpu64, &mut act, N, false);
            let up = selected(&net, &act.logits);
            act.x[p] = x0 - H;
            net.forward(&Cpu64, &mut act, N, false);
            let down = selected(&net, &act.logits);
            act.x[p] = x0;
            let fd = (up - down) / (2.0 * H);
            diff += (analytic[p] as f64 - fd).powi(2);
            norm += fd.powi(2);
        }
        let rel = (diff / norm).sqrt();
        println!("{mode:?} output {output}: relative error {rel:.1e}");
        assert!(norm > 0.0, "{mode:?}: every sampled derivative is zero");
        // The gradient comes back as f32: its rounding (≈ 6e-8) sets the floor.
        assert!(
            rel < 1e-5,
            "{mode:?} output {output}: relative error {rel:.1e}"
        );
    }
}
