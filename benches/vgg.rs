//! Forward + backward throughput (images/s) of the paper's CIFAR-10 net — VGG-16
//! with batchnorm, the average-pool cut-off, shared FC 1024 and ten binary branches
//! (FC 100 → FC 100 → 1) — on random 3×32×32 images, batch 64 unless --batch, on
//! any device. One step = the training forward, the ten losses, the backward (no
//! optimiser: what `reference/bench_vgg.py` times too), then the losses read back.
//!
//! `cargo bench --bench vgg -- [--device cpu|sim|cuda] [--threads N] [--steps N] [--batch 64] [--width-div 1] [--profile]`
//! prints `sskernel vgg16 fwd_bwd images_per_s=… min=… max=… repeats=3 batch=…`;
//! with `--profile`, instead, the time per op of a step (`backend::profile`).

mod common;

use common::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::cuda::Cuda;
use sskernel::backend::sim::Sim;
use sskernel::backend::{profile, Backend};
use sskernel::data::TaskKind;
use sskernel::model::Branched;
use sskernel::model::{HeteroActs, HeteroNet, HeteroSpec};
use std::time::Instant;

const WARMUP_STEPS: usize = 2;
const TASKS: usize = 10;

fn main() {
    let args = Args::parse();
    let batch = args.number("--batch").unwrap_or(64);
    let width_div = args.number("--width-div").unwrap_or(1);
    let device = args.value("--device").unwrap_or("cpu");
    let steps = args
        .number("--steps")
        .unwrap_or(if device == "cuda" { 50 } else { 5 });
    let bench = Bench {
        batch,
        steps,
        width_div,
        profile: args.flag("--profile"),
    };
    match device {
        "cpu" => bench.run(&Cpu),
        "sim" => bench.run(&Sim::new().expect("the simulator")),
        "cuda" => match Cuda::new() {
            Ok(dev) => bench.run(&dev),
            Err(e) => {
                eprintln!("vgg: --device cuda: {e:#}");
                std::process::exit(1);
            }
        },
        other => panic!("--device takes cpu, sim or cuda, got {other}"),
    }
}

struct Bench {
    batch: usize,
    steps: usize,
    width_div: usize,
    profile: bool,
}

impl Bench {
    fn run<B: Backend>(&self, be: &B) {
        let spec = HeteroSpec {
            dropout: 0.0,
            ..HeteroSpec::cifar10(self.width_div, vec![TaskKind::Binary; TASKS])
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut net = HeteroNet::new(be, spec.clone(), 0, &mut rng);
        let mut act = HeteroActs::new(be, &spec, self.batch);
        let x: Vec<f32> = (0..self.batch * spec.input)
            .map(|_| rng.random_range(-0.5..0.5))
            .collect();
        be.write(&mut act.x, &x);
        for t in &mut act.targets {
            let y: Vec<f32> = (0..self.batch)
                .map(|_| f32::from(rng.random_bool(0.5)))
                .collect();
            be.write(t, &y);
        }
        println!(
            "# {} backend, {} rayon threads, VGG-16 (widths / {}) + 10 branches, {} parameters, \
             batch {}, {} steps after {WARMUP_STEPS} warm-up",
            be.name(),
            rayon::current_num_threads(),
            self.width_div,
            net.param_count(),
            self.batch,
            self.steps
        );
        let n = self.batch;
        let mut step = |count: usize| {
            for _ in 0..count {
                net.forward(be, &mut act, n, true);
                net.loss(be, &mut act, n);
                net.backward(be, &mut act, n);
                for l in &act.loss {
                    std::hint::black_box(be.download(l));
                }
            }
        };
        step(WARMUP_STEPS);
        if self.profile {
            let (mut step_ms, mut profiled) = (Vec::new(), Vec::new());
            for _ in 0..self.steps {
                be.synchronize();
                profile::start();
                let started = Instant::now();
                step(1);
                step_ms.push(started.elapsed().as_secs_f64() * 1e3);
                profiled.push(profile::stop());
            }
            let step_median = profile::median(&mut step_ms);
            println!(
                "one step {step_median:.1} ms (median of {}, each op synchronised)",
                self.steps
            );
            print!(
                "{}",
                profile::markdown(&profile::per_op(&profiled), step_median)
            );
            return;
        }
        let mut runs: Vec<f64> = (0..3)
            .map(|_| {
                let started = Instant::now();
                step(self.steps);
                (self.steps * n) as f64 / started.elapsed().as_secs_f64()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        println!(
            "sskernel vgg16 fwd_bwd images_per_s={:.1} min={:.1} max={:.1} repeats=3 batch={n}",
            runs[1], runs[0], runs[2]
        );
    }
}
