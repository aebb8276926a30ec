//! Launch plans: the one place that, for every op of [`Backend`](super::Backend),
//! names the kernels of kernels/*.cu and computes their grid, block, dynamic shared
//! memory and argument list (in the kernel's parameter order). The `sim` device
//! executes these plans today, `cuda` will execute the same ones; the geometry a
//! kernel expects is documented above the kernel and matched here.
//!
//! A plan is generic over the device's buffer type `B`; outputs are passed as
//! shared references too, because a kernel writes through a device pointer (the
//! executor holds the `&mut` the trait method received).

use super::{Conv2dShape, LinearShape, Nchw, OptimStep};

/// Block size of elementwise and per-channel kernels.
pub const BLOCK: u32 = 256;
/// Side of the output tile of the GEMM core (common.cuh: SSK_TILE), block 16×16.
pub const TILE: usize = 32;
/// Largest branch count of one branch-batched launch (common.cuh: SSK_MAX_BRANCHES).
pub const MAX_BRANCHES: usize = 256;
/// Images per partial sum of the conv weight gradient (split-K over the batch).
pub const CONV_IMAGES_PER_PART: usize = 8;
/// Upper bound on blocks of a grid-stride elementwise launch.
const MAX_GRID_STRIDE_BLOCKS: usize = 1024;

/// One kernel argument, in parameter order.
#[derive(Debug)]
pub enum Arg<'a, B> {
    Buf(&'a B),
    /// Scratch buffer `i` of the plan (`Plan::scratch[i]` floats).
    Scratch(usize),
    I32(i32),
    F32(f32),
    /// A struct by value, e.g. `BranchMap` (its bytes, in C layout).
    Bytes(Vec<u8>),
}

#[derive(Debug)]
pub struct Launch<'a, B> {
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub args: Vec<Arg<'a, B>>,
}

impl<B> Launch<'_, B> {
    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&g| g as u64).product()
    }
}

/// The launches of one op, in order, and the scratch buffers (lengths in floats)
/// they share; a launch with an empty grid is left out.
#[derive(Debug)]
pub struct Plan<'a, B> {
    pub scratch: Vec<usize>,
    pub launches: Vec<Launch<'a, B>>,
}

impl<'a, B> Plan<'a, B> {
    fn new() -> Self {
        Self {
            scratch: Vec::new(),
            launches: Vec::new(),
        }
    }
    fn push(&mut self, l: Launch<'a, B>) {
        if l.blocks() > 0 {
            self.launches.push(l);
        }
    }
    fn one(l: Launch<'a, B>) -> Self {
        let mut p = Self::new();
        p.push(l);
        p
    }
}

fn i32_of(v: usize, what: &str) -> i32 {
    i32::try_from(v).unwrap_or_else(|_| panic!("{what} = {v} does not fit the kernels' int"))
}

fn dim(v: usize) -> u32 {
    u32::try_from(v).expect("grid dimension fits u32")
}

/// Grid of a grid-stride loop over `n` elements.
fn stride_grid(n: usize) -> [u32; 3] {
    [
        dim(n.div_ceil(BLOCK as usize).min(MAX_GRID_STRIDE_BLOCKS)),
        1,
        1,
    ]
}

const GEMM_BLOCK: [u32; 3] = [16, 16, 1];

fn gemm_grid(cols: usize, rows: usize, z: usize) -> [u32; 3] {
    [dim(cols.div_ceil(TILE)), dim(rows.div_ceil(TILE)), dim(z)]
}

fn elementwise<'a, B>(kernel: &'static str, n: usize, args: Vec<Arg<'a, B>>) -> Plan<'a, B> {
    Plan::one(Launch {
        kernel,
        grid: stride_grid(n),
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args,
    })
}

/// `BranchMap` of common.cuh: `int of[256]`, entries past `x_of.len()` zero.
fn branch_map<'a, B>(x_of: &[usize]) -> Arg<'a, B> {
    assert!(
        x_of.len() <= MAX_BRANCHES,
        "{} branches: a branch-batched launch takes at most {MAX_BRANCHES}",
        x_of.len()
    );
    let mut bytes = vec![0u8; 4 * MAX_BRANCHES];
    for (chunk, &i) in bytes.chunks_mut(4).zip(x_of) {
        chunk.copy_from_slice(&i32_of(i, "x_of").to_ne_bytes());
    }
    Arg::Bytes(bytes)
}

