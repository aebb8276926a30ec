//! The paper's networks (DESIGN.md §4): layer specs, parameter buffers, PyTorch
//! default initialisation, and the explicit forward/backward of trunk, branches
//! and heads in `net.rs`.

mod branches;
mod convs;
mod hetero;
mod layer;
mod net;

pub use branches::Branches;
pub use convs::{BlockShapes, ConvActs, ConvBlock, ConvEnd, ConvStack, ConvStackSpec};
pub use hetero::{HeteroActs, HeteroNet, HeteroSpec};
pub use layer::{BatchNorm, Layer, BN_EPS, BN_MOMENTUM};

pub use net::{Activations, Net, StepProgram};

use crate::backend::{Backend, Hyper, OptimStep, ParamBufs};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// A net whose tasks sit on [`Branches`] that Selective Sharing can merge
/// (`sharing::Sharing` works on any of them).
pub trait Branched<B: Backend> {
    fn branches(&self) -> &Branches<B>;
    fn branches_mut(&mut self) -> &mut Branches<B>;
    /// Every trainable tensor, in a fixed order (the checkpoint's and optimiser's).
    fn params(&self) -> Vec<&Param<B>>;
    fn params_mut(&mut self) -> Vec<&mut Param<B>>;
    /// Non-trainable state saved with the model (BN running statistics) under its
    /// checkpoint names.
    fn buffers(&self) -> Vec<(&str, &B::Buf)>;
    fn buffers_mut(&mut self) -> Vec<(&str, &mut B::Buf)>;
    /// Trainable parameters of the whole net.
    fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }
    /// Merges branches (see [`Branches::prune`]); a net that sizes anything else
    /// by the branch count updates it too.
    fn prune(&mut self, be: &B, keep: &[usize], task_branch: Vec<usize>) {
        self.branches_mut().prune(be, keep, task_branch);
    }
}

/// Which network: one classifier (single-task) or one branch per task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Single-task learning: trunk → FC 100 → FC 50 → 10-way softmax.
    Stl,
    /// Multi-task learning: trunk → ten branches FC 100 → FC 50 → 1 sigmoid.
    Mtl,
    /// The MTL net whose related branches merge while it trains (DESIGN.md §5).
    Selective,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stl => "stl",
            Mode::Mtl => "mtl",
            Mode::Selective => "selective",
        }
    }
}

/// The loss on the head outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Loss {
    /// Heads write `[N, classes]` logits; softmax cross-entropy.
    SoftmaxCrossEntropy,
    /// Heads write `[tasks, N]` logits; per-task sigmoid BCE, summed over tasks.
    SigmoidBce,
}

/// Every size of the MNIST/Fashion net; the rest of the model derives from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetSpec {
    pub image_height: usize,
    pub image_width: usize,
    pub kernel: usize,
    pub conv1_channels: usize,
    pub conv2_channels: usize,
    /// Width of the hard-shared FC layer (640 = 40·4·4 in and out).
    pub shared: usize,
    /// Widths of the two hidden layers of every branch.
    pub branch_hidden: [usize; 2],
    pub branches: usize,
    pub tasks: usize,
    /// Outputs of each head: 10 for the STL classifier, 1 for a binary task.
    pub head_out: usize,
    /// Classes of the 10-way problem (targets are one-hot rows of this width).
    pub classes: usize,
    pub loss: Loss,
    /// Start every branch and every head from the same weights. Selective Sharing
    /// needs it: branch gradients are compared unit by unit, which means nothing
    /// between independently initialised branches (their descriptors come out
    /// near-orthogonal whatever the tasks), while from a common start the
    /// gradients differ only through the tasks' targets.
    pub identical_branches: bool,
}

impl NetSpec {
    /// The paper's MNIST / Fashion-MNIST network (§4.2) for `classes`-way data.
    pub fn mnist(mode: Mode, classes: usize) -> Self {
        let (branches, tasks, head_out, loss) = match mode {
            Mode::Stl => (1, 1, classes, Loss::SoftmaxCrossEntropy),
            Mode::Mtl | Mode::Selective => (classes, classes, 1, Loss::SigmoidBce),
        };
        Self {
            image_height: 28,
            image_width: 28,
            kernel: 5,
            conv1_channels: 20,
            conv2_channels: 40,
            shared: 640,
            branch_hidden: [100, 50],
            branches,
            tasks,
            head_out,
            classes,
            loss,
            identical_branches: mode == Mode::Selective,
        }
    }

