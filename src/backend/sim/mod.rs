//! The kernel simulator (`--device sim`): kernels/*.cu compiled as C++ by build.rs
//! with kernels/sim.h, launched through the same plans (`backend::launch`) the CUDA
//! backend will use. The threads of a block run as fibers with real barriers
//! (kernels/sim_runtime.cpp); blocks are spread over rayon's threads.
//!
//! Buffers are host allocations with guard zones of [`GUARD`] floats on each side,
//! filled with a NaN canary (so an out-of-bounds *read* yields NaN too). After every
//! launch the guards of every buffer argument are checked; an out-of-bounds write
//! panics with the kernel's and the parameter's name (the `Backend` methods return
//! `()`, and this is a debugging device: a panic with a clear message is the error).
//! Scratch buffers a plan asks for are allocated per op and poisoned with NaN.

use super::kernels::{KernelInfo, KERNELS};
use super::launch::{self, Arg, KernelDevice, Launch, Plan};
use super::Memory;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// `void ssk_tramp_<kernel>(void** args)`: unpacks cuLaunchKernel-style arguments.
pub type Trampoline = unsafe extern "C" fn(*const *mut c_void);

mod trampolines {
    use super::Trampoline;
    include!(concat!(env!("OUT_DIR"), "/sim_trampolines.rs"));
}

/// One launch as kernels/sim_runtime.cpp takes it (`ssk_sim_launch`, same layout).
#[repr(C)]
struct SimLaunch {
    entry: Trampoline,
    args: *const *mut c_void,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    seed: u64,
    tf32: c_int,
}

extern "C" {
    /// Runs blocks `block_begin..block_end` of `launch` on this OS thread; on a
    /// failure returns non-zero with the block in `failed_block` and a
    /// NUL-terminated message in `err`.
    fn ssk_sim_run_blocks(
        launch: *const SimLaunch,
        block_begin: u64,
        block_end: u64,
        failed_block: *mut u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// Floats of guard zone before and after every buffer.
pub const GUARD: usize = 64;
/// The canary: a quiet NaN with a payload no arithmetic produces.
const CANARY: u32 = 0xFFC0_5A5A;

/// A guarded host allocation of `len` f32: `[GUARD canary | data | GUARD canary]`.
pub struct SimBuf {
    /// Start of the allocation (the front guard).
    base: NonNull<f32>,
    len: usize,
}

// SAFETY: SimBuf owns its allocation; kernels write through raw pointers only while
// the Backend method that received the buffer (by & or &mut) is running.
unsafe impl Send for SimBuf {}
unsafe impl Sync for SimBuf {}

impl SimBuf {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align((len + 2 * GUARD) * 4, 64).expect("buffer size")
    }

    fn new(len: usize, fill: f32) -> Self {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (2·GUARD floats at least).
        let raw = unsafe { std::alloc::alloc(layout) } as *mut f32;
        let base = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let buf = Self { base, len };
        // SAFETY: the allocation holds len + 2·GUARD floats.
        let all = unsafe { std::slice::from_raw_parts_mut(raw, len + 2 * GUARD) };
        all.fill(f32::from_bits(CANARY));
        all[GUARD..GUARD + len].fill(fill);
        buf
    }

    /// Device pointer of the data.
    fn ptr(&self) -> *mut f32 {
        // SAFETY: GUARD floats into the allocation.
        unsafe { self.base.as_ptr().add(GUARD) }
    }

    fn data(&self) -> &[f32] {
        // SAFETY: len floats of data after the front guard.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }

    fn data_mut(&mut self) -> &mut [f32] {
        // SAFETY: as above, and &mut self excludes every other access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }

    /// The first changed guard float: (after the data?, offset from the data's edge).
    #[cfg(test)]
    fn guard_damage(&self) -> Option<(bool, usize)> {
        // SAFETY: the data and its guards are this buffer's allocation.
        unsafe { guard_damage(self.ptr(), self.len) }
    }
}

/// The first changed guard float around the `len` floats at `data`: (after the
/// data?, offset from the data's edge).
///
/// # Safety
/// `data` is the data pointer of a live `SimBuf` of `len` floats.
unsafe fn guard_damage(data: *const f32, len: usize) -> Option<(bool, usize)> {
    // SAFETY: both guards lie inside the buffer's allocation (the caller's contract).
    let all = unsafe { std::slice::from_raw_parts(data.sub(GUARD), len + 2 * GUARD) };
    let front = &all[..GUARD];
    let back = &all[GUARD + len..];
    if let Some(i) = back.iter().position(|v| v.to_bits() != CANARY) {
        return Some((true, i));
    }
    front
        .iter()
        .rposition(|v| v.to_bits() != CANARY)
        .map(|i| (false, GUARD - i))
}

impl Drop for SimBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.base.as_ptr() as *mut u8, Self::layout(self.len)) };
    }
}

