//! Time per op of one training step of the paper's MNIST nets (batch 64, real
//! embedded MNIST), on any device: the real `Net` runs on a `Timed` wrapper of
//! the device that synchronises around every op and records its time under the
//! op's name and shape (conv1 and conv2 are separate rows). The median over the
//! timed steps is printed per op, with its share of the step.
//!
//! `cargo bench --bench ops -- [--device cpu|sim|cuda] [--mode mtl|stl] [--threads N] [--steps N]`

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::cuda::Cuda;
use sskernel::backend::sim::Sim;
use sskernel::backend::{
    ops::*, BatchNorm2d, BatchStats, Conv2dShape, Grads, LinearShape, LossIo, Nchw, OptimStep,
    RunningStats, WeightBias,
};
use sskernel::data::{self, DatasetName};
use sskernel::model::{Activations, Mode, Net, NetSpec};
use sskernel::train::Inputs;
use std::collections::BTreeMap;
use std::sync::Mutex;
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
    let timed = Timed {
        inner: be,
        times: Mutex::new(BTreeMap::new()),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut net = Net::new(&timed, NetSpec::mnist(mode, 10), &mut rng);
    let mut act = Activations::new(&timed, &net.spec, BATCH);
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let mut step_ms = Vec::new();
    for k in 0..WARMUP_STEPS + steps {
        if k == WARMUP_STEPS {
            timed.times.lock().unwrap().clear();
        }
        let idx: Vec<usize> = (k * BATCH..(k + 1) * BATCH).collect();
        inputs.gather(&idx, 10, &mut images, &mut targets);
        timed.write(&mut act.x, &images);
        timed.write(&mut act.targets, &targets);
        let started = Instant::now();
        net.train_step(&timed, &mut act, BATCH, &step);
        timed.synchronize();
        if k >= WARMUP_STEPS {
            step_ms.push(started.elapsed().as_secs_f64() * 1e3);
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
    for ((op, shape), calls) in timed.times.lock().unwrap().iter_mut() {
        // Every call of this op and shape in one step, summed, then the median step.
        let per_step = calls.len() / steps;
        let mut sums: Vec<f64> = calls.chunks(per_step).map(|c| c.iter().sum()).collect();
        rows.push((op.to_string(), shape.clone(), per_step, median(&mut sums)));
    }
    rows.sort_by(|a, b| b.3.total_cmp(&a.3));
    for (op, shape, per_step, ms) in rows {
        println!(
            "| {op} | {shape} | {per_step} | {ms:.3} | {:.1}% |",
            100.0 * ms / step_median
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A device whose every op is synchronised before and after and timed, under the
/// op's name and a short description of its shape.
struct Timed<'b, B: Backend> {
    inner: &'b B,
    times: Mutex<BTreeMap<(&'static str, String), Vec<f64>>>,
}

impl<B: Backend> Timed<'_, B> {
    fn time(&self, op: &'static str, shape: String, run: impl FnOnce()) {
        self.inner.synchronize();
        let started = Instant::now();
        run();
        self.inner.synchronize();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        self.times
            .lock()
            .unwrap()
            .entry((op, shape))
            .or_default()
            .push(ms);
    }
}

fn conv(s: &Conv2dShape) -> String {
    format!(
        "{}→{} {}×{} k{}",
        s.in_channels, s.out_channels, s.height, s.width, s.kernel
    )
}

fn nchw(s: &Nchw) -> String {
    format!("{}×{}×{}", s.channels, s.height, s.width)
}

fn linear(s: &LinearShape) -> String {
    format!("{}→{} ×{}", s.in_features, s.out_features, s.branches)
}

impl<B: Backend> Memory for Timed<'_, B> {
    type Buf = B::Buf;

    fn name(&self) -> String {
        self.inner.name()
    }
    fn zeros(&self, len: usize) -> B::Buf {
        self.inner.zeros(len)
    }
    fn upload(&self, host: &[f32]) -> B::Buf {
        self.inner.upload(host)
    }
    fn download(&self, buf: &B::Buf) -> Vec<f32> {
        self.inner.download(buf)
    }
    fn write(&self, buf: &mut B::Buf, host: &[f32]) {
        self.inner.write(buf, host)
    }
    fn buf_len(&self, buf: &B::Buf) -> usize {
        self.inner.buf_len(buf)
    }
    fn synchronize(&self) {
        self.inner.synchronize()
    }
}

impl<B: Backend> ConvOps for Timed<'_, B> {
    fn conv2d_forward(&self, s: &Conv2dShape, x: &B::Buf, p: WeightBias<&B::Buf>, y: &mut B::Buf) {
        self.time("conv2d_forward", conv(s), || {
            self.inner.conv2d_forward(s, x, p, y)
        });
    }
    fn conv2d_backward(
        &self,
        s: &Conv2dShape,
        x: &B::Buf,
        w: &B::Buf,
        dy: &B::Buf,
        g: Grads<B::Buf>,
    ) {
        self.time("conv2d_backward", conv(s), || {
            self.inner.conv2d_backward(s, x, w, dy, g)
        });
    }
}

impl<B: Backend> NormOps for Timed<'_, B> {
    fn batchnorm2d_forward_train(
        &self,
        bn: &BatchNorm2d,
        x: &B::Buf,
        p: WeightBias<&B::Buf>,
        y: &mut B::Buf,
        batch: BatchStats<&mut B::Buf>,
        running: RunningStats<&mut B::Buf>,
    ) {
        self.time("batchnorm2d_forward_train", nchw(&bn.shape), || {
            self.inner
                .batchnorm2d_forward_train(bn, x, p, y, batch, running)
        });
    }
    fn batchnorm2d_forward_eval(
        &self,
        bn: &BatchNorm2d,
        x: &B::Buf,
        p: WeightBias<&B::Buf>,
        running: RunningStats<&B::Buf>,
        y: &mut B::Buf,
    ) {
        self.time("batchnorm2d_forward_eval", nchw(&bn.shape), || {
            self.inner.batchnorm2d_forward_eval(bn, x, p, running, y)
        });
    }
    fn batchnorm2d_backward(
        &self,
        s: &Nchw,
        x: &B::Buf,
        gamma: &B::Buf,
        batch: BatchStats<&B::Buf>,
        dy: &B::Buf,
        g: Grads<B::Buf>,
    ) {
        self.time("batchnorm2d_backward", nchw(s), || {
            self.inner.batchnorm2d_backward(s, x, gamma, batch, dy, g)
        });
    }
}

impl<B: Backend> PoolOps for Timed<'_, B> {
    fn relu_forward(&self, len: usize, x: &B::Buf, y: &mut B::Buf) {
        self.time("relu_forward", len.to_string(), || {
            self.inner.relu_forward(len, x, y)
        });
    }
    fn relu_backward(&self, len: usize, y: &B::Buf, dy: &B::Buf, dx: &mut B::Buf) {
        self.time("relu_backward", len.to_string(), || {
            self.inner.relu_backward(len, y, dy, dx)
        });
    }
    fn maxpool2x2_forward(&self, s: &Nchw, x: &B::Buf, y: &mut B::Buf) {
        self.time("maxpool2x2_forward", nchw(s), || {
            self.inner.maxpool2x2_forward(s, x, y)
        });
    }
    fn maxpool2x2_backward(&self, s: &Nchw, x: &B::Buf, dy: &B::Buf, dx: &mut B::Buf) {
        self.time("maxpool2x2_backward", nchw(s), || {
            self.inner.maxpool2x2_backward(s, x, dy, dx)
        });
    }
    fn global_avgpool_forward(&self, s: &Nchw, x: &B::Buf, y: &mut B::Buf) {
        self.time("global_avgpool_forward", nchw(s), || {
            self.inner.global_avgpool_forward(s, x, y)
        });
    }
    fn global_avgpool_backward(&self, s: &Nchw, dy: &B::Buf, dx: &mut B::Buf) {
        self.time("global_avgpool_backward", nchw(s), || {
            self.inner.global_avgpool_backward(s, dy, dx)
        });
    }
}

