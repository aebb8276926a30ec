//! Time per op of one training step of the paper's MNIST nets (batch 64, real
//! embedded MNIST), on any device: the real `Net` runs with `backend::profile` on,
//! which records every op call under its name and shape (conv1 and conv2 are
//! separate rows; on sim an op is its plan's kernels, synchronised before and after;
//! on cuda each kernel launch, timed on the device by CUDA events). The median over
//! the timed steps is printed per op, with its share of the step.
//!
//! With the MTL net it then times the sharing step's TT-SVD (`branch_distances`: the
//! ten branches' first-layer gradients, 10 × [100, 640] at R = 4, after a few steps
//! of capture, as Selective Sharing runs it at an epoch's end), per launch likewise.
//!
//! `cargo bench --bench ops -- [--device cpu|sim|cuda] [--mode mtl|stl] [--threads N] [--steps N]`

mod common;

use common::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::cuda::Cuda;
use sskernel::backend::sim::Sim;
use sskernel::backend::{profile, Backend, OptimStep, TtSvd};
use sskernel::data::{self, DatasetName};
use sskernel::model::{Activations, Branched, Mode, Net, NetSpec};
use sskernel::train::Inputs;
use std::time::Instant;

const BATCH: usize = 64;
const WARMUP_STEPS: usize = 3;
/// Training steps whose gradients the timed TT-SVD factorises (trained ones: random
/// gradients would not show the Jacobi's sweep counts of a run).
const CAPTURE_STEPS: usize = 20;
/// The TT rank Selective Sharing uses by default (`SelectiveConfig::tt_rank`).
const TT_RANK: usize = 4;

fn main() {
    let args = Args::parse();
    let mode = match args.value("--mode").unwrap_or("mtl") {
        "mtl" => Mode::Mtl,
        "stl" => Mode::Stl,
        other => panic!("--mode takes mtl or stl, got {other}"),
    };
    let device = args.value("--device").unwrap_or("cpu");
    let steps = args
        .number("--steps")
        .unwrap_or(if device == "sim" { 2 } else { 20 });
    let data = data::load(DatasetName::Mnist, None).expect("the embedded MNIST loads");
    let inputs = Inputs::new(&data.train);
    match device {
        "cpu" => run(&Cpu, mode, &inputs, steps),
        "sim" => run(&Sim::new().expect("the simulator"), mode, &inputs, steps),
        "cuda" => match Cuda::new() {
            Ok(dev) => run(&dev, mode, &inputs, steps),
            Err(e) => {
                eprintln!("ops: --device cuda: {e:#}");
                std::process::exit(1);
            }
        },
        other => panic!("--device takes cpu, sim or cuda, got {other}"),
    }
}

fn run<B: Backend>(be: &B, mode: Mode, inputs: &Inputs, steps: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut net = Net::new(be, NetSpec::mnist(mode, 10), &mut rng);
    let mut act = Activations::new(be, &net.spec, BATCH);
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let mut load_batch = |k: usize, act: &mut Activations<B>| {
        let idx: Vec<usize> = (k * BATCH..(k + 1) * BATCH).collect();
        inputs.gather(&idx, 10, &mut images, &mut targets);
        be.write(&mut act.x, &images);
        be.write(&mut act.targets, &targets);
        be.synchronize();
    };
    let (mut step_ms, mut profiled) = (Vec::new(), Vec::new());
    for k in 0..WARMUP_STEPS + steps {
        load_batch(k, &mut act);
        profile::start();
        let started = Instant::now();
        net.train_step(be, &mut act, BATCH, &step);
        be.synchronize();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let records = profile::stop();
        if k >= WARMUP_STEPS {
            step_ms.push(ms);
            profiled.push(records);
        }
    }
    let step_median = profile::median(&mut step_ms);
    println!(
        "# {} backend, {} rayon threads, {} net, batch {BATCH}: one training step {step_median:.3} ms \
         (median of {steps}, each op synchronised)",
        be.name(),
        rayon::current_num_threads(),
        mode.name(),
    );
    print!(
        "{}",
        profile::markdown(&profile::per_op(&profiled), step_median)
    );
    if mode != Mode::Mtl {
        return;
    }

    net.branches_mut().start_capture(be);
    for k in 0..CAPTURE_STEPS {
        load_batch(WARMUP_STEPS + steps + k, &mut act);
        net.train_step(be, &mut act, BATCH, &step);
    }
    let (out, inp) = net.branches().capture_shape();
    let tt = TtSvd {
        branches: net.branches().count(),
        out,
        inp,
        max_rank: TT_RANK,
    };
    let grads = net
        .branches()
        .capture()
        .expect("capturing since start_capture");
    let (mut tt_ms, mut profiled) = (Vec::new(), Vec::new());
    for k in 0..1 + steps {
        be.synchronize();
        profile::start();
        let started = Instant::now();
        let distances = be.branch_distances(&tt, grads);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let records = profile::stop();
        assert!(distances.iter().all(|d| d.is_finite()));
        if k > 0 {
            tt_ms.push(ms);
            profiled.push(records);
        }
    }
    let tt_median = profile::median(&mut tt_ms);
    println!(
        "# the sharing step's TT-SVD, {tt}: {tt_median:.3} ms (median of {steps}, wall, \
         the [B, B] distances on the host)"
    );
    print!(
        "{}",
        profile::markdown(&profile::per_op(&profiled), tt_median)
    );
}