impl std::fmt::Debug for SimBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimBuf({} floats)", self.len)
    }
}

/// The simulator device.
pub struct Sim {
    kernels: HashMap<&'static str, (&'static KernelInfo, Trampoline)>,
    seed: u64,
    launches: AtomicU64,
    /// `Memory::write` calls (host → device copies) so far.
    writes: AtomicU64,
    /// `Memory::download` calls (device → host copies) so far.
    reads: AtomicU64,
    recorder: launch::Recorder<SimBuf>,
    /// The GEMM core's TF32 variant (emulated: kernels/sim.h).
    tf32: bool,
    /// `KernelDevice::counters`.
    counters: SimBuf,
}

/// The argument pointer array handed to the trampolines from several threads.
struct ArgPtrs(*const *mut c_void);
// SAFETY: the array and the values it points at outlive the launch and are only read.
unsafe impl Sync for ArgPtrs {}

impl ArgPtrs {
    fn as_ptr(&self) -> *const *mut c_void {
        self.0
    }
}

impl Sim {
    /// The simulator with its kernel table. The fiber resume order of every block is
    /// shuffled from a seed: `SSKERNEL_SIM_SEED` (default 0) mixed with the launch count.
    /// `SSKERNEL_TF32=1` selects the TF32 variant of the GEMM core.
    pub fn new() -> anyhow::Result<Self> {
        let seed = match std::env::var("SSKERNEL_SIM_SEED") {
            Ok(s) => s
                .parse()
                .map_err(|e| anyhow::anyhow!("SSKERNEL_SIM_SEED={s:?} is not a u64: {e}"))?,
            Err(_) => 0,
        };
        let tf32 = super::kernels::tf32_requested();
        if tf32 {
            eprintln!("sim: TF32 tensor-core GEMM on (SSKERNEL_TF32, emulated)");
        }
        Ok(Self::with_seed(seed).with_tf32(tf32))
    }

    /// The same simulator with the GEMM core's TF32 variant on or off.
    pub fn with_tf32(mut self, on: bool) -> Self {
        self.tf32 = on;
        self
    }

    pub fn with_seed(seed: u64) -> Self {
        assert_eq!(KERNELS.len(), trampolines::TRAMPOLINES.len());
        let kernels = KERNELS
            .iter()
            .zip(trampolines::TRAMPOLINES)
            .map(|(k, &entry)| (k.name, (k, entry)))
            .collect();
        Self {
            kernels,
            seed,
            launches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            recorder: launch::Recorder::default(),
            tf32: false,
            counters: SimBuf::new(launch::COUNTERS, 0.0),
        }
    }

