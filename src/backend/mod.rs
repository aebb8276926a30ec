//! The op surface every device implements: `cpu` (Rust + rayon, the reference),
//! `sim` and `cuda` (kernels/*.cu, through the launch plans of `launch`). The model code is written once against
//! this trait; it never looks at a buffer's contents except through `download`.
//!
//! Conventions, shared by every implementation:
//! - Buffers hold f32, row-major (C order). Shapes are in the doc comment of each op.
//! - An op *overwrites* its outputs unless its name or doc says it accumulates.
//! - Buffers may be longer than an op needs (activations are allocated for the
//!   largest batch): an op reads and writes only the prefix its shape describes.
//! - Branch-batched buffers are `[branches, out, in]`: one call runs every branch.

pub mod cpu;
pub mod cuda;
pub mod kernels;
pub mod launch;
pub mod profile;
pub mod sim;

/// A square-kernel 2-D convolution: `pad` zeros around the input on every side,
/// the window moving by `stride` (the MNIST net's: pad 0, stride 1; VGG's 3×3:
/// pad 1, stride 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub pad: usize,
    pub stride: usize,
}

impl Conv2dShape {
    /// `(H + 2·pad − kernel) / stride + 1`, as PyTorch (floor).
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.pad - self.kernel) / self.stride + 1
    }
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.pad - self.kernel) / self.stride + 1
    }
    /// Valid (no padding) and stride 1: the MNIST nets' convolutions.
    pub fn is_valid_unit_stride(&self) -> bool {
        self.pad == 0 && self.stride == 1
    }
    /// Elements of x: `[batch, in_channels, height, width]`.
    pub fn x_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }
    /// Elements of w: `[out_channels, in_channels, kernel, kernel]`.
    pub fn w_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel * self.kernel
    }
    /// Elements of y: `[batch, out_channels, out_height, out_width]`.
    pub fn y_len(&self) -> usize {
        self.batch * self.out_channels * self.out_height() * self.out_width()
    }
}

/// `N×C×H×W kR→K`, with `pad`/`stride` when not 0/1 (profiles, messages).
impl std::fmt::Display for Conv2dShape {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (n, c, h, w) = (self.batch, self.in_channels, self.height, self.width);
        write!(f, "{n}×{c}×{h}×{w} k{}→{}", self.kernel, self.out_channels)?;
        if !self.is_valid_unit_stride() {
            write!(f, " pad {} stride {}", self.pad, self.stride)?;
        }
        Ok(())
    }
}

/// Shape of an NCHW activation (batchnorm, ReLU, pooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nchw {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Nchw {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Nchw {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (n, c, h, w) = (self.batch, self.channels, self.height, self.width);
        write!(f, "{n}×{c}×{h}×{w}")
    }
}

/// A linear layer batched across branches:
/// `y[o, n, :] = x[x_of[o], n, :] · w[o]ᵀ + b[o]` for every output branch `o`.
///
/// - x: `[x_branches, batch, in_features]`
/// - w: `[branches, out_features, in_features]`, b: `[branches, out_features]`
/// - y: `[branches, batch, out_features]`
/// - `x_of[o]` (length `branches`, each `< x_branches`) picks the input of branch `o`:
///   all zeros for branches that read one shared trunk output (`x_branches == 1`),
///   the identity for a chain of per-branch layers, the task→branch map for the heads.
/// - ReLUs fused into the layer (each removes a launch on a kernel device and is the
///   same float operation as the separate `relu_forward` / `relu_backward`):
///   `relu_out`: the forward writes `y = ReLU(x·wᵀ + b)` (dy is then still the
///   gradient w.r.t. the layer's pre-ReLU output, as the backward's caller passes it);
///   `relu_in`: x is a ReLU's output, and the backward's dx is the gradient w.r.t.
///   that ReLU's *input*: `dx = (dy·w)` where x > 0, else 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub branches: usize,
    pub x_branches: usize,
    pub batch: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub x_of: Vec<usize>,
    pub relu_out: bool,
    pub relu_in: bool,
}

/// `B×(N×in→out)`: branches, batch, features.
impl std::fmt::Display for LinearShape {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (n, i, o) = (self.batch, self.in_features, self.out_features);
        let into = if self.relu_in { "relu→" } else { "" };
        let out = if self.relu_out { "→relu" } else { "" };
        write!(f, "{}×({into}{n}×{i}→{o}{out})", self.branches)
    }
}

