//! Launch plans: the one place that, for every op of [`Backend`](super::Backend),
//! names the kernels of kernels/*.cu and computes their grid, block, dynamic shared
//! memory and argument list (in the kernel's parameter order). The `sim` device
//! executes these plans today, `cuda` will execute the same ones; the geometry a
//! kernel expects is documented above the kernel and matched here.
//!
//! A plan is generic over the device's buffer type `B`; outputs are passed as
//! shared references too, because a kernel writes through a device pointer (the
//! executor holds the `&mut` the trait method received).

use super::kernels::{KernelInfo, ParamKind};
use super::{Backend, Conv2dShape, LinearShape, Nchw, OptimStep};
use std::ffi::c_void;

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

/// A launch's arguments as cuLaunchKernel takes them: `args()` is the `void**`
/// array, one pointer per parameter to that argument's value. The values live in
/// this struct (heap storage that moving it does not move) or, for structs passed
/// by value, in the plan it borrows; the array is valid while both live.
pub struct Packed<'p, 'a, B> {
    args: Vec<*mut c_void>,
    /// The buffer arguments (`Arg::Buf`, `Arg::Scratch`) with their parameter
    /// names: the simulator checks their guard zones after the launch.
    pub buffers: Vec<(&'static str, &'p Arg<'a, B>)>,
    _pointers: Vec<u64>,
    _scalars: Vec<u32>,
}

impl<B> Packed<'_, '_, B> {
    pub fn args(&self) -> *const *mut c_void {
        self.args.as_ptr()
    }