// ---- memory ----

/// `y[..len] += alpha · x` (memory.cu: ssk_axpy).
pub fn axpy<'a, B>(alpha: f32, x: &'a B, y: &'a B, len: usize) -> Plan<'a, B> {
    let n = i32_of(len, "len");
    elementwise(
        "ssk_axpy",
        len,
        vec![Arg::Buf(y), Arg::Buf(x), Arg::F32(alpha), Arg::I32(n)],
    )
}

/// `y[..len] = value` (memory.cu: ssk_fill).
pub fn fill<'a, B>(y: &'a B, value: f32, len: usize) -> Plan<'a, B> {
    let n = i32_of(len, "len");
    elementwise(
        "ssk_fill",
        len,
        vec![Arg::Buf(y), Arg::F32(value), Arg::I32(n)],
    )
}

// ---- convolution (conv.cu) ----

fn conv_dims<'a, B>(s: &Conv2dShape) -> Vec<Arg<'a, B>> {
    vec![
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.in_channels, "in_channels")),
        Arg::I32(i32_of(s.height, "height")),
        Arg::I32(i32_of(s.width, "width")),
        Arg::I32(i32_of(s.out_channels, "out_channels")),
        Arg::I32(i32_of(s.kernel, "kernel")),
    ]
}

pub fn conv2d_forward<'a, B>(
    s: &Conv2dShape,
    x: &'a B,
    w: &'a B,
    b: &'a B,
    y: &'a B,
) -> Plan<'a, B> {
    let p = s.out_height() * s.out_width();
    let mut args = vec![Arg::Buf(x), Arg::Buf(w), Arg::Buf(b), Arg::Buf(y)];
    args.extend(conv_dims(s));
    Plan::one(Launch {
        kernel: "conv2d_forward",
        grid: gemm_grid(s.batch * p, s.out_channels, 1),
        block: GEMM_BLOCK,
        shared_bytes: 0,
        args,
    })
}

/// dx (when given) by backward-data; dw by per-image-group partials summed in
/// order (scratch 0); db by a block per channel.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<'a, B>(
    s: &Conv2dShape,
    x: &'a B,
    w: &'a B,
    dy: &'a B,
    dx: Option<&'a B>,
    dw: &'a B,
    db: &'a B,
) -> Plan<'a, B> {
    let mut plan = Plan::new();
    let p = s.out_height() * s.out_width();
    let crr = s.in_channels * s.kernel * s.kernel;
    if let Some(dx) = dx {
        let mut args = vec![Arg::Buf(w), Arg::Buf(dy), Arg::Buf(dx)];
        args.extend(conv_dims(s));
        plan.push(Launch {
            kernel: "conv2d_backward_data",
            grid: gemm_grid(s.batch * s.height * s.width, s.in_channels, 1),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        });
    }
    let parts = s.batch.div_ceil(CONV_IMAGES_PER_PART);
    let w_len = s.out_channels * crr;
    plan.scratch.push(parts * w_len);
    let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Scratch(0)];
    args.extend(conv_dims(s));
    args.push(Arg::I32(CONV_IMAGES_PER_PART as i32));
    plan.push(Launch {
        kernel: "conv2d_backward_weight",
        grid: gemm_grid(crr, s.out_channels, parts),
        block: GEMM_BLOCK,
        shared_bytes: 0,
        args,
    });
    plan.push(Launch {
        kernel: "ssk_sum_partials",
        grid: stride_grid(w_len),
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args: vec![
            Arg::Buf(dw),
            Arg::Scratch(0),
            Arg::I32(i32_of(w_len, "weights")),
            Arg::I32(i32_of(parts, "parts")),
        ],
    });
    plan.push(Launch {
        kernel: "conv2d_backward_bias",
        grid: [dim(s.out_channels), 1, 1],
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args: vec![
            Arg::Buf(dy),
            Arg::Buf(db),
            Arg::I32(i32_of(s.batch, "batch")),
            Arg::I32(i32_of(s.out_channels, "out_channels")),
            Arg::I32(i32_of(p, "pixels")),
        ],
    });
    plan
}