    /// Spatial size after conv1 + pool (12 for 28×28 input).
    pub fn pool1_size(&self) -> (usize, usize) {
        let conv = |size: usize| size + 1 - self.kernel;
        (conv(self.image_height) / 2, conv(self.image_width) / 2)
    }

    /// Spatial size after conv2 + pool (4 for 28×28 input).
    pub fn pool2_size(&self) -> (usize, usize) {
        let (h, w) = self.pool1_size();
        ((h + 1 - self.kernel) / 2, (w + 1 - self.kernel) / 2)
    }

    /// Features entering the shared FC: conv2_channels · pool2 area (640).
    pub fn flat_features(&self) -> usize {
        let (h, w) = self.pool2_size();
        self.conv2_channels * h * w
    }
}

/// The optimiser's step state on the device (`backend::Hyper`): the step counter,
/// the lr and this step's step size, which the update kernels read. A model owns
/// one; its counter is the number of optimiser steps taken.
pub struct StepState<B: Backend> {
    buf: B::Buf,
    /// The lr last written into the buffer: the host writes it only when it changes.
    lr: Option<f32>,
}

impl<B: Backend> StepState<B> {
    pub fn new(be: &B) -> Self {
        Self {
            buf: be.zeros(Hyper::LEN),
            lr: None,
        }
    }

    /// Optimiser steps taken (the counter on the device).
    pub fn steps(&self, be: &B) -> usize {
        be.download(&self.buf)[Hyper::STEP] as usize
    }

    /// Sets the counter: a resumed run continues at its checkpoint's step.
    pub fn set_steps(&mut self, be: &B, steps: usize) {
        assert!(
            steps < 1 << 24,
            "{steps} steps: the step counter is a float"
        );
        self.set(be, Hyper::STEP, steps as f32);
    }

    fn set(&mut self, be: &B, slot: usize, value: f32) {
        let mut host = be.download(&self.buf);
        host[slot] = value;
        be.write(&mut self.buf, &host);
    }

    /// One optimiser step of `params`: the step state advances on the device
    /// (`OptimOps::optim_prepare`, after writing the lr if it changed), then every
    /// parameter is updated from it, all in one `optim_step` (one multi-tensor
    /// launch on a kernel device).
    pub fn update(&mut self, be: &B, step: &OptimStep, params: Vec<&mut Param<B>>) {
        if self.lr != Some(step.lr()) {
            self.set(be, Hyper::LR, step.lr());
            self.lr = Some(step.lr());
        }
        be.optim_prepare(step, &mut self.buf);
        let mut bufs: Vec<_> = params.into_iter().map(|p| p.optim_bufs(be, step)).collect();
        be.optim_step(step, &self.buf, &mut bufs);
    }
}

/// One trainable tensor with its gradient and optimiser state, all of one shape.
pub struct Param<B: Backend> {
    /// Stable name, used in checkpoints: "trunk.conv1.weight", "branches.fc1.weight", …
    pub name: String,
    pub shape: Vec<usize>,
    pub value: B::Buf,
    pub grad: B::Buf,
    /// SGD: `[velocity]`; Adam: `[m, v]`. Allocated by the optimiser on first use.
    pub state: Vec<B::Buf>,
}