impl<B: Backend> LinearOps for Timed<'_, B> {
    fn linear_forward(&self, s: &LinearShape, x: &B::Buf, p: WeightBias<&B::Buf>, y: &mut B::Buf) {
        self.time("linear_forward", linear(s), || {
            self.inner.linear_forward(s, x, p, y)
        });
    }
    fn linear_backward(
        &self,
        s: &LinearShape,
        x: &B::Buf,
        w: &B::Buf,
        dy: &B::Buf,
        g: Grads<B::Buf>,
    ) {
        self.time("linear_backward", linear(s), || {
            self.inner.linear_backward(s, x, w, dy, g)
        });
    }
}

impl<B: Backend> LossOps for Timed<'_, B> {
    fn softmax_cross_entropy(&self, batch: usize, classes: usize, io: LossIo<B::Buf>) {
        self.time(
            "softmax_cross_entropy",
            format!("{batch}×{classes}"),
            || self.inner.softmax_cross_entropy(batch, classes, io),
        );
    }
    fn sigmoid_bce(&self, tasks: usize, batch: usize, io: LossIo<B::Buf>) {
        self.time("sigmoid_bce", format!("{tasks}×{batch}"), || {
            self.inner.sigmoid_bce(tasks, batch, io)
        });
    }
    fn mse(&self, batch: usize, io: LossIo<B::Buf>) {
        self.time("mse", batch.to_string(), || self.inner.mse(batch, io));
    }
    fn pairwise_rank(&self, batch: usize, io: LossIo<B::Buf>) {
        self.time("pairwise_rank", batch.to_string(), || {
            self.inner.pairwise_rank(batch, io)
        });
    }
}

impl<B: Backend> DropoutOps for Timed<'_, B> {
    fn dropout_forward(
        &self,
        len: usize,
        p: f32,
        key: u32,
        x: &B::Buf,
        mask: &mut B::Buf,
        y: &mut B::Buf,
    ) {
        self.time("dropout_forward", len.to_string(), || {
            self.inner.dropout_forward(len, p, key, x, mask, y)
        });
    }
    fn dropout_backward(&self, len: usize, mask: &B::Buf, dy: &B::Buf, dx: &mut B::Buf) {
        self.time("dropout_backward", len.to_string(), || {
            self.inner.dropout_backward(len, mask, dy, dx)
        });
    }
}

impl<B: Backend> OptimOps for Timed<'_, B> {
    fn optim_step(
        &self,
        step: &OptimStep,
        len: usize,
        param: &mut B::Buf,
        grad: &B::Buf,
        state: &mut [B::Buf],
    ) {
        // One row for all parameters: the optimiser runs once per tensor.
        self.time("optim_step", "all tensors".into(), || {
            self.inner.optim_step(step, len, param, grad, state)
        });
    }
    fn axpy(&self, alpha: f32, x: &B::Buf, y: &mut B::Buf, len: usize) {
        self.time("axpy", len.to_string(), || {
            self.inner.axpy(alpha, x, y, len)
        });
    }
}
