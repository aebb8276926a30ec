//! Training throughput (images/s) of the paper's MNIST nets (batch 64 unless --batch), real
//! embedded MNIST, steady state after a warm-up, on the CPU backend (default), the
//! kernel simulator or the CUDA device.
//!
//! `cargo bench --bench train_throughput -- [--device cpu|sim|cuda] [--threads N] [--steps N] [--batch 64]`
//! prints one machine-readable line per net, `sskernel stl images_per_s=…`, which
//! scripts/compare-cpu.sh sets beside the PyTorch reference's figures (and
//! scripts/gpu-check puts in its table).

mod common;

use common::Args;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::cuda::Cuda;
use sskernel::backend::sim::Sim;
use sskernel::backend::{ops::*, OptimStep};
use sskernel::data::{self, DatasetName};
use sskernel::model::{Activations, Mode, Net, NetSpec};
use sskernel::train::Inputs;
use std::time::Instant;

const WARMUP_STEPS: usize = 10;

fn main() {
    let args = Args::parse();
    let steps = args.number("--steps").unwrap_or(100);
    let batch = args.number("--batch").unwrap_or(64);
    let device = args.value("--device").unwrap_or("cpu");
    let data = data::load(DatasetName::Mnist, None).expect("the embedded MNIST loads");
    let inputs = Inputs::new(&data.train);
    match device {
        "cpu" => run_all(&Cpu, &inputs, steps, batch),
        "sim" => run_all(&Sim::new().expect("the simulator"), &inputs, steps, batch),
        "cuda" => match Cuda::new() {
            Ok(dev) => run_all(&dev, &inputs, steps, batch),
            Err(e) => {
                eprintln!("train_throughput: --device cuda: {e:#}");
                std::process::exit(1);
            }
        },
        other => panic!("--device takes cpu, sim or cuda, got {other}"),
    }
}

fn run_all<B: Backend>(be: &B, inputs: &Inputs, steps: usize, batch: usize) {
    println!(
        "# {} backend, {} rayon threads, batch {batch}, {steps} steps after {WARMUP_STEPS} warm-up",
        be.name(),
        rayon::current_num_threads()
    );
    for (mode, name) in [(Mode::Stl, "stl"), (Mode::Mtl, "mtl")] {
        // The median of three timed runs (as reference/bench.py reports), min and max beside it.
        let mut runs: Vec<f64> = (0..3)
            .map(|_| measure(be, mode, inputs, steps, batch))
            .collect();
        runs.sort_by(f64::total_cmp);
        println!(
            "sskernel {name} images_per_s={:.1} min={:.1} max={:.1} repeats=3 batch={batch}",
            runs[1], runs[0], runs[2]
        );
    }
}

fn measure<B: Backend>(be: &B, mode: Mode, inputs: &Inputs, steps: usize, batch: usize) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut net = Net::new(be, NetSpec::mnist(mode, 10), &mut rng);
    let mut act = Activations::new(be, &net.spec, batch);
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.shuffle(&mut rng);
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let mut run = |count: usize, offset: usize| {
        for k in 0..count {
            let start = ((offset + k) * batch) % (order.len() - batch);
            inputs.gather(&order[start..start + batch], 10, &mut images, &mut targets);
            be.write(&mut act.x, &images);
            be.write(&mut act.targets, &targets);
            net.train_step(be, &mut act, batch, &step);
            // The training loop reads the loss back every step; so does the bench.
            std::hint::black_box(be.download(&act.loss));
        }
    };
    run(WARMUP_STEPS, 0);
    let started = Instant::now();
    run(steps, WARMUP_STEPS);
    (steps * batch) as f64 / started.elapsed().as_secs_f64()
}