// ---- batchnorm (batchnorm.cu) ----

fn nchw_dims<'a, B>(s: &Nchw) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.channels, "channels")),
        Arg::I32(i32_of(s.height * s.width, "height·width")),
    ]
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm2d_forward_train<'a, B>(
    s: &Nchw,
    x: &'a B,
    gamma: &'a B,
    beta: &'a B,
    y: &'a B,
    mean: &'a B,
    inv_std: &'a B,
    running_mean: &'a B,
    running_var: &'a B,
    momentum: f32,
    eps: f32,
) -> Plan<'a, B> {
    let mut args = vec![
        Arg::Buf(x),
        Arg::Buf(gamma),
        Arg::Buf(beta),
        Arg::Buf(y),
        Arg::Buf(mean),
        Arg::Buf(inv_std),
        Arg::Buf(running_mean),
        Arg::Buf(running_var),
    ];
    args.extend(nchw_dims(s));
    args.extend([Arg::F32(momentum), Arg::F32(eps)]);
    Plan::one(Launch {
        kernel: "batchnorm2d_forward_train",
        grid: [dim(s.channels), 1, 1],
        block: [BLOCK, 1, 1],
        // The block-sum scratch: one float per warp, 32 at most.
        shared_bytes: 32 * 4,
        args,
    })
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm2d_forward_eval<'a, B>(
    s: &Nchw,
    x: &'a B,
    gamma: &'a B,
    beta: &'a B,
    running_mean: &'a B,
    running_var: &'a B,
    eps: f32,
    y: &'a B,
) -> Plan<'a, B> {
    let mut args = vec![
        Arg::Buf(x),
        Arg::Buf(gamma),
        Arg::Buf(beta),
        Arg::Buf(running_mean),
        Arg::Buf(running_var),
        Arg::Buf(y),
    ];
    args.extend(nchw_dims(s));
    args.push(Arg::F32(eps));
    elementwise("batchnorm2d_forward_eval", s.len(), args)
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm2d_backward<'a, B>(
    s: &Nchw,
    x: &'a B,
    gamma: &'a B,
    mean: &'a B,
    inv_std: &'a B,
    dy: &'a B,
    dx: &'a B,
    dgamma: &'a B,
    dbeta: &'a B,
) -> Plan<'a, B> {
    let mut args = vec![
        Arg::Buf(x),
        Arg::Buf(gamma),
        Arg::Buf(mean),
        Arg::Buf(inv_std),
        Arg::Buf(dy),
        Arg::Buf(dx),
        Arg::Buf(dgamma),
        Arg::Buf(dbeta),
    ];
    args.extend(nchw_dims(s));
    Plan::one(Launch {
        kernel: "batchnorm2d_backward",
        grid: [dim(s.channels), 1, 1],
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args,
    })
}

// ---- elementwise and pooling (pool.cu) ----

pub fn relu_forward<'a, B>(len: usize, x: &'a B, y: &'a B) -> Plan<'a, B> {
    let n = i32_of(len, "len");
    elementwise(
        "relu_forward",
        len,
        vec![Arg::Buf(x), Arg::Buf(y), Arg::I32(n)],
    )
}

pub fn relu_backward<'a, B>(len: usize, y: &'a B, dy: &'a B, dx: &'a B) -> Plan<'a, B> {
    let n = i32_of(len, "len");
    elementwise(
        "relu_backward",
        len,
        vec![Arg::Buf(y), Arg::Buf(dy), Arg::Buf(dx), Arg::I32(n)],
    )
}

fn pool_dims<'a, B>(s: &Nchw) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch * s.channels, "planes")),
        Arg::I32(i32_of(s.height, "height")),
        Arg::I32(i32_of(s.width, "width")),
    ]
}

pub fn maxpool2x2_forward<'a, B>(s: &Nchw, x: &'a B, y: &'a B) -> Plan<'a, B> {
    let out = s.batch * s.channels * (s.height / 2) * (s.width / 2);
    let mut args = vec![Arg::Buf(x), Arg::Buf(y)];
    args.extend(pool_dims(s));
    elementwise("maxpool2x2_forward", out, args)
}