impl<B: Backend> Param<B> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensor as the optimiser updates it; its state buffers are allocated
    /// (zero) on first use.
    pub fn optim_bufs(&mut self, backend: &B, step: &OptimStep) -> ParamBufs<'_, B::Buf> {
        let len = self.len();
        while self.state.len() < step.state_len() {
            self.state.push(backend.zeros(len));
        }
        ParamBufs {
            len,
            value: &mut self.value,
            grad: &self.grad,
            state: &mut self.state,
        }
    }

    /// Copies branch 0's row over every other branch's (first axis = branch).
    pub fn copy_first_branch(&mut self, backend: &B) {
        let mut host = backend.download(&self.value);
        let row_len = self.len() / self.shape[0];
        let (first, rest) = host[..self.len()].split_at_mut(row_len);
        for row in rest.chunks_mut(row_len) {
            row.copy_from_slice(first);
        }
        self.value = backend.upload(&host);
    }

    /// Keeps the rows `keep` of a parameter whose first axis is the branch, with its
    /// gradient and optimiser state: the buffers shrink in place.
    pub fn compact_branches(&mut self, backend: &B, keep: &[usize]) {
        let row_len = self.len() / self.shape[0];
        backend.compact_rows(&mut self.value, row_len, keep);
        backend.compact_rows(&mut self.grad, row_len, keep);
        for state in &mut self.state {
            backend.compact_rows(state, row_len, keep);
        }
        self.shape[0] = keep.len();
    }

    /// For every `(group, kept)`: row `kept` of the value and of each optimiser
    /// state becomes the element-wise mean of the group's rows (first axis =
    /// branch). The gradient is left alone: the next backward overwrites it.
    pub fn average_branches(&mut self, backend: &B, groups: &[(Vec<usize>, usize)]) {
        let (len, row_len) = (self.len(), self.len() / self.shape[0]);
        let average = |buf: &mut B::Buf| {
            let mut host = backend.download(buf);
            for (group, kept) in groups {
                let mut mean = vec![0.0f64; row_len];
                for &b in group {
                    for (m, &v) in mean.iter_mut().zip(&host[b * row_len..(b + 1) * row_len]) {
                        *m += v as f64;
                    }
                }
                for (dst, m) in host[kept * row_len..(kept + 1) * row_len]
                    .iter_mut()
                    .zip(mean)
                {
                    *dst = (m / group.len() as f64) as f32;
                }
            }
            *buf = backend.upload(&host[..len]);
        };
        average(&mut self.value);
        for state in &mut self.state {
            average(state);
        }
    }

    /// PyTorch's default for Linear and Conv2d weights *and* biases:
    /// U(−1/√fan_in, 1/√fan_in) (kaiming_uniform with a = √5 reduces to this).
    pub fn uniform(
        backend: &B,
        name: &str,
        shape: &[usize],
        fan_in: usize,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let len: usize = shape.iter().product();
        let host: Vec<f32> = (0..len).map(|_| rng.random_range(-bound..bound)).collect();
        Self::from_host(backend, name, shape, &host)
    }

    pub fn constant(backend: &B, name: &str, shape: &[usize], value: f32) -> Self {
        let len: usize = shape.iter().product();
        Self::from_host(backend, name, shape, &vec![value; len])
    }

    pub fn from_host(backend: &B, name: &str, shape: &[usize], host: &[f32]) -> Self {
        debug_assert_eq!(host.len(), shape.iter().product::<usize>());
        Self {
            name: name.to_string(),
            shape: shape.to_vec(),
            value: backend.upload(host),
            grad: backend.zeros(host.len()),
            state: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::backend::Memory;
    use rand::SeedableRng;

    fn count(mode: Mode) -> usize {
        let spec = NetSpec::mnist(mode, 10);
        Net::new(&Cpu, spec, &mut ChaCha8Rng::seed_from_u64(0)).param_count()
    }

    #[test]
    fn parameter_counts_are_the_papers() {
        assert_eq!(NetSpec::mnist(Mode::Mtl, 10).flat_features(), 640);
        assert_eq!(count(Mode::Stl), 500_580);
        assert_eq!(count(Mode::Mtl), 1_122_930);
    }

    #[test]
    fn average_branches_writes_the_group_mean_into_the_kept_row_only() {
        // Four branches of rows of 3; group {0, 2, 3} kept in row 2.
        let host: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 1.0).collect();
        let mut p = Param::from_host(&Cpu, "w", &[4, 3], &host);
        p.state
            .push(Cpu.upload(&host.iter().map(|v| 2.0 * v).collect::<Vec<_>>()));
        p.average_branches(&Cpu, &[(vec![0, 2, 3], 2)]);
        let mean: Vec<f32> = (0..3)
            .map(|i| (host[i] + host[6 + i] + host[9 + i]) / 3.0)
            .collect();
        assert_eq!(&p.value[6..9], &mean[..]);
        // Other rows, including the group's other members, are untouched.
        assert_eq!(&p.value[..6], &host[..6]);
        assert_eq!(&p.value[9..], &host[9..]);
        let state_mean: Vec<f32> = mean.iter().map(|v| 2.0 * v).collect();
        assert_eq!(&p.state[0][6..9], &state_mean[..]);
    }

    #[test]
    fn initialisation_is_pytorch_uniform_within_one_over_sqrt_fan_in() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = Param::uniform(&Cpu, "w", &[100, 640], 640, &mut rng);
        let bound = 1.0 / 640f32.sqrt();
        let max = p.value.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max < bound && max > 0.99 * bound,
            "max |w| {max}, bound {bound}"
        );
        let mean = p.value.iter().sum::<f32>() / p.value.len() as f32;
        assert!(mean.abs() < 0.01 * bound, "mean {mean}");
    }
}