    /// Kernel launches run so far (the replay test counts a step's with it).
    pub fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// Host → device copies (`Memory::write`) so far: a replayed step makes none.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Device → host copies (`Memory::download`) so far: the trainer reads the loss
    /// log a few times a second, not every step.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The parsed signature of a kernel, if it exists.
    pub fn kernel(&self, name: &str) -> Option<&'static KernelInfo> {
        self.kernel_entry(name).map(|(info, _)| info)
    }

    fn kernel_entry(&self, name: &str) -> Option<(&'static KernelInfo, Trampoline)> {
        self.kernels.get(name).copied()
    }

    /// Runs every launch of a plan in order, checking every buffer's guards after
    /// each. Panics (naming the kernel) on a bad argument list, a failed block or
    /// an out-of-bounds write.
    pub fn launch_plan(&self, plan: &Plan<'_, SimBuf>) {
        let scratch: Vec<SimBuf> = plan
            .scratch
            .iter()
            .map(|&len| SimBuf::new(len, f32::NAN))
            .collect();
        for l in &plan.launches {
            self.launch(l, &scratch);
        }
    }

    fn launch(&self, l: &Launch<'_, SimBuf>, scratch: &[SimBuf]) {
        let (info, entry) = self
            .kernel_entry(l.kernel)
            .unwrap_or_else(|| panic!("sim: no kernel `{}` in kernels/*.cu", l.kernel));
        /// A buffer argument's data pointer and length in floats.
        fn buffer(a: &Arg<'_, SimBuf>, scratch: &[SimBuf]) -> (*mut f32, usize) {
            match a {
                Arg::Buf(b) => (b.ptr(), b.len),
                Arg::Scratch(i) => (scratch[*i].ptr(), scratch[*i].len),
                Arg::Ptr { addr, len } => (*addr as *mut f32, *len),
                _ => unreachable!("only buffer arguments have addresses"),
            }
        }
        let packed = launch::pack("sim", l, info, |a| buffer(a, scratch).0 as u64);
        let args = ArgPtrs(packed.args());
        let blocks = l.blocks();
        let seed = self.seed
            ^ self
                .launches
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Contiguous ranges of blocks, a few per OS thread.
        let chunks = (rayon::current_num_threads() as u64 * 4).min(blocks).max(1);
        let per = blocks.div_ceil(chunks);
        let failures: Vec<(u64, String)> = (0..chunks)
            .into_par_iter()
            .filter_map(|c| {
                let (begin, end) = (c * per, ((c + 1) * per).min(blocks));
                if begin >= end {
                    return None;
                }
                let mut err = [0 as c_char; 512];
                let mut failed = 0u64;
                // SAFETY: the trampoline matches the kernel's signature (checked
                // above against the parsed parameter list) and every argument
                // pointer is alive until this call returns.
                let launch = SimLaunch {
                    entry,
                    args: args.as_ptr(),
                    grid: l.grid,
                    block: l.block,
                    shared_bytes: l.shared_bytes,
                    seed,
                    tf32: self.tf32 as c_int,
                };
                let rc = unsafe {
                    ssk_sim_run_blocks(
                        &launch,
                        begin,
                        end,
                        &mut failed,
                        err.as_mut_ptr(),
                        err.len(),
                    )
                };
                (rc != 0).then(|| {
                    // SAFETY: the runtime writes a NUL-terminated message.
                    let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
                    (failed, msg.to_string_lossy().into_owned())
                })
            })
            .collect();
        if let Some((b, msg)) = failures.first() {
            let [gx, gy, _] = l.grid.map(|g| g as u64);
            panic!(
                "sim: kernel `{}` ({}) failed in block ({}, {}, {}) of grid {:?}, block {:?}: {msg}",
                info.name,
                info.file,
                b % gx,
                (b / gx) % gy,
                b / (gx * gy),
                l.grid,
                l.block
            );
        }
        let spans = packed.buffers.iter().flat_map(|(name, arg)| match arg {
            Arg::Table { bufs, .. } => bufs
                .iter()
                .map(|&(a, l)| (*name, a as *mut f32, l))
                .collect(),
            _ => {
                let (data, len) = buffer(arg, scratch);
                vec![(*name, data, len)]
            }
        });
        for (name, data, len) in spans {
            // SAFETY: a buffer argument is a live SimBuf: a borrowed one, the plan's
            // scratch, one a table points at (its plan borrows it), or one a program
            // was recorded on (`ProgramOps::replay`'s contract).
            if let Some((after, at)) = unsafe { guard_damage(data, len) } {
                let index = if after {
                    format!("{}", len + at)
                } else {
                    format!("-{at}")
                };
                panic!(
                    "sim: kernel `{}` ({}) wrote out of bounds of its argument `{name}` \
                     ({} floats): the guard zone {} the data changed, first at index {index}",
                    info.name,
                    info.file,
                    len,
                    if after { "after" } else { "before" },
                );
            }
        }
    }
}

/// The memory the simulator offers as "device memory" (`Memory::free_memory`): 4 GiB.
pub const SIM_MEMORY_BYTES: u64 = 4 << 30;

impl Memory for Sim {
    type Buf = SimBuf;

    fn name(&self) -> String {
        "sim".to_string()
    }

    fn zeros(&self, len: usize) -> SimBuf {
        SimBuf::new(len, 0.0)
    }
    fn upload(&self, host: &[f32]) -> SimBuf {
        let mut b = SimBuf::new(host.len(), 0.0);
        b.data_mut().copy_from_slice(host);
        b
    }
    fn download(&self, buf: &SimBuf) -> Vec<f32> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        buf.data().to_vec()
    }
    fn write(&self, buf: &mut SimBuf, host: &[f32]) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        buf.data_mut()[..host.len()].copy_from_slice(host);
    }
    fn buf_len(&self, buf: &SimBuf) -> usize {
        buf.len
    }
    /// The simulator's buffers are host memory; it states a cap like a device's.
    fn free_memory(&self) -> Option<u64> {
        Some(SIM_MEMORY_BYTES)
    }

    /// On the device: the kept rows are gathered into a new buffer of their size
    /// (`launch::gather_rows`); nothing goes through the host.
    fn compact_rows(&self, buf: &mut SimBuf, row_len: usize, keep: &[usize]) {
        debug_assert!(keep.windows(2).all(|w| w[0] < w[1]));
        let kept = self.zeros(keep.len() * row_len);
        self.execute(&launch::gather_rows(buf, &kept, row_len, keep));
        *buf = kept;
    }
}