/// The forward output `y` is not needed: the kernel recomputes each window's
/// argmax from x (as the CPU path does).
pub fn maxpool2x2_backward<'a, B>(s: &Nchw, x: &'a B, dy: &'a B, dx: &'a B) -> Plan<'a, B> {
    let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Buf(dx)];
    args.extend(pool_dims(s));
    elementwise("maxpool2x2_backward", s.len(), args)
}

// ---- linear, batched across branches (linear.cu) ----

fn linear_dims<'a, B>(s: &LinearShape) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.in_features, "in_features")),
        Arg::I32(i32_of(s.out_features, "out_features")),
    ]
}

fn check_linear(s: &LinearShape) {
    assert_eq!(s.x_of.len(), s.branches, "x_of has one entry per branch");
    assert!(
        s.x_of.iter().all(|&i| i < s.x_branches),
        "x_of[o] < x_branches"
    );
}

pub fn linear_forward<'a, B>(
    s: &LinearShape,
    x: &'a B,
    w: &'a B,
    b: &'a B,
    y: &'a B,
) -> Plan<'a, B> {
    check_linear(s);
    let mut args = vec![
        Arg::Buf(x),
        Arg::Buf(w),
        Arg::Buf(b),
        Arg::Buf(y),
        branch_map(&s.x_of),
    ];
    args.extend(linear_dims(s));
    Plan::one(Launch {
        kernel: "linear_forward",
        grid: gemm_grid(s.out_features, s.batch, s.branches),
        block: GEMM_BLOCK,
        shared_bytes: 0,
        args,
    })
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward<'a, B>(
    s: &LinearShape,
    x: &'a B,
    w: &'a B,
    dy: &'a B,
    dx: Option<&'a B>,
    dw: &'a B,
    db: &'a B,
) -> Plan<'a, B> {
    check_linear(s);
    let mut plan = Plan::new();
    if let Some(dx) = dx {
        let mut args = vec![
            Arg::Buf(w),
            Arg::Buf(dy),
            Arg::Buf(dx),
            branch_map(&s.x_of),
            Arg::I32(i32_of(s.branches, "branches")),
        ];
        args.extend(linear_dims(s));
        plan.push(Launch {
            kernel: "linear_backward_data",
            grid: gemm_grid(s.in_features, s.batch, s.x_branches),
            block: GEMM_BLOCK,
            shared_bytes: 0,
            args,
        });
    }
    let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Buf(dw), branch_map(&s.x_of)];
    args.extend(linear_dims(s));
    plan.push(Launch {
        kernel: "linear_backward_weight",
        grid: gemm_grid(s.in_features, s.out_features, s.branches),
        block: GEMM_BLOCK,
        shared_bytes: 0,
        args,
    });
    let bias = s.branches * s.out_features;
    plan.push(Launch {
        kernel: "linear_backward_bias",
        grid: stride_grid(bias),
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args: vec![
            Arg::Buf(dy),
            Arg::Buf(db),
            Arg::I32(i32_of(s.branches, "branches")),
            Arg::I32(i32_of(s.batch, "batch")),
            Arg::I32(i32_of(s.out_features, "out_features")),
        ],
    });
    plan
}

// ---- losses (loss.cu) ----

pub fn softmax_cross_entropy<'a, B>(
    batch: usize,
    classes: usize,
    logits: &'a B,
    targets: &'a B,
    loss: &'a B,
    dlogits: &'a B,
) -> Plan<'a, B> {
    Plan::one(Launch {
        kernel: "softmax_cross_entropy",
        grid: [1, 1, 1],
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args: vec![
            Arg::Buf(logits),
            Arg::Buf(targets),
            Arg::Buf(loss),
            Arg::Buf(dlogits),
            Arg::I32(i32_of(batch, "batch")),
            Arg::I32(i32_of(classes, "classes")),
        ],
    })
}