    /// The same array, for APIs that take it mutably (cudarc's `launch_kernel`).
    pub fn args_mut(&mut self) -> &mut Vec<*mut c_void> {
        &mut self.args
    }
}

/// Packs launch `l` of kernel `info` on `device` ("sim", "cuda"): checks the
/// argument count and each argument's kind against the kernel's parsed signature
/// (panicking with the kernel's, file's and parameter's names) and lays the values
/// out as cuLaunchKernel's `void**`. `address` gives a buffer argument's device
/// address. The one packer of both kernel devices.
pub fn pack<'p, 'a, B>(
    device: &str,
    l: &'p Launch<'a, B>,
    info: &KernelInfo,
    address: impl Fn(&Arg<'a, B>) -> u64,
) -> Packed<'p, 'a, B> {
    assert_eq!(
        info.params.len(),
        l.args.len(),
        "{device}: kernel `{}` ({}) takes {} arguments, the plan passes {}",
        info.name,
        info.file,
        info.params.len(),
        l.args.len()
    );
    let mut pointers = Vec::new();
    let mut scalars = Vec::new();
    let mut buffers = Vec::new();
    for (a, p) in l.args.iter().zip(info.params) {
        let kind = match a {
            Arg::Buf(_) | Arg::Scratch(_) => {
                pointers.push(address(a));
                buffers.push((p.name, a));
                ParamKind::Ptr
            }
            Arg::I32(v) => {
                scalars.push(*v as u32);
                ParamKind::I32
            }
            Arg::F32(v) => {
                scalars.push(v.to_bits());
                ParamKind::F32
            }
            Arg::Bytes(_) => ParamKind::Bytes,
        };
        assert_eq!(
            kind, p.kind,
            "{device}: kernel `{}` parameter `{} {}` gets a {kind:?} argument",
            info.name, p.ty, p.name
        );
    }
    // The vectors are complete: pointers into their heap storage stay valid.
    let (mut next_pointer, mut next_scalar) = (pointers.iter(), scalars.iter());
    let args = l
        .args
        .iter()
        .map(|a| match a {
            Arg::Buf(_) | Arg::Scratch(_) => {
                next_pointer.next().expect("one per buffer") as *const u64 as *mut c_void
            }
            Arg::I32(_) | Arg::F32(_) => {
                next_scalar.next().expect("one per scalar") as *const u32 as *mut c_void
            }
            Arg::Bytes(b) => b.as_ptr() as *mut c_void,
        })
        .collect();
    Packed {
        args,
        buffers,
        _pointers: pointers,
        _scalars: scalars,
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

// ---- batchnorm (batchnorm.cu) ----

fn nchw_dims<'a, B>(s: &Nchw) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch, "batch")),
        Arg::I32(i32_of(s.channels, "channels")),
        Arg::I32(i32_of(s.height * s.width, "height·width")),
    ]
}

// ---- elementwise and pooling (pool.cu) ----

fn pool_dims<'a, B>(s: &Nchw) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch * s.channels, "planes")),
        Arg::I32(i32_of(s.height, "height")),
        Arg::I32(i32_of(s.width, "width")),
    ]
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

// ---- losses (loss.cu) ----

// ---- optimiser (optim.cu) ----

/// A device that runs kernels/*.cu: memory, and the execution of a [`Plan`].
/// Every op of [`Backend`] is then a plan, built once below for all such devices;
/// `sim` and `cuda` differ only in how they allocate and launch.
pub trait KernelDevice: Send + Sync {
    type Buf: Send + Sync;
    /// Short device name for logs ("sim", "cuda:0 (…)").
    fn name(&self) -> String;
    fn zeros(&self, len: usize) -> Self::Buf;
    fn upload(&self, host: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// Copies `host` into the front of `buf`.
    fn write(&self, buf: &mut Self::Buf, host: &[f32]);
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// Runs every launch of `plan` in order (outputs are written through device
    /// pointers, so the plan holds shared references to them).
    fn execute(&self, plan: &Plan<'_, Self::Buf>);
    /// Waits for every queued launch (a device that launches asynchronously).
    fn synchronize(&self) {}
}

/// Each op: the kernels it launches, their grid, block, dynamic shared memory and
/// arguments in parameter order (the geometry each kernel expects is documented
/// above it in kernels/*.cu).
impl<D: KernelDevice> Backend for D {
    type Buf = D::Buf;

    fn name(&self) -> String {
        KernelDevice::name(self)
    }
    fn zeros(&self, len: usize) -> D::Buf {
        KernelDevice::zeros(self, len)
    }
    fn upload(&self, host: &[f32]) -> D::Buf {
        KernelDevice::upload(self, host)
    }
    fn download(&self, buf: &D::Buf) -> Vec<f32> {
        KernelDevice::download(self, buf)
    }
    fn write(&self, buf: &mut D::Buf, host: &[f32]) {
        KernelDevice::write(self, buf, host)
    }
    fn buf_len(&self, buf: &D::Buf) -> usize {
        KernelDevice::buf_len(self, buf)
    }
    fn synchronize(&self) {
        KernelDevice::synchronize(self)
    }

    /// `y[..len] += alpha · x` (memory.cu: ssk_axpy).
    fn axpy(&self, alpha: f32, x: &D::Buf, y: &mut D::Buf, len: usize) {
        let y = &*y;
        let plan = {
            let n = i32_of(len, "len");
            elementwise(
                "ssk_axpy",
                len,
                vec![Arg::Buf(y), Arg::Buf(x), Arg::F32(alpha), Arg::I32(n)],
            )
        };
        self.execute(&plan);
    }

    fn conv2d_forward(&self, s: &Conv2dShape, x: &D::Buf, w: &D::Buf, b: &D::Buf, y: &mut D::Buf) {
        let y = &*y;
        let plan = {
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
        };
        self.execute(&plan);
    }

    /// dx (when given) by backward-data; dw by per-image-group partials summed in
    /// order (scratch 0); db by a block per channel.
    fn conv2d_backward(
        &self,
        s: &Conv2dShape,
        x: &D::Buf,
        w: &D::Buf,
        dy: &D::Buf,
        dx: Option<&mut D::Buf>,
        dw: &mut D::Buf,
        db: &mut D::Buf,
    ) {
        let dx = dx.map(|d| &*d);
        let dw = &*dw;
        let db = &*db;
        let plan = {
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
        };
        self.execute(&plan);
    }

    fn batchnorm2d_forward_train(
        &self,
        s: &Nchw,
        x: &D::Buf,
        gamma: &D::Buf,
        beta: &D::Buf,
        y: &mut D::Buf,
        mean: &mut D::Buf,
        inv_std: &mut D::Buf,
        running_mean: &mut D::Buf,
        running_var: &mut D::Buf,
        momentum: f32,
        eps: f32,
    ) {
        let y = &*y;
        let mean = &*mean;
        let inv_std = &*inv_std;
        let running_mean = &*running_mean;
        let running_var = &*running_var;
        let plan = {
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
        };
        self.execute(&plan);
    }

    fn batchnorm2d_forward_eval(
        &self,
        s: &Nchw,
        x: &D::Buf,
        gamma: &D::Buf,
        beta: &D::Buf,
        running_mean: &D::Buf,
        running_var: &D::Buf,
        eps: f32,
        y: &mut D::Buf,
    ) {
        let y = &*y;
        let plan = {
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
        };
        self.execute(&plan);
    }

    fn batchnorm2d_backward(
        &self,
        s: &Nchw,
        x: &D::Buf,
        gamma: &D::Buf,
        mean: &D::Buf,
        inv_std: &D::Buf,
        dy: &D::Buf,
        dx: &mut D::Buf,
        dgamma: &mut D::Buf,
        dbeta: &mut D::Buf,
    ) {
        let dx = &*dx;
        let dgamma = &*dgamma;
        let dbeta = &*dbeta;
        let plan = {
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
        };
        self.execute(&plan);
    }

    fn relu_forward(&self, len: usize, x: &D::Buf, y: &mut D::Buf) {
        let y = &*y;
        let plan = {
            let n = i32_of(len, "len");
            elementwise(
                "relu_forward",
                len,
                vec![Arg::Buf(x), Arg::Buf(y), Arg::I32(n)],
            )
        };
        self.execute(&plan);
    }

    fn relu_backward(&self, len: usize, y: &D::Buf, dy: &D::Buf, dx: &mut D::Buf) {
        let dx = &*dx;
        let plan = {
            let n = i32_of(len, "len");
            elementwise(
                "relu_backward",
                len,
                vec![Arg::Buf(y), Arg::Buf(dy), Arg::Buf(dx), Arg::I32(n)],
            )
        };
        self.execute(&plan);
    }

    fn maxpool2x2_forward(&self, s: &Nchw, x: &D::Buf, y: &mut D::Buf) {
        let y = &*y;
        let plan = {
            let out = s.batch * s.channels * (s.height / 2) * (s.width / 2);
            let mut args = vec![Arg::Buf(x), Arg::Buf(y)];
            args.extend(pool_dims(s));
            elementwise("maxpool2x2_forward", out, args)
        };
        self.execute(&plan);
    }

    /// The forward output `y` is not needed: the kernel recomputes each window's
    /// argmax from x (as the CPU path does).
    fn maxpool2x2_backward(&self, s: &Nchw, x: &D::Buf, _y: &D::Buf, dy: &D::Buf, dx: &mut D::Buf) {
        let dx = &*dx;
        let plan = {
            let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Buf(dx)];
            args.extend(pool_dims(s));
            elementwise("maxpool2x2_backward", s.len(), args)
        };
        self.execute(&plan);
    }

    fn linear_forward(&self, s: &LinearShape, x: &D::Buf, w: &D::Buf, b: &D::Buf, y: &mut D::Buf) {
        let y = &*y;
        let plan = {
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
        };
        self.execute(&plan);
    }

    fn linear_backward(
        &self,
        s: &LinearShape,
        x: &D::Buf,
        w: &D::Buf,
        dy: &D::Buf,
        dx: Option<&mut D::Buf>,
        dw: &mut D::Buf,
        db: &mut D::Buf,
    ) {
        let dx = dx.map(|d| &*d);
        let dw = &*dw;
        let db = &*db;
        let plan = {
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
        };
        self.execute(&plan);
    }

    fn softmax_cross_entropy(
        &self,
        batch: usize,
        classes: usize,
        logits: &D::Buf,
        targets: &D::Buf,
        loss: &mut D::Buf,
        dlogits: &mut D::Buf,
    ) {
        let loss = &*loss;
        let dlogits = &*dlogits;
        let plan = {
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
        };
        self.execute(&plan);
    }

    fn sigmoid_bce(
        &self,
        tasks: usize,
        batch: usize,
        logits: &D::Buf,
        targets: &D::Buf,
        loss: &mut D::Buf,
        dlogits: &mut D::Buf,
    ) {
        let loss = &*loss;
        let dlogits = &*dlogits;
        let plan = {
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
        };
        self.execute(&plan);
    }

    /// `state`: SGD `[velocity]`, Adam `[m, v]`. Adam's bias corrections are computed
    /// here in f64, as the CPU path (and PyTorch, in Python floats) does.
    fn optim_step(
        &self,
        step: &OptimStep,
        len: usize,
        param: &mut D::Buf,
        grad: &D::Buf,
        state: &mut [D::Buf],
    ) {
        let param = &*param;
        let state = &*state;
        let plan = {
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
        };
        self.execute(&plan);
    }
}
