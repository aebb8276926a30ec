//! Launch plans: the one place that, for every op of the op-family traits
//! (`ConvOps`, `NormOps`, …), names the kernels of kernels/*.cu and computes their
//! grid, block, dynamic shared memory and argument list (in the kernel's parameter
//! order). One file per family, as in kernels/ and cpu/; the geometry a kernel
//! expects is documented above the kernel and matched here. The `sim` and `cuda`
//! devices execute the same plans through [`KernelDevice::execute`].
//!
//! A plan is generic over the device's buffer type `B`; outputs are passed as
//! shared references too, because a kernel writes through a device pointer (the
//! executor holds the `&mut` the trait method received).

use super::kernels::{geometry, KernelInfo, ParamKind};
use super::{profile, Memory, ProgramOps};
pub use program::{Program, Recorder};
use std::ffi::c_void;
use std::time::Instant;

/// Block size of elementwise and per-channel kernels.
pub const BLOCK: u32 = 256;
/// Side of the output tile of the GEMM core (common.cuh: SSK_TILE).
pub const TILE: usize = geometry::SSK_TILE;
/// Largest branch count of one branch-batched launch (common.cuh: SSK_MAX_BRANCHES).
pub const MAX_BRANCHES: usize = geometry::SSK_MAX_BRANCHES;
/// Length of [`KernelDevice::counters`] (u32 counters).
pub const COUNTERS: usize = 4096;
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
    /// A struct by value that points at buffers (a multi-tensor launch's
    /// `SskTensorList`): its bytes, and each buffer it points to as (device
    /// address, length in floats), which the simulator guard-checks like a buffer
    /// argument's.
    Table {
        bytes: Vec<u8>,
        bufs: Vec<(u64, usize)>,
    },
    /// A buffer by device address and length in floats, as a recorded
    /// [`Program`] holds it.
    Ptr {
        addr: u64,
        len: usize,
    },
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
    pub(crate) fn one(l: Launch<'a, B>) -> Self {
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
    /// The buffer arguments (`Arg::Buf`, `Arg::Scratch`, `Arg::Ptr`, and the `Arg::Table`s
    /// that point at buffers) with their parameter names: the simulator checks their
    /// guard zones after the launch.
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
            Arg::Buf(_) | Arg::Scratch(_) | Arg::Ptr { .. } => {
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
            Arg::Table { .. } => {
                buffers.push((p.name, a));
                ParamKind::Bytes
            }
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
            Arg::Buf(_) | Arg::Scratch(_) | Arg::Ptr { .. } => {
                next_pointer.next().expect("one per buffer") as *const u64 as *mut c_void
            }
            Arg::I32(_) | Arg::F32(_) => {
                next_scalar.next().expect("one per scalar") as *const u32 as *mut c_void
            }
            Arg::Bytes(b) | Arg::Table { bytes: b, .. } => b.as_ptr() as *mut c_void,
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

/// Block of the GEMM core: SSK_GEMM_THREADS × SSK_GEMM_THREADS threads.
const GEMM_BLOCK: [u32; 3] = [
    geometry::SSK_GEMM_THREADS as u32,
    geometry::SSK_GEMM_THREADS as u32,
    1,
];

fn gemm_grid(cols: usize, rows: usize, z: usize) -> [u32; 3] {
    [dim(cols.div_ceil(TILE)), dim(rows.div_ceil(TILE)), dim(z)]
}

/// Split-K (common.cuh: `ssk_split_k_last`; the linear forward and dx, the conv
/// forward): a GEMM of fewer than `SPLIT_TARGET` output tiles cuts its K into
/// slices of at least `SPLIT_MIN_K`, so that its grid nears `SPLIT_TARGET` blocks (a
/// GPU's SM count, about) and no block runs a long serial K loop. MNIST at batch 64:
/// fc1 (10 tiles, K 640) 10 slices; the branches' first layer (20 tiles, K 640) 7,
/// its dx (10 tiles, K 10 branches · 100) 13; conv2 (64 tiles, K 500) 2, its
/// backward-data (72 tiles of 32 × 128, K 1000) 2; the small layers and conv1 (576
/// tiles) none.
const SPLIT_TARGET: usize = 128;
const SPLIT_MIN_K: usize = 64;

/// (slices, slice_k) of a GEMM with `tiles` output tiles and reduction length `k`:
/// slices of slice_k (a multiple of the core's K stage), the last one shorter;
/// (1, k) without a split.
fn split_k(tiles: usize, k: usize) -> (usize, usize) {
    let want = SPLIT_TARGET.div_ceil(tiles.max(1)).min(k / SPLIT_MIN_K);
    if want <= 1 || tiles > COUNTERS {
        return (1, k);
    }
    let slice_k = k.div_ceil(want).next_multiple_of(geometry::SSK_TILE_K);
    (k.div_ceil(slice_k), slice_k)
}

/// A split-K kernel's workspace and counters arguments (`ws`, `counters`): split,
/// a new scratch buffer of `plan` for the partials of `tiles` tiles (a GEMM block's
/// worth of registers per tile and slice: 4096 floats, 64 × 64 or 32 × 128 outputs);
/// not split, `stand_in`, a buffer of the launch the kernel then does not touch.
fn split_k_args<'a, D: KernelDevice>(
    dev: &'a D,
    plan: &mut Plan<'a, D::Buf>,
    tiles: usize,
    slices: usize,
    stand_in: &'a D::Buf,
) -> [Arg<'a, D::Buf>; 2] {
    let ws = if slices > 1 {
        plan.scratch.push(tiles * slices * TILE * TILE);
        Arg::Scratch(plan.scratch.len() - 1)
    } else {
        Arg::Buf(stand_in)
    };
    [ws, Arg::Buf(dev.counters())]
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

/// One thread: the small serial kernels that update a device-side state buffer
/// (optim_prepare, advance_batch), so a recorded step program needs no host values.
fn one_thread<'a, B>(kernel: &'static str, args: Vec<Arg<'a, B>>) -> Plan<'a, B> {
    Plan::one(Launch {
        kernel,
        grid: [1, 1, 1],
        block: [1, 1, 1],
        shared_bytes: 0,
        args,
    })
}

/// One block of `BLOCK` threads per item (channel, task, …).
fn block_per<'a, B>(
    kernel: &'static str,
    items: usize,
    shared_bytes: u32,
    args: Vec<Arg<'a, B>>,
) -> Launch<'a, B> {
    Launch {
        kernel,
        grid: [dim(items), 1, 1],
        block: [BLOCK, 1, 1],
        shared_bytes,
        args,
    }
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

/// `dst` row i = `src` row `keep[i]`, rows of `row_len` floats (memory.cu:
/// ssk_gather_rows): what a kernel device's `Memory::compact_rows` runs, into a new
/// buffer of `keep.len()` rows. At most [`MAX_BRANCHES`] kept rows.
pub fn gather_rows<'a, B>(src: &'a B, dst: &'a B, row_len: usize, keep: &[usize]) -> Plan<'a, B> {
    let mut grid = stride_grid(row_len);
    grid[1] = dim(keep.len());
    Plan::one(Launch {
        kernel: "ssk_gather_rows",
        grid,
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
        args: vec![
            Arg::Buf(src),
            Arg::Buf(dst),
            branch_map(keep),
            Arg::I32(i32_of(row_len, "row_len")),
        ],
    })
}

/// A device that runs kernels/*.cu: its [`Memory`] and the execution of a
/// [`Plan`]. Every op family is then implemented once, for all such devices, by
/// building its plan (conv.rs, batchnorm.rs, … in this folder); `sim` and `cuda`
/// differ only in how they allocate and launch.
pub trait KernelDevice: Memory {
    /// Runs every launch of `plan` in order (outputs are written through device
    /// pointers, so the plan holds shared references to them).
    fn launch_plan(&self, plan: &Plan<'_, Self::Buf>);

    /// The device address of a buffer's data (what a kernel receives).
    fn address(&self, buf: &Self::Buf) -> u64;

    /// The device's recorder of launch programs ([`program`]).
    fn recorder(&self) -> &Recorder<Self::Buf>;

    /// [`COUNTERS`] u32 counters, zero from the device's start and zero between
    /// launches: a kernel that counts blocks in them (linear.cu's split-K: the last
    /// block of a tile reduces) sets its counters back to 0 before it ends. Launches
    /// run one after another (one stream; a graph of it is a chain), so one set
    /// serves every launch and every recorded program.
    fn counters(&self) -> &Self::Buf;

    /// Replays a recorded program (cuda: as a CUDA graph).
    ///
    /// # Safety
    /// Every buffer the recording touched must still be alive at the size it had.
    unsafe fn run_program(&self, program: &Program<Self::Buf>) {
        self.launch_plan(&program.plan);
    }

    /// [`Self::launch_plan`], returning each launch's time in ms as the device
    /// measures it, where it has a clock of its own (cuda: events); `None` (the
    /// default, sim) runs nothing.
    fn launch_plan_timed(&self, _plan: &Plan<'_, Self::Buf>) -> Option<Vec<f64>> {
        None
    }

    /// What the op families call: [`Self::launch_plan`], appended to the program
    /// being recorded, if any. While [`profile`] is on, timed and recorded: per
    /// launch under its kernel and grid where the device times launches itself,
    /// else as a whole (synchronised before and after) under the plan's kernels.
    fn execute(&self, plan: &Plan<'_, Self::Buf>) {
        self.recorder().append(self, plan);
        if !profile::is_on() {
            return self.launch_plan(plan);
        }
        self.synchronize();
        if let Some(times) = self.launch_plan_timed(plan) {
            for ((kernel, shape), ms) in launch_rows(&plan.launches).into_iter().zip(times) {
                profile::record(kernel.to_string(), shape, ms);
            }
            return;
        }
        let started = Instant::now();
        self.launch_plan(plan);
        self.synchronize();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let kernels: Vec<&str> = plan.launches.iter().map(|l| l.kernel).collect();
        let grids: Vec<String> = plan.launches.iter().map(|l| grid_text(l.grid)).collect();
        profile::record(kernels.join("+"), grids.join(" + "), ms);
    }
}

impl<D: KernelDevice> ProgramOps for D {
    type Program = Program<D::Buf>;

    fn record(&self, f: &mut dyn FnMut()) -> Option<Program<D::Buf>> {
        self.recorder().start();
        f();
        Some(self.recorder().finish())
    }

    unsafe fn replay(&self, program: &Program<D::Buf>) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.run_program(program) }
    }

    fn program_launches(program: &Program<D::Buf>) -> usize {
        program.launches()
    }
}

