//! The CUDA device (`--device cuda`): kernels/*.cu compiled at start by NVRTC to a
//! cubin for the device's compute capability ([`nvrtc`], cached on disk), executed
//! through the same launch plans (`backend::launch`) as the simulator, in the same
//! argument order (cuLaunchKernel's layout, which the simulator's trampolines
//! mirror), one stream.
//!
//! cudarc loads libcuda and libnvrtc at run time, so the binary builds and runs
//! without CUDA; a missing library would make cudarc panic, so [`Cuda::new`]
//! probes first and reports absence as an error (`--device auto` then runs on the
//! CPU and says why).
//!
//! Memory: every buffer is a `CudaSlice<f32>` on the one stream (the stream-ordered
//! allocator); event tracking is off (one stream, nothing to synchronise across), so
//! an allocation costs no events. The model allocates its buffers once; the scratch
//! buffers plans ask for come from a pool that grows to the largest request and is
//! reused by every later op. The `Backend` methods return `()`: a CUDA error panics
//! with the kernel's name. Launches are asynchronous, so an error inside a kernel
//! shows at the next copy; `SSKERNEL_CUDA_SYNC=1` synchronises after every launch to
//! name the kernel that failed.
//!
//! Launch programs (`launch::Program`, a recorded training step) are captured once
//! as a CUDA graph on the device's stream (a created, non-blocking stream: the
//! legacy default stream cannot be captured) and the graph is launched every step.

pub mod nvrtc;

use super::kernels::{KernelInfo, KERNELS};
use super::launch::{self, Arg, KernelDevice, Launch, Plan};
use super::Memory;
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{
    result as dres, sys as dsys, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream,
    DevicePtr,
};
use cudarc::nvrtc::Ptx;
use nvrtc::{Cache, Image, NvrtcVersion};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A device buffer of `len` f32 (at least one float is allocated).
pub struct CudaBuf {
    data: CudaSlice<f32>,
    len: usize,
}

impl std::fmt::Debug for CudaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuf({} floats)", self.len)
    }
}

/// What [`probe_device`] finds: device 0's name and architecture.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    /// Compute capability as `sm_XY`.
    pub arch: String,
    /// `cuDriverGetVersion`, e.g. 13000.
    pub driver_version: i32,
}

/// Loads libcuda (plain error if absent), initialises the driver and checks for a
/// device.
fn init_driver() -> Result<()> {
    // SAFETY: only tries to dlopen the candidate names.
    if !unsafe { dsys::is_culib_present() } {
        // The short outer message is what `--device auto` prints; `{:#}` adds the detail.
        return Err(anyhow!(
            "libcuda not found on the loader path (tried {}; {}); is the NVIDIA driver installed?",
            nvrtc::lib_candidates("cuda"),
            nvrtc::loader_path()
        )
        .context("no CUDA driver"));
    }
    dres::init().map_err(|e| anyhow!("the CUDA driver did not initialise: {e}"))?;
    let n = dres::device::get_count().map_err(|e| anyhow!("cuDeviceGetCount: {e}"))?;
    if n < 1 {
        bail!("the CUDA driver is installed but sees no device");
    }
    Ok(())
}

fn driver_version() -> i32 {
    let mut v = 0;
    // SAFETY: the driver is loaded and initialised; writes one int.
    let _ = unsafe { dsys::cuDriverGetVersion(&mut v) };
    v
}

/// Device 0's name and architecture, without creating a context.
pub fn probe_device() -> Result<DeviceInfo> {
    init_driver()?;
    let dev = dres::device::get(0).map_err(|e| anyhow!("cuDeviceGet(0): {e}"))?;
    let attr = |a| {
        // SAFETY: dev came from cuDeviceGet.
        unsafe { dres::device::get_attribute(dev, a) }.map_err(|e| anyhow!("{a:?}: {e}"))
    };
    use dsys::CUdevice_attribute::*;
    let major = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let name = dres::device::get_name(dev).map_err(|e| anyhow!("device name: {e}"))?;
    Ok(DeviceInfo {
        name,
        arch: format!("sm_{major}{minor}"),
        driver_version: driver_version(),
    })
}