impl LinearShape {
    /// One ordinary linear layer (a single branch reading a single input).
    pub fn single(batch: usize, in_features: usize, out_features: usize) -> Self {
        Self {
            branches: 1,
            x_branches: 1,
            batch,
            in_features,
            out_features,
            x_of: vec![0],
            relu_out: false,
            relu_in: false,
        }
    }

    /// The same layer with its ReLUs fused (see the fields).
    pub fn with_relu(self, relu_in: bool, relu_out: bool) -> Self {
        Self {
            relu_in,
            relu_out,
            ..self
        }
    }
    pub fn x_len(&self) -> usize {
        self.x_branches * self.batch * self.in_features
    }
    pub fn w_len(&self) -> usize {
        self.branches * self.out_features * self.in_features
    }
    pub fn b_len(&self) -> usize {
        self.branches * self.out_features
    }
    pub fn y_len(&self) -> usize {
        self.branches * self.batch * self.out_features
    }
}

/// Hyper-parameters of one optimiser step, PyTorch semantics (no weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimStep {
    /// `v = μ·v + g; p -= lr·v` (torch.optim.SGD, dampening 0, nesterov off).
    Sgd { lr: f32, momentum: f32 },
    /// torch.optim.Adam; its step counter lives in the step state ([`Hyper`]).
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
}

/// The optimiser's step state, a small device buffer of [`Hyper::LEN`] floats that
/// the update kernels read instead of by-value arguments, so that a recorded launch
/// program (`launch::Program`) is valid at every step. `OptimOps::optim_prepare`
/// advances it at the start of each step.
pub struct Hyper;

impl Hyper {
    pub const LEN: usize = 4;
    /// Steps taken, as a float (exact up to 2^24 steps).
    pub const STEP: usize = 0;
    /// The learning rate, written by the host (`model::StepState`).
    pub const LR: usize = 1;
    /// This step's step size: lr (SGD), lr/(1 − β1^t) (Adam).
    pub const STEP_SIZE: usize = 2;
    /// Adam's sqrt(1 − β2^t) (1 for SGD).
    pub const BC2_SQRT: usize = 3;
}

impl OptimStep {
    pub fn lr(&self) -> f32 {
        match *self {
            OptimStep::Sgd { lr, .. } | OptimStep::Adam { lr, .. } => lr,
        }
    }

    /// Buffers of optimiser state per parameter: SGD `[velocity]`, Adam `[m, v]`.
    pub fn state_len(&self) -> usize {
        match self {
            OptimStep::Sgd { .. } => 1,
            OptimStep::Adam { .. } => 2,
        }
    }

    /// Panics unless `state` holds this optimiser's buffers (a caller's bug).
    pub fn check_state<B>(&self, state: &[B]) {
        assert!(
            state.len() >= self.state_len(),
            "{self:?} needs {} state buffers per parameter, got {}",
            self.state_len(),
            state.len()
        );
    }
}

/// A layer's two parameter tensors — weight and bias (for batchnorm γ and β, as
/// PyTorch names them) — or their gradients (`R = &mut Buf`).
#[derive(Debug)]
pub struct WeightBias<R> {
    pub w: R,
    pub b: R,
}

/// What a backward writes: the gradient of the layer's input, when asked for (the
/// first layer has no use for it), and of its weight and bias.
#[derive(Debug)]
pub struct Grads<'a, B> {
    pub dx: Option<&'a mut B>,
    pub dw: &'a mut B,
    pub db: &'a mut B,
}

/// What a weighted layer's forward reads (its input and parameters) and writes.
#[derive(Debug)]
pub struct Forward<'a, B> {
    pub x: &'a B,
    pub p: WeightBias<&'a B>,
    pub y: &'a mut B,
}

/// What a weighted layer's backward reads — the forward's input, the weight (for
/// batchnorm γ) and the output gradient — and writes.
#[derive(Debug)]
pub struct Backward<'a, B> {
    pub x: &'a B,
    pub w: &'a B,
    pub dy: &'a B,
    pub g: Grads<'a, B>,
}

/// A batchnorm's per-channel batch statistics `[C]`, saved by the training forward
/// for the backward: the mean and `1/sqrt(var_biased + eps)`.
#[derive(Debug)]
pub struct BatchStats<R> {
    pub mean: R,
    pub inv_std: R,
}

/// A batchnorm's running statistics `[C]` (mean and unbiased variance), updated by
/// the training forward and used by the evaluation forward.
#[derive(Debug)]
pub struct RunningStats<R> {
    pub mean: R,
    pub var: R,
}

