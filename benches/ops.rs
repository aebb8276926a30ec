//! Time per op of one training step of the paper's MNIST nets (batch 64, real
//! embedded MNIST), on any device: the real `Net` runs with `backend::profile` on,
//! which records every op call under its name and shape (conv1 and conv2 are
//! separate rows; on sim and cuda an op is its plan's kernels, synchronised before
//! and after). The median over the timed steps is printed per op, with its share
//! of the step.
//!
//! `cargo bench --bench ops -- [--device cpu|sim|cuda] [--mode mtl|stl] [--threads N] [--steps N]`

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::cuda::Cuda;
use sskernel::backend::sim::Sim;
use sskernel::backend::{profile, Backend, OptimStep};
use sskernel::data::{self, DatasetName};
use sskernel::model::{Activations, Mode, Net, NetSpec};
use sskernel::train::Inputs;
use std::collections::BTreeMap;
use std::time::Instant;

const BATCH: usize = 64;
const WARMUP_STEPS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let number = |name: &str| {
        value(name).map(|v| {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
        })
    };
    if let Some(threads) = number("--threads") {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .expect("the global pool is set once");
    }
    let mode = match value("--mode").unwrap_or("mtl") {
        "mtl" => Mode::Mtl,
        "stl" => Mode::Stl,
        other => panic!("--mode takes mtl or stl, got {other}"),
    };
    let device = value("--device").unwrap_or("cpu");
    let steps = number("--steps").unwrap_or(if device == "sim" { 2 } else { 20 });
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
    // Every call of an op at a shape, per step: [step][call] → ms.
    let mut times: BTreeMap<(String, String), Vec<Vec<f64>>> = BTreeMap::new();
    let mut step_ms = Vec::new();
    for k in 0..WARMUP_STEPS + steps {
        let idx: Vec<usize> = (k * BATCH..(k + 1) * BATCH).collect();
        inputs.gather(&idx, 10, &mut images, &mut targets);
        be.write(&mut act.x, &images);
        be.write(&mut act.targets, &targets);
        be.synchronize();
        profile::start();
        let started = Instant::now();
        net.train_step(be, &mut act, BATCH, &step);
        be.synchronize();
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        let records = profile::stop();
        if k < WARMUP_STEPS {
            continue;
        }
        step_ms.push(elapsed);
        for r in records {
            let per_step = times.entry((r.op, r.shape)).or_default();
            per_step.resize(step_ms.len(), Vec::new());
            per_step[step_ms.len() - 1].push(r.ms);
        }
    }
    let step_median = median(&mut step_ms);
    println!(
        "# {} backend, {} rayon threads, {} net, batch {BATCH}: one training step {:.3} ms \
         (median of {steps}, each op synchronised)",
        be.name(),
        rayon::current_num_threads(),
        mode.name(),
        step_median
    );
    println!("| op | shape | calls/step | ms/step (median) | share |");
    println!("|---|---|---:|---:|---:|");
    let mut rows: Vec<(String, String, usize, f64)> = Vec::new();
    for ((op, shape), per_step) in times {
        // Every call of this op and shape in one step, summed, then the median step.
        let calls = per_step[0].len();
        let mut sums: Vec<f64> = per_step.iter().map(|c| c.iter().sum()).collect();
        rows.push((op, shape, calls, median(&mut sums)));
    }
    rows.sort_by(|a, b| b.3.total_cmp(&a.3));
    for (op, shape, calls, ms) in rows {
        println!(
            "| {op} | {shape} | {calls} | {ms:.3} | {:.1}% |",
            100.0 * ms / step_median
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