/// The image of one kernel file for the device: from the cache, else compiled (and
/// cached); without NVRTC, a cached cubin from any NVRTC version.
fn module_image(
    file: &str,
    arch: &str,
    nvrtc: &Result<NvrtcVersion>,
    cache: &Cache,
    announced: &mut bool,
) -> Result<Image> {
    let version = match nvrtc {
        Ok(v) => *v,
        Err(e) => return cached_cubin(file, arch, cache, e, false),
    };
    // The device's sm_XX when this NVRTC knows it, else PTX for the newest
    // compute_XX it knows below the device (the driver JIT-compiles it).
    let n = nvrtc::parse_arch(arch)?;
    let supported = nvrtc::supported_archs().unwrap_or_default();
    let target = if supported.is_empty() || supported.contains(&n) {
        arch.to_string()
    } else {
        let best = supported
            .iter()
            .copied()
            .filter(|&a| a <= n)
            .max()
            .ok_or_else(|| anyhow!("NVRTC {version} knows no architecture up to {arch}"))?;
        format!("compute_{best}")
    };
    if let Some(image) = cache.get(file, &target, version) {
        return Ok(image);
    }
    if !*announced {
        eprintln!(
            "cuda: compiling kernels/*.cu with NVRTC {version} for {target} (cache: {})",
            cache
                .dir()
                .map_or("none".into(), |d| d.display().to_string())
        );
        *announced = true;
    }
    let compiled = match nvrtc::compile(file, &target, cache.tf32()) {
        Ok(c) => c,
        // A broken NVRTC (e.g. a libnvrtc without its builtins library on the
        // loader path) must not make the device unusable where cubins exist.
        Err(e) => return cached_cubin(file, arch, cache, &e, true),
    };
    if let Err(e) = cache.put(&compiled, version) {
        eprintln!("cuda: kernel cache not written: {e:#}");
    }
    Ok(compiled.image)
}

/// Where NVRTC is missing or fails (`why`): a cached cubin of `file` for `arch` from
/// any NVRTC version (SASS needs no NVRTC), saying so when `say`; else an error
/// naming why, where it looked and how to fill the cache.
fn cached_cubin(
    file: &str,
    arch: &str,
    cache: &Cache,
    why: &anyhow::Error,
    say: bool,
) -> Result<Image> {
    let dir = cache
        .dir()
        .map_or("none".into(), |d| d.display().to_string());
    match cache.any_cubin(file, arch) {
        Some((path, bytes)) => {
            if say {
                eprintln!("cuda: {why:#}; using the cached cubin {}", path.display());
            }
            Ok(Image::Cubin(bytes))
        }
        None => Err(anyhow!(
            "{why:#}; and the kernel cache ({dir}) holds no {arch} cubin of these kernels \
             (key {}); run `sskernel kernels compile --arch {arch}` where NVRTC works and \
             copy that directory here",
            cache.key()
        )),
    }
}

/// The CUDA device.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: HashMap<&'static str, (CudaFunction, &'static KernelInfo)>,
    /// Scratch buffers of plans, reused (grown when a plan needs more).
    scratch: Mutex<Vec<CudaBuf>>,
    info: DeviceInfo,
    sync_each_launch: bool,
    recorder: launch::Recorder<CudaBuf>,
    /// `KernelDevice::counters`.
    counters: CudaBuf,
    /// The graph of the program replayed last, under its id.
    graph: Mutex<Option<(u64, Graph)>>,
}

/// A captured graph. cudarc's `CudaGraph` is not `Send`: the driver's graph objects
/// must not be used from two threads at once, which the `Mutex` around it ensures.
struct Graph(CudaGraph);
// SAFETY: only reached through `Cuda::graph`'s mutex (see above).
unsafe impl Send for Graph {}

impl Cuda {
    /// Device 0: probes libcuda and a device, creates the context and loads every
    /// kernel file (cached cubins, else NVRTC). Errors say plainly what is missing.
    pub fn new() -> Result<Self> {
        Self::with_kernel_files(None)
    }