/// What a training-mode batchnorm forward writes besides y: the batch statistics
/// (for the backward) and the running statistics it updates.
#[derive(Debug)]
pub struct TrainStats<'a, B> {
    pub batch: BatchStats<&'a mut B>,
    pub running: RunningStats<&'a mut B>,
}

/// What a loss reads (the logits and the targets) and writes (the loss and its
/// gradient w.r.t. the logits).
#[derive(Debug)]
pub struct LossIo<'a, B> {
    pub logits: &'a B,
    pub targets: &'a B,
    pub loss: &'a mut B,
    pub dlogits: &'a mut B,
}

/// One parameter tensor as the optimiser sees it: its first `len` elements, their
/// gradient and the optimiser's state buffers of the same length.
#[derive(Debug)]
pub struct ParamBufs<'a, B> {
    pub len: usize,
    pub value: &'a mut B,
    pub grad: &'a B,
    pub state: &'a mut [B],
}

/// Inverted dropout over the first `len` elements: drop probability `p`, and the
/// key that, with the element index, decides each element (see [`dropout_hash`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub len: usize,
    pub p: f32,
    pub key: u32,
}

/// A batch gathered on the device from a split kept there (see [`DataOps`]):
/// `batch` samples of `size` floats each, one-hot over `classes`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gather {
    pub batch: usize,
    pub size: usize,
    pub classes: usize,
}

/// A training split on the device and the cursor into it. Indices travel as f32
/// (the buffers are f32), exact below 2²⁴ samples.
#[derive(Debug)]
pub struct DataBufs<'a, B> {
    /// `[len, size]` pixel/255.
    pub pixels: &'a B,
    /// `[len]` label indices.
    pub labels: &'a B,
    /// `[len]` the epoch's order: sample indices.
    pub order: &'a B,
    /// [`DATA_STATE_LEN`] floats: the batch offset into `order`, then the steps
    /// logged so far this epoch.
    pub state: &'a B,
}

/// Floats of a data state buffer ([`DataBufs::state`]).
pub const DATA_STATE_LEN: usize = 2;

/// A 2-D batchnorm (per channel over N·H·W): its input shape and constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm2d {
    pub shape: Nchw,
    /// Weight of the batch statistic in the running average (PyTorch: 0.1).
    pub momentum: f32,
    pub eps: f32,
}

/// The sharing step's batched TT-SVD (DESIGN.md §5, steps 2–3): `branches` captured
/// gradients `[out, inp]`, each viewed as the 4-way tensor `dims()` and factorised at
/// maximum TT rank `max_rank` (sharing::ttsvd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtSvd {
    pub branches: usize,
    pub out: usize,
    pub inp: usize,
    pub max_rank: usize,
}

impl TtSvd {
    /// `[n1, n2, n3, n4]`: `sharing::ttsvd::branch_dims(out, inp)`.
    pub fn dims(&self) -> [usize; 4] {
        crate::sharing::ttsvd::branch_dims(self.out, self.inp)
    }
    /// `[1, r1, r2, r3, 1]`, the ranks of the cores `tt_svd` writes
    /// (`sharing::ttsvd::max_ranks`); a TT of lower ranks is zero-padded to them.
    pub fn ranks(&self) -> Vec<usize> {
        crate::sharing::ttsvd::max_ranks(&self.dims(), self.max_rank)
    }
    /// Values of one branch's four cores `[r_k, n_k, r_{k+1}]`, concatenated.
    pub fn core_len(&self) -> usize {
        let (dims, ranks) = (self.dims(), self.ranks());
        (0..4).map(|k| ranks[k] * dims[k] * ranks[k + 1]).sum()
    }
}

/// `B×[out×in] R≤r` (profiles, messages).
impl std::fmt::Display for TtSvd {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (b, o, i, r) = (self.branches, self.out, self.inp, self.max_rank);
        write!(f, "{b}×[{o}×{i}] R≤{r}")
    }
}

/// Memory: what every device does without a kernel of its own.
pub trait Memory: Send + Sync {
    /// A device buffer of f32 (the CPU reference in f64 stores f64).
    type Buf: Send + Sync + 'static;