pub fn sigmoid_bce<'a, B>(
    tasks: usize,
    batch: usize,
    logits: &'a B,
    targets: &'a B,
    loss: &'a B,
    dlogits: &'a B,
) -> Plan<'a, B> {
    Plan::one(Launch {
        kernel: "sigmoid_bce",
        grid: [dim(tasks), 1, 1],
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args: vec![
            Arg::Buf(logits),
            Arg::Buf(targets),
            Arg::Buf(loss),
            Arg::Buf(dlogits),
            Arg::I32(i32_of(tasks, "tasks")),
            Arg::I32(i32_of(batch, "batch")),
        ],
    })
}

// ---- optimiser (optim.cu) ----

/// `state`: SGD `[velocity]`, Adam `[m, v]`. Adam's bias corrections are computed
/// here in f64, as the CPU path (and PyTorch, in Python floats) does.
pub fn optim_step<'a, B>(
    step: &OptimStep,
    len: usize,
    param: &'a B,
    grad: &'a B,
    state: &'a [B],
) -> Plan<'a, B> {
    let n = i32_of(len, "len");
    match *step {
        OptimStep::Sgd { lr, momentum } => {
            assert!(!state.is_empty(), "SGD needs state [velocity]");
            elementwise(
                "sgd_step",
                len,
                vec![
                    Arg::Buf(param),
                    Arg::Buf(grad),
                    Arg::Buf(&state[0]),
                    Arg::F32(lr),
                    Arg::F32(momentum),
                    Arg::I32(n),
                ],
            )
        }
        OptimStep::Adam {
            lr,
            beta1,
            beta2,
            eps,
            step,
        } => {
            let [m, v, ..] = state else {
                panic!("Adam needs state [m, v], got {} buffers", state.len());
            };
            assert!(step >= 1, "Adam steps count from 1");
            let t = step as i32;
            let bc1 = 1.0 - (beta1 as f64).powi(t);
            let bc2 = 1.0 - (beta2 as f64).powi(t);
            elementwise(
                "adam_step",
                len,
                vec![
                    Arg::Buf(param),
                    Arg::Buf(grad),
                    Arg::Buf(m),
                    Arg::Buf(v),
                    Arg::F32((lr as f64 / bc1) as f32),
                    Arg::F32(bc2.sqrt() as f32),
                    Arg::F32(beta1),
                    Arg::F32(beta2),
                    Arg::F32(eps),
                    Arg::I32(n),
                ],
            )
        }
    }
}

/// kernels/*.cu and *.cuh, embedded for the NVRTC path: `(file name, source)`.
pub mod sources {
    include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));
}