/// The profile's row of each launch timed on its own: its kernel and grid, and for
/// a kernel the plan launches more than once (the TT-SVD's steps) which of them.
fn launch_rows<B>(launches: &[Launch<'_, B>]) -> Vec<(&'static str, String)> {
    launches
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let same = |k: &Launch<'_, B>| k.kernel == l.kernel;
            let of = launches.iter().filter(|k| same(k)).count();
            let nth = launches[..i].iter().filter(|k| same(k)).count() + 1;
            let mut shape = grid_text(l.grid);
            if of > 1 {
                shape += &format!(" ({nth} of {of})");
            }
            (l.kernel, shape)
        })
        .collect()
}

/// A grid as `x×y×z` blocks, trailing 1s left out.
fn grid_text(grid: [u32; 3]) -> String {
    let last = grid.iter().rposition(|&g| g != 1).unwrap_or(0);
    let dims: Vec<String> = grid[..=last].iter().map(u32::to_string).collect();
    format!("{} blocks", dims.join("×"))
}

mod batchnorm;
mod conv;
mod data;
mod dropout;
mod linear;
mod loss;
mod mreach;
mod optim;
mod pool;
mod program;
mod ttsvd;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_k_covers_k_in_whole_stages() {
        // MNIST MTL at batch 64: fc1, the branches' first layer and its dx, conv2.
        assert_eq!(split_k(10, 640), (10, 64));
        assert_eq!(split_k(20, 640), (7, 96));
        assert_eq!(split_k(10, 1000), (13, 80));
        assert_eq!(split_k(64, 500), (2, 256));
        // Short K or many tiles: no split.
        assert_eq!(split_k(10, 100), (1, 100));
        assert_eq!(split_k(200, 4096), (1, 4096));
        assert_eq!(split_k(576, 25), (1, 25));
        assert_eq!(split_k(1, 65), (1, 65));
        for (tiles, k) in [(1, 130), (3, 300), (1, 4099), (7, 170)] {
            let (slices, slice_k) = split_k(tiles, k);
            assert!(slices > 1, "{tiles} {k}");
            assert_eq!(slice_k % geometry::SSK_TILE_K, 0, "{tiles} {k}");
            assert!(
                (slices - 1) * slice_k < k && slices * slice_k >= k,
                "{tiles} {k}"
            );
        }
    }

    #[test]
    fn a_kernel_launched_twice_gets_a_row_per_launch() {
        let launch = |kernel, grid| Launch::<'_, ()> {
            kernel,
            grid,
            block: [256, 1, 1],
            shared_bytes: 0,
            args: vec![],
        };
        let plan = [
            launch("widen", [1024, 1, 1]),
            launch("step", [10, 1, 1]),
            launch("step", [10, 1, 1]),
            launch("inner", [10, 10, 1]),
        ];
        assert_eq!(
            launch_rows(&plan),
            vec![
                ("widen", "1024 blocks".to_string()),
                ("step", "10 blocks (1 of 2)".to_string()),
                ("step", "10 blocks (2 of 2)".to_string()),
                ("inner", "10×10 blocks".to_string()),
            ]
        );
    }
}
