//! Kernel launches of one MNIST MTL training step at batch 64 on a kernel device
//! (forward, loss, backward, optimiser), counted from `backend::profile`'s records:
//! one record per executed Plan, its kernels `+`-joined. Its own test binary,
//! because profiling is process-wide (a parallel test would add its launches).
//! `cargo test --release --test step_launches -- --nocapture` prints the launches
//! (BENCHMARKS.md, "Launches per MNIST MTL step").

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::backend::sim::Sim;
use sskernel::backend::{ops::*, profile, OptimStep};
use sskernel::model::{Activations, Mode, Net, NetSpec};

/// Before the fused ReLUs (LinearShape::relu_out / relu_in, relu_maxpool2x2_*)
/// a step made 60 launches: 15 forward, 1 loss, 28 backward, 16 optimiser; after,
/// 50, and one more since the optimiser's step state lives on the device
/// (`optim_prepare`, so a recorded step program is valid at every step): 51. With
/// the multi-tensor optimiser (16 updates → 1 launch) and the linear backward as
/// one grouped launch per layer (3 → 1, 4 layers): 28 — 10 forward, 1 loss,
/// 15 backward, 2 optimiser (optim_prepare, sgd_step). Each conv block's
/// batchnorm, ReLU and pool as one kernel forward and one backward
/// (`batchnorm2d_relu_maxpool_train`, `relu_maxpool_batchnorm2d_backward`) and the
/// conv bias gradient inside the weight GEMM (`conv2d_backward_weight_sum`) remove 6,
/// conv2's backward-data and -weight in one launch (`conv2d_backward_data_weight`) 1:
/// 21 — 8 forward, 1 loss, 10 backward, 2 optimiser.
const MAX_LAUNCHES: usize = 21;

#[test]
fn mnist_mtl_step_launches() {
    let sim = Sim::new().unwrap();
    let n = 64;
    let spec = NetSpec::mnist(Mode::Mtl, 10);
    let mut g = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..n * 28 * 28).map(|_| g.random_range(0.0..1.0)).collect();
    let mut t = vec![0.0f32; n * 10];
    for i in 0..n {
        t[i * 10 + g.random_range(0..10)] = 1.0;
    }
    let mut net = Net::new(&sim, spec.clone(), &mut ChaCha8Rng::seed_from_u64(5));
    let mut act = Activations::new(&sim, &spec, n);
    sim.write(&mut act.x, &x);
    sim.write(&mut act.targets, &t);
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    profile::start();
    net.train_step(&sim, &mut act, n, &step);
    let records = profile::stop();
    // The phases (forward, loss, …) are recorded too, as "phase NAME".
    let plans: Vec<_> = records
        .iter()
        .filter(|r| !r.op.starts_with("phase "))
        .collect();
    let mut launches = 0;
    for r in &plans {
        for (kernel, grid) in r.op.split('+').zip(r.shape.split(" + ")) {
            launches += 1;
            println!("{launches:3}  {kernel:28} {grid}");
        }
    }
    println!("{launches} launches in {} plans", plans.len());
    assert!(
        launches <= MAX_LAUNCHES,
        "{launches} launches per step (at most {MAX_LAUNCHES})"
    );
}
