//! What Selective Sharing decides on: the capture buffer holds G_b = Σ over the
//! epoch's *training* steps of ∂L/∂W1_b (DESIGN.md §5.1), nothing more. Checked
//! against the per-step `branches.fc1.weight` gradients recorded independently
//! after each step, over a run of a few steps, an evaluation, and a few more steps.
//! A capture that lags a step behind (added in `forward`) or that evaluation
//! reaches fails here.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::sim::Sim;
use sskernel::backend::{ops::*, OptimStep};
use sskernel::data::{self, DatasetName, Split};
use sskernel::model::Branched;
use sskernel::model::{Activations, Mode, Net, NetSpec};
use sskernel::train::{metrics, Inputs};

const FC1: &str = "branches.fc1.weight";

/// The first `n` samples of `split`, as a split of their own.
fn head(split: &Split, n: usize) -> Split {
    Split {
        images: split.images[..n * split.image_len()].to_vec(),
        labels: split.labels[..n].to_vec(),
        channels: split.channels,
        rows: split.rows,
        cols: split.cols,
    }
}

/// Runs `before` training steps, an evaluation of `eval_samples` validation
/// images, then `after` more steps, with the capture on. Returns the capture and
/// the per-step fc1 weight gradients, read after each step.
fn capture_and_step_gradients<B: Backend>(
    be: &B,
    batch: usize,
    before: usize,
    eval_samples: usize,
    after: usize,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let train = Inputs::new(&data.train);
    let val_split = head(&data.val, eval_samples);
    let val = Inputs::new(&val_split);
    let mut net = Net::new(
        be,
        NetSpec::mnist(Mode::Selective, 10),
        &mut ChaCha8Rng::seed_from_u64(3),
    );
    let mut act = Activations::new(be, &net.spec, batch);
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    net.branches.start_capture(be);
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let mut grads = Vec::new();
    for k in 0..before + after {
        if k == before {
            let mut val = metrics::EvalSplit::new(be, &val, 10, batch);
            let e = metrics::evaluate(be, &mut net, &mut act, &mut val, batch);
            assert!(e.accuracy.is_finite());
        }
        // Batches at odd offsets so consecutive steps see different digits.
        let idx: Vec<usize> = (0..batch).map(|i| (k * 7 + i * 13) % train.len()).collect();
        train.gather(&idx, 10, &mut images, &mut targets);
        be.write(&mut act.x, &images);
        be.write(&mut act.targets, &targets);
        net.train_step(be, &mut act, batch, &step);
        let fc1 = net.params().into_iter().find(|p| p.name == FC1).unwrap();
        grads.push(be.download(&fc1.grad)[..fc1.len()].to_vec());
    }
    let capture = net.branches.capture().expect("the capture is on");
    let len = grads[0].len();
    (be.download(capture)[..len].to_vec(), grads)
}

/// Σ_k g_k in step order, in f32 as the capture adds them.
fn sum_in_order(grads: &[Vec<f32>]) -> Vec<f32> {
    let mut sum = vec![0.0f32; grads[0].len()];
    for g in grads {
        for (s, &x) in sum.iter_mut().zip(g) {
            *s += x;
        }
    }
    sum
}

#[test]
fn capture_is_the_sum_of_the_training_steps_gradients_bitwise_on_cpu() {
    let (capture, grads) = capture_and_step_gradients(&Cpu, 16, 3, 40, 3);
    assert_eq!(grads.len(), 6);
    // The steps' gradients differ (else a lagging capture could still agree).
    assert!(grads.windows(2).all(|w| w[0] != w[1]));
    let expected = sum_in_order(&grads);
    assert_eq!(capture.len(), expected.len());
    let differing = capture
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} captured values differ from Σ of the per-step gradients",
        expected.len()
    );
}

#[test]
fn evaluation_alone_never_touches_the_capture() {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let val_split = head(&data.val, 24);
    let val = Inputs::new(&val_split);
    let mut net = Net::new(
        &Cpu,
        NetSpec::mnist(Mode::Selective, 10),
        &mut ChaCha8Rng::seed_from_u64(4),
    );
    let mut act = Activations::new(&Cpu, &net.spec, 8);
    net.branches.start_capture(&Cpu);
    // Evaluation alone (forward without backward) leaves the capture at zero,
    // even with a non-zero gradient left in fc1 from an earlier backward.
    let fc1 = net
        .params_mut()
        .into_iter()
        .find(|p| p.name == FC1)
        .unwrap();
    fc1.grad = Cpu.upload(&vec![1.0; fc1.len()]);
    let mut val = metrics::EvalSplit::new(&Cpu, &val, 10, 8);
    metrics::evaluate(&Cpu, &mut net, &mut act, &mut val, 8);
    let capture = net.branches.capture().unwrap();
    assert!(
        capture.iter().all(|&v| v == 0.0),
        "evaluation touched the capture"
    );
}

#[test]
fn capture_on_sim_matches_the_per_step_gradients() {
    let sim = Sim::new().unwrap();
    let (capture, grads) = capture_and_step_gradients(&sim, 4, 2, 6, 1);
    let expected = sum_in_order(&grads);
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&a, &b) in capture.iter().zip(&expected) {
        assert!(a.is_finite(), "non-finite capture value");
        diff += (a as f64 - b as f64).powi(2);
        norm += (b as f64).powi(2);
    }
    let rel = (diff / norm).sqrt();
    assert!(norm > 0.0);
    assert!(rel <= 1e-5, "‖capture − Σ g‖/‖Σ g‖ = {rel:e} > 1e-5");
}