/// The ops of a device that runs kernels/*.cu, for use inside its `impl Backend`:
/// each op is its launch plan, handed to the device's `execute(&Plan)`. Written once
/// here so `sim` and `cuda` cannot drift apart.
macro_rules! ops_by_launch_plans {
    () => {
        fn axpy(&self, alpha: f32, x: &Self::Buf, y: &mut Self::Buf, len: usize) {
            self.execute(&$crate::backend::launch::axpy(alpha, x, y, len));
        }

        fn conv2d_forward(
            &self,
            s: &$crate::backend::Conv2dShape,
            x: &Self::Buf,
            w: &Self::Buf,
            b: &Self::Buf,
            y: &mut Self::Buf,
        ) {
            self.execute(&$crate::backend::launch::conv2d_forward(s, x, w, b, y));
        }
        fn conv2d_backward(
            &self,
            s: &$crate::backend::Conv2dShape,
            x: &Self::Buf,
            w: &Self::Buf,
            dy: &Self::Buf,
            dx: Option<&mut Self::Buf>,
            dw: &mut Self::Buf,
            db: &mut Self::Buf,
        ) {
            let dx = dx.map(|d| &*d);
            self.execute(&$crate::backend::launch::conv2d_backward(
                s, x, w, dy, dx, dw, db,
            ));
        }

        fn batchnorm2d_forward_train(
            &self,
            s: &$crate::backend::Nchw,
            x: &Self::Buf,
            gamma: &Self::Buf,
            beta: &Self::Buf,
            y: &mut Self::Buf,
            mean: &mut Self::Buf,
            inv_std: &mut Self::Buf,
            running_mean: &mut Self::Buf,
            running_var: &mut Self::Buf,
            momentum: f32,
            eps: f32,
        ) {
            self.execute(&$crate::backend::launch::batchnorm2d_forward_train(
                s,
                x,
                gamma,
                beta,
                y,
                mean,
                inv_std,
                running_mean,
                running_var,
                momentum,
                eps,
            ));
        }
        fn batchnorm2d_forward_eval(
            &self,
            s: &$crate::backend::Nchw,
            x: &Self::Buf,
            gamma: &Self::Buf,
            beta: &Self::Buf,
            running_mean: &Self::Buf,
            running_var: &Self::Buf,
            eps: f32,
            y: &mut Self::Buf,
        ) {
            self.execute(&$crate::backend::launch::batchnorm2d_forward_eval(
                s,
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                eps,
                y,
            ));
        }
        fn batchnorm2d_backward(
            &self,
            s: &$crate::backend::Nchw,
            x: &Self::Buf,
            gamma: &Self::Buf,
            mean: &Self::Buf,
            inv_std: &Self::Buf,
            dy: &Self::Buf,
            dx: &mut Self::Buf,
            dgamma: &mut Self::Buf,
            dbeta: &mut Self::Buf,
        ) {
            self.execute(&$crate::backend::launch::batchnorm2d_backward(
                s, x, gamma, mean, inv_std, dy, dx, dgamma, dbeta,
            ));
        }

        fn relu_forward(&self, len: usize, x: &Self::Buf, y: &mut Self::Buf) {
            self.execute(&$crate::backend::launch::relu_forward(len, x, y));
        }
        fn relu_backward(&self, len: usize, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) {
            self.execute(&$crate::backend::launch::relu_backward(len, y, dy, dx));
        }
        fn maxpool2x2_forward(&self, s: &$crate::backend::Nchw, x: &Self::Buf, y: &mut Self::Buf) {
            self.execute(&$crate::backend::launch::maxpool2x2_forward(s, x, y));
        }
        fn maxpool2x2_backward(
            &self,
            s: &$crate::backend::Nchw,
            x: &Self::Buf,
            _y: &Self::Buf,
            dy: &Self::Buf,
            dx: &mut Self::Buf,
        ) {
            self.execute(&$crate::backend::launch::maxpool2x2_backward(s, x, dy, dx));
        }

        fn linear_forward(
            &self,
            s: &$crate::backend::LinearShape,
            x: &Self::Buf,
            w: &Self::Buf,
            b: &Self::Buf,
            y: &mut Self::Buf,
        ) {
            self.execute(&$crate::backend::launch::linear_forward(s, x, w, b, y));
        }
        fn linear_backward(
            &self,
            s: &$crate::backend::LinearShape,
            x: &Self::Buf,
            w: &Self::Buf,
            dy: &Self::Buf,
            dx: Option<&mut Self::Buf>,
            dw: &mut Self::Buf,
            db: &mut Self::Buf,
        ) {
            let dx = dx.map(|d| &*d);
            self.execute(&$crate::backend::launch::linear_backward(
                s, x, w, dy, dx, dw, db,
            ));
        }

        fn softmax_cross_entropy(
            &self,
            batch: usize,
            classes: usize,
            logits: &Self::Buf,
            targets: &Self::Buf,
            loss: &mut Self::Buf,
            dlogits: &mut Self::Buf,
        ) {
            self.execute(&$crate::backend::launch::softmax_cross_entropy(
                batch, classes, logits, targets, loss, dlogits,
            ));
        }
        fn sigmoid_bce(
            &self,
            tasks: usize,
            batch: usize,
            logits: &Self::Buf,
            targets: &Self::Buf,
            loss: &mut Self::Buf,
            dlogits: &mut Self::Buf,
        ) {
            self.execute(&$crate::backend::launch::sigmoid_bce(
                tasks, batch, logits, targets, loss, dlogits,
            ));
        }

        fn optim_step(
            &self,
            step: &$crate::backend::OptimStep,
            len: usize,
            param: &mut Self::Buf,
            grad: &Self::Buf,
            state: &mut [Self::Buf],
        ) {
            self.execute(&$crate::backend::launch::optim_step(
                step, len, param, grad, state,
            ));
        }
    };
}
pub(crate) use ops_by_launch_plans;