    /// Short device name for logs: "cpu", "sim", "cuda:0 (NVIDIA H100)".
    fn name(&self) -> String;
    fn zeros(&self, len: usize) -> Self::Buf;
    fn upload(&self, host: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// Copies `host` into the front of `buf` (batch inputs, targets).
    fn write(&self, buf: &mut Self::Buf, host: &[f32]);
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// Waits until every op issued so far has finished (for timing per op); a
    /// device whose ops complete before they return has nothing to wait for.
    fn synchronize(&self) {}

    /// Keeps rows `keep` (strictly increasing) of a `[rows, row_len]` buffer:
    /// row `keep[i]` moves to row `i` and the buffer shrinks to `keep.len()` rows.
    /// Pruning merged branches compacts every `[n_branches, …]` buffer with this.
    /// The default goes through the host; sim and cuda gather the rows on the device
    /// (`launch::gather_rows`).
    fn compact_rows(&self, buf: &mut Self::Buf, row_len: usize, keep: &[usize]) {
        debug_assert!(keep.windows(2).all(|w| w[0] < w[1]));
        let host = self.download(buf);
        let kept: Vec<f32> = keep
            .iter()
            .flat_map(|&k| host[k * row_len..(k + 1) * row_len].iter().copied())
            .collect();
        *buf = self.upload(&kept);
    }

    /// A buffer holding raw 32-bit words (bit patterns: halves of f64 values,
    /// indices) for kernels that read them as `double` / `unsigned`; `words.len()`
    /// elements. The default copies the bits through f32 elements, as sim and cuda
    /// store them; the CPU keeps each word exactly in its float type.
    fn upload_words(&self, words: &[u32]) -> Self::Buf {
        let bits: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
        self.upload(&bits)
    }
    /// The words of a buffer written by `upload_words` or by a kernel.
    fn download_words(&self, buf: &Self::Buf) -> Vec<u32> {
        self.download(buf).iter().map(|v| v.to_bits()).collect()
    }
    /// Bytes free for buffers on the device, when it has a memory of its own (cuda:
    /// the driver's free memory; sim: a stated cap); `None` on the CPU.
    fn free_memory(&self) -> Option<u64> {
        None
    }
}

/// f64 values as the 32-bit words a device buffer holds (low word first, as a
/// `double` lies in little-endian memory).
pub fn words_of_f64(values: &[f64]) -> Vec<u32> {
    values
        .iter()
        .flat_map(|v| {
            let b = v.to_bits();
            [b as u32, (b >> 32) as u32]
        })
        .collect()
}

/// 64-bit values from pairs of words (low word first): f64 bits or u64 keys.
pub fn u64_of_words(words: &[u32]) -> Vec<u64> {
    words
        .chunks_exact(2)
        .map(|w| w[0] as u64 | (w[1] as u64) << 32)
        .collect()
}

/// f64 values from pairs of words (low word first).
pub fn f64_of_words(words: &[u32]) -> Vec<f64> {
    u64_of_words(words)
        .into_iter()
        .map(f64::from_bits)
        .collect()
}

/// Valid, stride-1 2-D convolution (kernels/conv.cu, cpu/conv.rs).
pub trait ConvOps: Memory {
    /// x: `[N, C, H, W]`, p.w: `[K, C, R, R]`, p.b: `[K]` → y: `[N, K, H-R+1, W-R+1]`.
    fn conv2d_forward(&self, s: &Conv2dShape, io: Forward<Self::Buf>);
    /// Given dy: `[N, K, OH, OW]`, writes dw: `[K, C, R, R]`, db: `[K]` and, when
    /// asked for, dx: `[N, C, H, W]`.
    fn conv2d_backward(&self, s: &Conv2dShape, io: Backward<Self::Buf>);
}

/// Batchnorm per channel over N·H·W (kernels/batchnorm.cu, cpu/batchnorm.rs).
pub trait NormOps: Memory {
    /// Training mode: normalises with the batch statistics, writes y and `batch`
    /// (for the backward), and updates the running statistics as PyTorch does:
    /// `running = (1-momentum)·running + momentum·stat`, with the *unbiased* variance.
    fn batchnorm2d_forward_train(
        &self,
        bn: &BatchNorm2d,
        io: Forward<Self::Buf>,
        stats: TrainStats<Self::Buf>,
    );
    /// Evaluation mode: normalises with the running statistics.
    fn batchnorm2d_forward_eval(
        &self,
        bn: &BatchNorm2d,
        io: Forward<Self::Buf>,
        running: RunningStats<&Self::Buf>,
    );
    /// Backward of the training-mode forward (`io.w` = γ): writes dx (always), dγ
    /// into `g.dw` and dβ into `g.db`.
    fn batchnorm2d_backward(
        &self,
        s: &Nchw,
        io: Backward<Self::Buf>,
        batch: BatchStats<&Self::Buf>,
    );
    /// The conv block's training forward after the conv, fused:
    /// `batchnorm2d_forward_train` into `io.y` (the normalised n, kept for the
    /// backward), then `relu_maxpool2x2_forward(n)` into `pooled` `[N, C, ⌊H/2⌋,
    /// ⌊W/2⌋]`, bit for bit those two ops (a kernel device: one launch).
    fn batchnorm2d_relu_maxpool_train(
        &self,
        bn: &BatchNorm2d,
        io: Forward<Self::Buf>,
        pooled: &mut Self::Buf,
        stats: TrainStats<Self::Buf>,
    );
    /// Its backward, fused: `relu_maxpool2x2_backward(n, io.dy)` into `dn` (the
    /// gradient at the normalised n; `io.dy` is the pooled gradient), then
    /// `batchnorm2d_backward` from dn: dn bit for bit, dx, dγ, dβ those two ops' up to
    /// the order of the f32 sums (a kernel device: one launch, summing window by
    /// window; the CPU: the two ops). `io.x` is the batchnorm's input, `io.w` γ.
    fn relu_maxpool_batchnorm2d_backward(
        &self,
        s: &Nchw,
        io: Backward<Self::Buf>,
        n: &Self::Buf,
        dn: &mut Self::Buf,
        batch: BatchStats<&Self::Buf>,
    );
}

/// ReLU and 2×2 max-pooling (kernels/pool.cu, cpu/pool.rs).
pub trait PoolOps: Memory {
    /// y = max(x, 0) over the first `len` elements.
    fn relu_forward(&self, len: usize, x: &Self::Buf, y: &mut Self::Buf);
    /// dx = dy where y > 0, else 0 (y is the forward's output).
    fn relu_backward(&self, len: usize, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
    /// 2×2 max-pool, stride 2: x `[N, C, H, W]` → y `[N, C, ⌊H/2⌋, ⌊W/2⌋]` (an odd
    /// last row or column is dropped, as PyTorch's default floor mode).
    fn maxpool2x2_forward(&self, s: &Nchw, x: &Self::Buf, y: &mut Self::Buf);
    /// Routes dy to the first element of each window that equals the maximum of x
    /// (as PyTorch's CPU kernel does); writes every element of dx.
    fn maxpool2x2_backward(&self, s: &Nchw, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
    /// ReLU then 2×2 max-pool, fused: y = `maxpool2x2_forward(relu_forward(x))` bit
    /// for bit, without storing the ReLU's output.
    fn relu_maxpool2x2_forward(&self, s: &Nchw, x: &Self::Buf, y: &mut Self::Buf);
    /// Its backward, x being the ReLU's input: dx = `relu_backward(r,
    /// maxpool2x2_backward(r, dy))` with r = relu(x), bit for bit.
    fn relu_maxpool2x2_backward(&self, s: &Nchw, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
    /// Global average pooling: x `[N, C, H, W]` → y `[N, C]`, the mean of each plane
    /// (its H·W values summed in order, then scaled by 1/(H·W)).
    fn global_avgpool_forward(&self, s: &Nchw, x: &Self::Buf, y: &mut Self::Buf);
    /// dx `[N, C, H, W]` = dy `[N, C]` / (H·W), spread over each plane.
    fn global_avgpool_backward(&self, s: &Nchw, dy: &Self::Buf, dx: &mut Self::Buf);
}

/// Linear layers batched across branches, see [`LinearShape`] (kernels/linear.cu,
/// cpu/linear.rs).
pub trait LinearOps: Memory {
    fn linear_forward(&self, s: &LinearShape, io: Forward<Self::Buf>);
    /// Writes dw `[branches, out, in]` and db `[branches, out]`; when dx is asked
    /// for, writes dx `[x_branches, batch, in]` as the *sum* over every branch that
    /// reads that input (a shared trunk output gets the gradients of all branches).
    fn linear_backward(&self, s: &LinearShape, io: Backward<Self::Buf>);
}

/// Losses, each writing its gradient w.r.t. the logits (kernels/loss.cu, cpu/loss.rs).
pub trait LossOps: Memory {
    /// Softmax cross-entropy, mean over the batch.
    /// logits: `[N, C]`, targets: `[N, C]` (one-hot rows) → loss: `[1]`, dlogits: `[N, C]`.
    fn softmax_cross_entropy(&self, batch: usize, classes: usize, io: LossIo<Self::Buf>);
    /// Sigmoid binary cross-entropy per task in the stable form
    /// `max(z,0) − z·t + log(1 + exp(−|z|))`, mean over the batch for each task.
    /// logits: `[T, N]` (task-major, as the heads write them), targets: `[N, T]`
    /// → loss: `[T]`, dlogits: `[T, N]`. The training loss is the sum over tasks.
    fn sigmoid_bce(&self, tasks: usize, batch: usize, io: LossIo<Self::Buf>);
    /// Squared error of one regression task, mean over the samples present:
    /// logits, targets: `[N]` (a NaN target is missing) → loss `[1]`, dlogits `[N]`.
    /// `loss = (1/n) Σ (z − t)²`, `dz = 2(z − t)/n`.
    fn mse(&self, batch: usize, io: LossIo<Self::Buf>);
    /// Pairwise logistic ranking loss of one ranking task: over the ordered pairs
    /// (i, j) with `t_i > t_j` (NaN targets compare false: missing),
    /// `loss = (1/P) Σ log(1 + exp(−(z_i − z_j)))`, P the number of pairs.
    /// logits, targets: `[N]` → loss `[1]`, dlogits `[N]`.
    fn pairwise_rank(&self, batch: usize, io: LossIo<Self::Buf>);
}

/// Dropout, inverted (kernels/dropout.cu, cpu/dropout.rs). The mask is a function
/// of (`key`, element index) only — a counter-based hash, the same bits on every
/// device — so a seeded run drops the same elements wherever it runs.
pub trait DropoutOps: Memory {
    /// Training: element i is kept when `dropout_hash(d.key, i) >= threshold(d.p)`;
    /// `mask[i]` = 1/(1−p) if kept else 0, `y = x·mask`, over the first `d.len`.
    fn dropout_forward(&self, d: &Dropout, x: &Self::Buf, mask: &mut Self::Buf, y: &mut Self::Buf);
    /// `dx = dy·mask` (the forward's mask).
    fn dropout_backward(&self, len: usize, mask: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
}

/// Selective Sharing's batched TT-SVD and descriptor distances (kernels/ttsvd.cu,
/// cpu/ttsvd.rs; the CPU's is sharing::ttsvd, the reference).
pub trait TtSvdOps: Memory {
    /// TT-SVD of every branch of grads `[branches, out, inp]`, then the distances
    /// between the unit-norm descriptors. Writes cores `[branches, s.core_len()]` (each
    /// branch's four cores `[r_k, n_k, r_{k+1}]` at the ranks `s.ranks()`,
    /// concatenated) and dist `[branches, branches]`
    /// (`sharing::ttsvd::descriptor_distances`: symmetric, zero diagonal). Cores are
    /// fixed only up to the TT gauge (signs, rotations, zero padding): compare the
    /// tensors they represent, never the cores.
    fn tt_svd(&self, s: &TtSvd, grads: &Self::Buf, cores: &mut Self::Buf, dist: &mut Self::Buf);

    /// The sharing step's `[branches, branches]` distances on the host, what HDBSCAN
    /// reads: `tt_svd` on the device, then only dist is downloaded. The CPU overrides
    /// it with its f64 path, so the reference's distances are not rounded to f32.
    /// Panics on a non-finite distance (a diverged gradient), as `tt_svd` does on the CPU.
    fn branch_distances(&self, s: &TtSvd, grads: &Self::Buf) -> Vec<f64> {
        let mut cores = self.zeros(s.branches * s.core_len());
        let mut dist = self.zeros(s.branches * s.branches);
        self.tt_svd(s, grads, &mut cores, &mut dist);
        let dist = self.download(&dist);
        if let Some(i) = dist.iter().position(|d| !d.is_finite()) {
            panic!(
                "tt_svd on {}: distance {} at [{}, {}] of {s}; the captured gradients must be finite",
                self.name(),
                dist[i],
                i / s.branches,
                i % s.branches
            );
        }
        dist[..s.branches * s.branches]
            .iter()
            .map(|&d| d as f64)
            .collect()
    }
}

/// Sizes of the mutual-reachability ops (HDBSCAN on the device, kernels/mreach.cu):
/// n points in d dimensions, the k of the core distance and the length of each
/// point's nearest list (`cap` = min(k + 2, n) for the balls; at most
/// `MREACH_MAX_CAP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mreach {
    pub n: usize,
    pub d: usize,
    pub k: usize,
    pub cap: usize,
}

/// Most entries of a nearest list on the device (one per lane of a warp).
pub const MREACH_MAX_CAP: usize = 32;

/// No edge / no component (a 64-bit key of all ones).
pub const MREACH_NONE: u64 = u64::MAX;

impl std::fmt::Display for Mreach {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "n={} d={} k={} cap={}", self.n, self.d, self.k, self.cap)
    }
}

/// `mreach_knn`'s nearest lists, as `mreach_round` reads them: sq `[n, cap]` f64,
/// idx `[n, cap]` u32.
pub struct Nearest<'a, Buf> {
    pub sq: &'a Buf,
    pub idx: &'a Buf,
}

/// HDBSCAN's core distances and Borůvka rounds (kernels/mreach.cu, cpu/mreach.rs;
/// the host loop is sharing::hdbscan::device). Buffers hold words (`upload_words`):
/// f64 and u64 as two words each, indices as one. Points are `xt` `[d, n]` f64 (the
/// points transposed). Squared distances are `distance::euclidean`'s ordered sums bit
/// for bit, so everything below is exact, ties included.
pub trait MreachOps: Memory {
    /// The `cap` nearest points of every point, itself included, by (squared
    /// distance, index) ascending: near_sq `[n, cap]` f64, near_idx `[n, cap]` u32;
    /// core `[n]` f64 = sqrt(near_sq[i, k]) (the k-th nearest *other* point, as
    /// `distance::core_distances` counts).
    fn mreach_knn(
        &self,
        s: &Mreach,
        xt: &Self::Buf,
        near_sq: &mut Self::Buf,
        near_idx: &mut Self::Buf,
        core: &mut Self::Buf,
    );
    /// One Borůvka round. comp `[n]` u32: each point's component id (< n); core
    /// `[n]` f64; near: `mreach_knn`'s lists (they let most points of
    /// small components skip the scan of all points; the result is the same without
    /// them, as the CPU twin computes it). Writes comp_edge `[n]` u64: for each component id c, its lightest
    /// outgoing edge a << 32 | b (a < b) under the total order (m(a, b), a, b), m the
    /// mutual reachability; `MREACH_NONE` for ids that are no component or have no
    /// outgoing edge.
    fn mreach_round(
        &self,
        s: &Mreach,
        xt: &Self::Buf,
        core: &Self::Buf,
        near: Nearest<'_, Self::Buf>,
        comp: &Self::Buf,
        comp_edge: &mut Self::Buf,
    );
}

/// The hash behind dropout's mask (kernels/dropout.cu: ssk_dropout_hash, the same
/// integer steps): a 32-bit finaliser of `key` and the element index.
pub fn dropout_hash(key: u32, i: u32) -> u32 {
    let mut x = i.wrapping_mul(0x9E37_79B9) ^ key;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

/// The hash value below which dropout drops an element: `p·2³²`, clamped.
pub fn dropout_threshold(p: f32) -> u32 {
    (p as f64 * 4_294_967_296.0).clamp(0.0, u32::MAX as f64) as u32
}

/// Batches built on the device (kernels/data.cu, cpu/data.rs): the split and the
/// epoch's order live there, so a recorded step needs no host → device copy.
pub trait DataOps: Memory {
    /// With `off = state[0]`: row `r < g.batch` of `x` (`[batch, size]`) is
    /// `pixels[order[off + r]]`, of `targets` (`[batch, classes]`) the one-hot of
    /// `labels[order[off + r]]` (what `train::Inputs::gather` builds on the host).
    fn gather_batch(
        &self,
        g: &Gather,
        data: DataBufs<Self::Buf>,
        x: &mut Self::Buf,
        targets: &mut Self::Buf,
    );
    /// One thread, after a step of `(tasks, batch)`: with `s = state[1]`,
    /// `log[s·tasks + t] = loss[t]`
    /// for `t < tasks`; then `state[0] += batch`, `state[1] += 1`.
    fn advance_batch(
        &self,
        tasks_batch: (usize, usize),
        loss: &Self::Buf,
        state: &mut Self::Buf,
        log: &mut Self::Buf,
    );
}

/// Parameter updates (kernels/optim.cu and memory.cu, cpu/optim.rs).
pub trait OptimOps: Memory {
    /// Starts a step: advances the step counter of `hyper` ([`Hyper`]) and writes
    /// this step's step size (and Adam's bias correction) from it and the lr there.
    fn optim_prepare(&self, step: &OptimStep, hyper: &mut Self::Buf);
    /// One update of every tensor of `params` from its gradient, with this step's
    /// values read from `hyper` ([`Hyper`]); each `state` holds the optimiser's
    /// buffers (SGD: `[velocity]`, Adam: `[m, v]`). A kernel device updates them
    /// all in one multi-tensor launch (per `SSK_MAX_TENSORS` tensors).
    fn optim_step(&self, step: &OptimStep, hyper: &Self::Buf, params: &mut [ParamBufs<Self::Buf>]);
    /// `y[..len] += alpha · x` (the gradient capture accumulates with this).
    fn axpy(&self, alpha: f32, x: &Self::Buf, y: &mut Self::Buf, len: usize);
}

/// Launch programs (`launch::Program`): a training step recorded once and replayed
/// every step. The CPU has none: it runs its ops as they come.
pub trait ProgramOps: Memory {
    type Program: Send + Sync;
    /// Runs `f`, recording the launches its ops make: the program, or None on a
    /// device without programs.
    fn record(&self, f: &mut dyn FnMut()) -> Option<Self::Program>;
    /// Runs a recorded program again.
    ///
    /// # Safety
    /// Every buffer the recording touched must still be alive at the size it had
    /// (pruning reallocates the branch buffers: record again).
    unsafe fn replay(&self, program: &Self::Program);
    /// Kernel launches per replay.
    fn program_launches(program: &Self::Program) -> usize;
}

/// The op surface the model is written against: every family above. A device
/// implements the families; `Backend` follows.
pub trait Backend:
    ConvOps
    + NormOps
    + PoolOps
    + LinearOps
    + LossOps
    + OptimOps
    + DropoutOps
    + DataOps
    + TtSvdOps
    + MreachOps
    + ProgramOps
{
}

impl<D> Backend for D where
    D: ConvOps
        + NormOps
        + PoolOps
        + LinearOps
        + LossOps
        + OptimOps
        + DropoutOps
        + DataOps
        + TtSvdOps
        + MreachOps
        + ProgramOps
{
}

/// The op traits, for code that calls ops on a concrete device (`Cpu`, `Sim`):
/// `use sskernel::backend::ops::*`. Code generic over `B: Backend` needs none of it.
pub mod ops {
    pub use super::{
        Backend, ConvOps, DataOps, DropoutOps, LinearOps, LossOps, Memory, MreachOps, NormOps,
        OptimOps, PoolOps, ProgramOps, TtSvdOps,
    };
}

/// The `--device` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when a driver and a device are present, else the CPU (and say which).
    Auto,
    Cuda,
    Cpu,
    /// The CUDA kernels compiled for the CPU (kernel simulator).
    Sim,
}

/// Work that runs on whichever backend `--device` picks (the backends differ in
/// their buffer type, so the choice is made once, here, and the work is generic).
pub trait OnDevice {
    type Output;
    /// The kernel files the work launches (`["mreach.cu"]`); `None`, all of them.
    /// The cuda device loads only these (module loading is part of its start).
    const KERNEL_FILES: Option<&'static [&'static str]> = None;
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<Self::Output>;
}