    /// As [`Cuda::new`], loading only the kernel files named in `files` (e.g.
    /// `["mreach.cu"]`; `None`: all): a command that launches one family need not
    /// load, or compile on a cold cache, the others. Launching a kernel of a file
    /// not loaded panics with its name.
    pub fn with_kernel_files(files: Option<&[&str]>) -> Result<Self> {
        let info = probe_device()?;
        let ctx = CudaContext::new(0).map_err(|e| anyhow!("cannot create a context: {e}"))?;
        // SAFETY: one stream only: nothing to synchronise between streams, and every
        // buffer is allocated and freed in that stream's order.
        unsafe { ctx.disable_event_tracking() };
        // A created stream: stream capture (launch programs as CUDA graphs) is not
        // allowed on the legacy default stream.
        let stream = ctx
            .new_stream()
            .map_err(|e| anyhow!("cannot create a stream: {e}"))?;
        let nvrtc = nvrtc::nvrtc_version();
        let cache = Cache::new();
        if cache.tf32() {
            if nvrtc::parse_arch(&info.arch)? < 80 {
                bail!(
                    "SSKERNEL_TF32=1: TF32 tensor cores need sm_80 or newer, the device is {}",
                    info.arch
                );
            }
            eprintln!("cuda: TF32 tensor-core GEMM on (SSKERNEL_TF32)");
        }
        let mut kernels = HashMap::new();
        let mut announced = false;
        let wanted = |file: &str| files.is_none_or(|f| f.contains(&file));
        for (file, _) in nvrtc::kernel_files().filter(|(file, _)| wanted(file)) {
            let image = module_image(file, &info.arch, &nvrtc, &cache, &mut announced)
                .with_context(|| format!("kernels/{file} for {}", info.arch))?;
            let ptx = match image {
                Image::Cubin(bytes) => Ptx::from_binary(bytes),
                Image::Ptx(text) => Ptx::from_src(text),
            };
            let module = ctx
                .load_module(ptx)
                .map_err(|e| anyhow!("loading kernels/{file} for {}: {e}", info.arch))?;
            for k in KERNELS.iter().filter(|k| k.file == file) {
                let f = module
                    .load_function(k.name)
                    .map_err(|e| anyhow!("kernel `{}` in kernels/{file}: {e}", k.name))?;
                kernels.insert(k.name, (f, k));
            }
        }
        let counters = CudaBuf {
            data: stream
                .alloc_zeros::<f32>(launch::COUNTERS)
                .map_err(|e| anyhow!("allocating the block counters: {e}"))?,
            len: launch::COUNTERS,
        };
        Ok(Self {
            ctx,
            stream,
            kernels,
            scratch: Mutex::new(Vec::new()),
            info,
            sync_each_launch: std::env::var_os("SSKERNEL_CUDA_SYNC").is_some_and(|v| v != "0"),
            recorder: launch::Recorder::default(),
            counters,
            graph: Mutex::new(None),
        })
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// Whether a kernel of kernels/*.cu was loaded.
    pub fn has_kernel(&self, name: &str) -> bool {
        self.kernels.contains_key(name)
    }

    /// Waits for every queued launch and copy; panics on an asynchronous error.
    pub fn synchronize(&self) {
        self.stream
            .synchronize()
            .unwrap_or_else(|e| panic!("cuda: {e}"));
    }

    fn alloc(&self, len: usize) -> CudaBuf {
        let data = self
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .unwrap_or_else(|e| panic!("cuda: allocating {len} floats: {e}"));
        CudaBuf { data, len }
    }

    fn ptr(&self, b: &CudaBuf) -> dsys::CUdeviceptr {
        // Event tracking is off: the returned guard records nothing.
        b.data.device_ptr(&self.stream).0
    }

    /// Runs every launch of a plan in order on the stream.
    pub fn launch_plan(&self, plan: &Plan<'_, CudaBuf>) {
        let scratch = self.scratch_for(plan);
        for l in &plan.launches {
            self.launch(l, &scratch);
        }
    }

    /// The scratch pool, grown to hold `plan`'s buffers (the context bound to this
    /// thread).
    fn scratch_for(&self, plan: &Plan<'_, CudaBuf>) -> std::sync::MutexGuard<'_, Vec<CudaBuf>> {
        self.ctx
            .bind_to_thread()
            .unwrap_or_else(|e| panic!("cuda: binding the context: {e}"));
        let mut pool = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        for (i, &len) in plan.scratch.iter().enumerate() {
            if i == pool.len() {
                pool.push(self.alloc(len));
            } else if pool[i].len < len {
                pool[i] = self.alloc(len);
            }
        }
        pool
    }

    fn launch(&self, l: &Launch<'_, CudaBuf>, scratch: &[CudaBuf]) {
        let (func, info) = self.kernels.get(l.kernel).unwrap_or_else(|| {
            panic!(
                "cuda: kernel `{}` not loaded (not in kernels/*.cu, or its file was not asked for)",
                l.kernel
            )
        });
        let mut packed = launch::pack("cuda", l, info, |a| match a {
            Arg::Buf(b) => self.ptr(b),
            Arg::Scratch(i) => self.ptr(&scratch[*i]),
            Arg::Ptr { addr, .. } => *addr,
            _ => unreachable!("only buffer arguments have addresses"),
        });
        let [gx, gy, gz] = l.grid;
        let [bx, by, bz] = l.block;
        // SAFETY: the function comes from the loaded module; `pack` checked the
        // argument kinds and count against the kernel's parsed signature; every
        // pointer of the array points at a value alive until cuLaunchKernel returns
        // (it copies them); buffers are device allocations of this context, and the
        // plans pass only lengths their buffers hold (the sim device checks that
        // with guards).
        let launched = unsafe {
            dres::launch_kernel(
                func.cu_function(),
                (gx, gy, gz),
                (bx, by, bz),
                l.shared_bytes,
                self.stream.cu_stream(),
                packed.args_mut(),
            )
        };
        let failed = launched.err().or_else(|| {
            self.sync_each_launch
                .then(|| self.stream.synchronize().err())
                .flatten()
        });
        if let Some(e) = failed {
            panic!(
                "cuda: kernel `{}` ({}) grid {:?} block {:?} shared {} B: {e}",
                info.name, info.file, l.grid, l.block, l.shared_bytes
            );
        }
    }
}

impl Memory for Cuda {
    type Buf = CudaBuf;

    fn name(&self) -> String {
        format!("cuda:0 ({}, {})", self.info.name, self.info.arch)
    }

    fn zeros(&self, len: usize) -> CudaBuf {
        self.alloc(len)
    }
    fn upload(&self, host: &[f32]) -> CudaBuf {
        let mut b = self.alloc(host.len());
        self.write(&mut b, host);
        b
    }
    /// The driver's free device memory (`None` if the query fails).
    fn free_memory(&self) -> Option<u64> {
        self.ctx.mem_get_info().ok().map(|(free, _)| free as u64)
    }
    fn download(&self, buf: &CudaBuf) -> Vec<f32> {
        if buf.len == 0 {
            return Vec::new();
        }
        let host = self
            .stream
            .clone_dtoh(&buf.data.slice(..buf.len))
            .unwrap_or_else(|e| panic!("cuda: copying {} floats to the host: {e}", buf.len));
        // A copy into pageable memory returns once complete; synchronising anyway
        // makes this the point where an error of an earlier launch shows.
        self.synchronize();
        host
    }
    fn write(&self, buf: &mut CudaBuf, host: &[f32]) {
        assert!(
            host.len() <= buf.len,
            "cuda: writing {} floats into a buffer of {}",
            host.len(),
            buf.len
        );
        if host.is_empty() {
            return;
        }
        self.stream
            .memcpy_htod(host, &mut buf.data.slice_mut(..host.len()))
            .unwrap_or_else(|e| panic!("cuda: copying {} floats to the device: {e}", host.len()));
    }
    fn buf_len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    /// On the device: the kept rows are gathered into a new buffer of their size
    /// (`launch::gather_rows`); nothing goes through the host.
    fn compact_rows(&self, buf: &mut CudaBuf, row_len: usize, keep: &[usize]) {
        debug_assert!(keep.windows(2).all(|w| w[0] < w[1]));
        let kept = self.zeros(keep.len() * row_len);
        self.execute(&launch::gather_rows(buf, &kept, row_len, keep));
        *buf = kept;
    }
    fn synchronize(&self) {
        Cuda::synchronize(self)
    }
}

impl KernelDevice for Cuda {
    fn launch_plan(&self, plan: &Plan<'_, CudaBuf>) {
        Cuda::launch_plan(self, plan)
    }
    /// CUDA events between the launches: each launch's time on the device, without
    /// the host's launch and synchronisation overheads (one wait at the end).
    fn launch_plan_timed(&self, plan: &Plan<'_, CudaBuf>) -> Option<Vec<f64>> {
        let scratch = self.scratch_for(plan);
        let event = || {
            let e = self
                .ctx
                .new_event(Some(dsys::CUevent_flags::CU_EVENT_DEFAULT))
                .unwrap_or_else(|e| panic!("cuda: creating a timing event: {e}"));
            e.record(&self.stream)
                .unwrap_or_else(|e| panic!("cuda: recording a timing event: {e}"));
            e
        };
        let mut events = vec![event()];
        for l in &plan.launches {
            self.launch(l, &scratch);
            events.push(event());
        }
        let ms = events.windows(2).map(|w| {
            w[0].elapsed_ms(&w[1])
                .unwrap_or_else(|e| panic!("cuda: reading a timing event: {e}")) as f64
        });
        Some(ms.collect())
    }
    fn address(&self, buf: &CudaBuf) -> u64 {
        self.ptr(buf)
    }
    fn recorder(&self) -> &launch::Recorder<CudaBuf> {
        &self.recorder
    }
    fn counters(&self) -> &CudaBuf {
        &self.counters
    }

    /// Captures the program as a CUDA graph the first time it is replayed, then
    /// launches the graph: one launch per step. With `SSKERNEL_CUDA_SYNC` (a
    /// synchronisation after every kernel, which capture forbids) it runs the
    /// launches one by one.
    unsafe fn run_program(&self, program: &launch::Program<CudaBuf>) {
        if self.sync_each_launch {
            return self.launch_plan(&program.plan);
        }
        let mut graph = self.graph.lock().unwrap_or_else(|p| p.into_inner());
        if graph.as_ref().map(|(id, _)| *id) != Some(program.id()) {
            *graph = None;
            self.stream
                .begin_capture(dsys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .unwrap_or_else(|e| panic!("cuda: starting a graph capture: {e}"));
            // No scratch to allocate (the program owns its own): nothing but
            // launches enters the graph.
            self.launch_plan(&program.plan);
            let captured = self
                .stream
                .end_capture(dsys::CUgraphInstantiate_flags(0))
                .unwrap_or_else(|e| panic!("cuda: capturing a launch program as a graph: {e}"))
                .expect("a program of at least one launch captures a graph");
            *graph = Some((program.id(), Graph(captured)));
        }
        let (_, Graph(g)) = graph.as_ref().expect("captured above");
        g.launch()
            .unwrap_or_else(|e| panic!("cuda: launching a program's graph: {e}"));
    }
}

/// `sskernel kernels compile [--arch LIST] [--source FILE.cu …]`: LIST, else the
/// device's architecture when a driver and a device are present, else sm_80 and
/// sm_90; the embedded kernels, or the given files (with the embedded headers).
pub fn kernels_compile_command(arch: Option<&str>, sources: &[std::path::PathBuf]) -> Result<()> {
    let archs: Vec<String> = match arch {
        Some(list) => list
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        None => match probe_device() {
            Ok(d) => {
                println!(
                    "device: {} ({}, driver {}.{})",
                    d.name,
                    d.arch,
                    d.driver_version / 1000,
                    d.driver_version % 1000 / 10
                );
                vec![d.arch]
            }
            Err(e) => {
                println!("no device ({e:#}): compiling for sm_80 and sm_90");
                vec!["sm_80".into(), "sm_90".into()]
            }
        },
    };
    anyhow::ensure!(!archs.is_empty(), "--arch: no architecture given");
    nvrtc::kernels_compile(&archs, sources).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvrtc::Compiled;

    /// A failing NVRTC falls back to a cached cubin for the architecture, and
    /// without one the error says why, where it looked and for which architecture.
    #[test]
    fn a_broken_nvrtc_falls_back_to_cached_cubins() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let why = anyhow!("NVRTC could not compile kernels/conv.cu for sm_90: builtins missing");
        let err = format!(
            "{:#}",
            cached_cubin("conv.cu", "sm_90", &cache, &why, true).unwrap_err()
        );
        assert!(
            err.contains("builtins missing")
                && err.contains(&dir.path().display().to_string())
                && err.contains("sm_90"),
            "{err}"
        );
        let cubin = Compiled {
            file: "conv.cu".into(),
            target: "sm_90".into(),
            image: Image::Cubin(vec![7, 7]),
            log: String::new(),
        };
        let version = NvrtcVersion {
            major: 12,
            minor: 9,
        };
        cache.put(&cubin, version).unwrap();
        let image = cached_cubin("conv.cu", "sm_90", &cache, &why, true).unwrap();
        assert!(matches!(image, Image::Cubin(b) if b == [7, 7]));
        assert!(cached_cubin("conv.cu", "sm_80", &cache, &why, true).is_err());
    }
}