impl KernelDevice for Sim {
    fn launch_plan(&self, plan: &Plan<'_, SimBuf>) {
        Sim::launch_plan(self, plan)
    }
    fn address(&self, buf: &SimBuf) -> u64 {
        buf.ptr() as u64
    }
    fn recorder(&self) -> &launch::Recorder<SimBuf> {
        &self.recorder
    }
    fn counters(&self) -> &SimBuf {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kernels::ParamKind;

    #[test]
    fn every_kernel_is_in_the_table_with_its_signature() {
        let sim = Sim::with_seed(0);
        let k = sim.kernel("linear_forward").expect("linear_forward");
        assert_eq!(k.file, "linear.cu");
        let kinds: Vec<ParamKind> = k.params.iter().map(|p| p.kind).collect();
        use ParamKind::*;
        // x, w, b, y, the split-K workspace and tile counters; the branch map; batch,
        // fin, fout, relu, slices, slice_k.
        assert_eq!(
            kinds,
            [Ptr, Ptr, Ptr, Ptr, Ptr, Ptr, Bytes, I32, I32, I32, I32, I32, I32]
        );
        assert_eq!(k.params[5].ty, "unsigned*");
        assert_eq!(k.params[6].ty, "BranchMap");
        assert_eq!(k.params[0].ty, "const float*");
        for name in [
            "conv2d_forward",
            "conv2d_backward_data_weight",
            "conv2d_backward_weight",
            "conv2d_backward_weight_sum",
            "batchnorm2d_forward_train",
            "batchnorm2d_forward_eval",
            "batchnorm2d_backward",
            "batchnorm2d_relu_maxpool_train",
            "relu_maxpool_batchnorm2d_backward",
            "relu_forward",
            "relu_backward",
            "maxpool2x2_forward",
            "maxpool2x2_backward",
            "linear_backward",
            "softmax_cross_entropy",
            "sigmoid_bce",
            "sgd_step",
            "adam_step",
            "ssk_fill",
            "ssk_axpy",
        ] {
            assert!(sim.kernel(name).is_some(), "{name}");
        }
        let embedded: Vec<&str> = crate::backend::kernels::SOURCES
            .iter()
            .map(|s| s.0)
            .collect();
        assert!(embedded.contains(&"common.cuh") && embedded.contains(&"conv.cu"));
    }

    #[test]
    fn memory_ops_and_guards_intact() {
        let sim = Sim::with_seed(1);
        let mut b = sim.zeros(5);
        sim.write(&mut b, &[1.0, 2.0]);
        assert_eq!(sim.download(&b), [1.0, 2.0, 0.0, 0.0, 0.0]);
        let x = sim.upload(&[1.0; 5]);
        crate::backend::OptimOps::axpy(&sim, 2.0, &x, &mut b, 4);
        assert_eq!(sim.download(&b), [3.0, 4.0, 2.0, 2.0, 0.0]);
        let odd = sim.zeros(1000);
        sim.execute(&launch::fill(&odd, 7.0, 999));
        let v = sim.download(&odd);
        assert!(v[..999].iter().all(|&x| x == 7.0) && v[999] == 0.0);
        assert!(odd.guard_damage().is_none() && b.guard_damage().is_none());
    }

    /// A plan whose argument kinds do not match the kernel's signature is refused.
    #[test]
    #[should_panic(expected = "gets a F32 argument")]
    fn argument_kinds_are_checked_against_the_signature() {
        let sim = Sim::with_seed(0);
        let y = sim.zeros(4);
        let plan = Plan {
            scratch: vec![],
            launches: vec![Launch {
                kernel: "ssk_fill",
                grid: [1, 1, 1],
                block: [256, 1, 1],
                shared_bytes: 0,
                args: vec![Arg::Buf(&y), Arg::F32(1.0), Arg::F32(4.0)],
            }],
        };
        sim.execute(&plan);
    }
}