/// Runs `work` on the backend `--device` names. `auto` picks CUDA when a driver, a
/// device and the kernels (NVRTC or cached cubins) are there, else the CPU, and
/// says which and why; `cuda` without them is refused plainly.
pub fn on_device<W: OnDevice>(choice: DeviceChoice, work: W) -> anyhow::Result<W::Output> {
    match choice {
        DeviceChoice::Cpu => work.run(&cpu::Cpu),
        DeviceChoice::Auto => match cuda::Cuda::with_kernel_files(W::KERNEL_FILES) {
            Ok(dev) => {
                eprintln!("--device auto: picked {}", dev.name());
                work.run(&dev)
            }
            Err(e) => {
                // The outer message only (e.g. "no CUDA driver"); --device cuda shows it all.
                eprintln!("--device auto: picked cpu ({e})");
                work.run(&cpu::Cpu)
            }
        },
        DeviceChoice::Sim => work.run(&sim::Sim::new()?),
        DeviceChoice::Cuda => {
            let dev = cuda::Cuda::with_kernel_files(W::KERNEL_FILES)
                .map_err(|e| anyhow::anyhow!("--device cuda: no CUDA backend available: {e:#}"))?;
            eprintln!("--device cuda: {}", dev.name());
            work.run(&dev)
        }
    }
}
