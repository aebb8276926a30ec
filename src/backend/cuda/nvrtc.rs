//! NVRTC: compiles the embedded kernels/*.cu (build.rs: `backend::kernels::SOURCES`)
//! for a GPU architecture, parses ptxas' resource report, and keeps the results in
//! a disk cache. Used by [`Cuda::new`](super::Cuda::new) and by
//! `sskernel kernels compile`.
//!
//! - **Finding libnvrtc.** cudarc loads it at run time by name through the system
//!   loader (`LD_LIBRARY_PATH`, ldconfig): `libnvrtc.so`, `.so.13`, `.so.12`, … (its
//!   `cuda-13000` feature puts 13 first). A missing library would make cudarc
//!   panic, so [`nvrtc_version`] probes first and turns absence into a plain error.
//! - **Cubins, not PTX.** PTX from an NVRTC newer than the driver does not load
//!   (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`), so each file is compiled to a cubin for
//!   the device's `sm_XX` (`nvrtcGetCUBIN`). PTX (`compute_XX`, JIT-compiled by the
//!   driver) is the fallback when this NVRTC does not know the device's architecture.
//! - **Headers** (`*.cuh`) are handed to NVRTC from the embedded sources, so the
//!   binary compiles its kernels anywhere, without the kernels/ directory.
//! - **Cache.** `$SSKERNEL_KERNEL_CACHE`, else `$XDG_CACHE_HOME/sskernel/kernels`,
//!   else `~/.cache/sskernel/kernels`; one file per kernel file, target and NVRTC
//!   version, named `FILE.TARGET.nvrtcMAJOR.MINOR.HASH.cubin` (or `.ptx`) where HASH
//!   is the SHA-256 of every embedded source and the compile options (the TF32
//!   variant, `SSKERNEL_TF32=1`, compiles with `-DSSK_TF32`: its own key); written to a
//!   temporary name and renamed (atomic). Where NVRTC is missing (a GPU machine with
//!   a driver but no toolkit), a cached cubin for the exact architecture and the
//!   same sources is used whatever NVRTC version built it: SASS needs no NVRTC.

use crate::backend::kernels::SOURCES;
use anyhow::{anyhow, bail, Context, Result};
use cudarc::nvrtc::{result as nres, sys as nsys};
use sha2::{Digest, Sha256};
use std::ffi::{c_char, CString};
use std::fmt;
use std::path::{Path, PathBuf};

/// Options besides `--gpu-architecture` (part of the cache key). `-v` to ptxas
/// makes the log carry registers, shared memory, stack and spills per kernel.
const OPTIONS: &[&str] = &["--std=c++17", "--ptxas-options=-v"];
/// Added for the GEMM core's TF32 tensor-core variant (kernels/common.cuh; sm_80+).
const TF32_OPTION: &str = "-DSSK_TF32";

/// The options of a compilation besides `--gpu-architecture`.
fn options(tf32: bool) -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().copied().chain(tf32.then_some(TF32_OPTION))
}
/// Bumped when the cache layout or the compile procedure changes.
const CACHE_FORMAT: &str = "sskernel-kernels-v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NvrtcVersion {
    pub major: i32,
    pub minor: i32,
}

impl fmt::Display for NvrtcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The library names cudarc tries for `lib` (the Linux ones), for messages.
pub(crate) fn lib_candidates(lib: &str) -> String {
    let prefix = format!("lib{lib}.so");
    let names: Vec<String> = cudarc::get_lib_name_candidates(lib)
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.join(", ")
}

/// `LD_LIBRARY_PATH`, for messages.
pub(crate) fn loader_path() -> String {
    match std::env::var("LD_LIBRARY_PATH") {
        Ok(p) if !p.is_empty() => format!("LD_LIBRARY_PATH={p}"),
        _ => "LD_LIBRARY_PATH unset".to_string(),
    }
}

/// Where the running process mapped a library whose file name starts with `prefix`
/// (from /proc/self/maps), e.g. which libnvrtc the loader picked.
pub(crate) fn mapped_library(prefix: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(prefix))
        })
        .map(str::to_string)
}

/// Loads libnvrtc through the loader path and returns its version; a plain error
/// (never cudarc's panic) when it is not there.
pub fn nvrtc_version() -> Result<NvrtcVersion> {
    // SAFETY: only tries to dlopen the candidate names.
    if !unsafe { nsys::is_culib_present() } {
        bail!(
            "libnvrtc not found on the loader path (tried {}; {}): install the CUDA \
             toolkit's NVRTC, or `pip install nvidia-cuda-nvrtc-cu12` and put its \
             site-packages/nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH",
            lib_candidates("nvrtc"),
            loader_path()
        );
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; nvrtcVersion writes two ints.
    unsafe { nsys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| anyhow!("nvrtcVersion failed: {e:?}"))?;
    Ok(NvrtcVersion { major, minor })
}

/// The architectures this NVRTC compiles for (`[75, 80, 86, 89, 90, …]`).
pub fn supported_archs() -> Result<Vec<i32>> {
    let mut n = 0;
    // SAFETY: libnvrtc is loaded (callers asked nvrtc_version first); the buffer
    // holds the count NVRTC reported.
    unsafe {
        nsys::nvrtcGetNumSupportedArchs(&mut n)
            .result()
            .map_err(|e| anyhow!("nvrtcGetNumSupportedArchs: {e:?}"))?;
        let mut archs = vec![0i32; n.max(0) as usize];
        nsys::nvrtcGetSupportedArchs(archs.as_mut_ptr())
            .result()
            .map_err(|e| anyhow!("nvrtcGetSupportedArchs: {e:?}"))?;
        Ok(archs)
    }
}

/// Parses `sm_80` (also `sm_90a`) into its number (80).
pub fn parse_arch(arch: &str) -> Result<i32> {
    let digits = arch
        .strip_prefix("sm_")
        .map(|d| d.trim_end_matches(|c: char| c.is_ascii_lowercase()))
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    match digits {
        Some(d) => Ok(d.parse()?),
        None => bail!("`{arch}` is not a GPU architecture like sm_80 or sm_90"),
    }
}

/// The kernel files (`*.cu`) of the embedded sources.
pub fn kernel_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    SOURCES.iter().copied().filter(|(n, _)| n.ends_with(".cu"))
}

/// What NVRTC produced for one file.
#[derive(Clone, Debug)]
pub enum Image {
    /// SASS for one `sm_XX`.
    Cubin(Vec<u8>),
    /// PTX text (without the trailing NUL), JIT-compiled by the driver.
    Ptx(String),
}

#[derive(Clone, Debug)]
pub struct Compiled {
    pub file: String,
    /// `sm_XX` for a cubin, `compute_XX` for PTX.
    pub target: String,
    pub image: Image,
    /// NVRTC's log (warnings; ptxas' resource report for cubins).
    pub log: String,
}

/// ptxas' report for one kernel (`--ptxas-options=-v`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    /// Static shared memory in bytes (dynamic shared memory is per launch).
    pub smem: u32,
    pub stack: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Frees the program on every path.
struct Program(nsys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram, destroyed once, here.
        let _ = unsafe { nres::destroy_program(self.0) };
    }
}

fn c_string(s: &str, what: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{what} contains a NUL byte"))
}

fn log_string(raw: Vec<c_char>) -> String {
    let bytes: Vec<u8> = raw
        .into_iter()
        .map(|c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The first `FILE(LINE): error…` line of an NVRTC log, as `DIR/FILE:LINE: error…`.
fn first_error(log: &str, dir: &str) -> Option<String> {
    log.lines().find(|l| l.contains(": error")).map(|l| {
        let l = l.trim();
        match (l.find('('), l.find("): ")) {
            (Some(open), Some(close)) if open < close => {
                let (file, line) = (&l[..open], &l[open + 1..close]);
                format!("{dir}/{file}:{line}: {}", &l[close + 3..])
            }
            _ => l.to_string(),
        }
    })
}

/// Compiles one embedded kernel file for `target` (`sm_XX`: cubin, `compute_XX`: PTX),
/// the TF32 variant when `tf32`.
/// A failure names the file, the first error's line and carries NVRTC's whole log.
pub fn compile(file: &str, target: &str, tf32: bool) -> Result<Compiled> {
    let src = SOURCES
        .iter()
        .find(|(n, _)| *n == file)
        .map(|(_, s)| *s)
        .ok_or_else(|| anyhow!("no embedded kernel file `{file}`"))?;
    compile_source("kernels", file, src, target, tf32)
}

/// Compiles `src` (named `file`, shown as `dir/file` in errors) with the embedded
/// headers, for `target` (the TF32 variant when `tf32`).
pub fn compile_source(
    dir: &str,
    file: &str,
    src: &str,
    target: &str,
    tf32: bool,
) -> Result<Compiled> {
    let headers: Vec<(CString, CString)> = SOURCES
        .iter()
        .filter(|(n, _)| n.ends_with(".cuh"))
        .map(|(n, s)| Ok((c_string(s, n)?, c_string(n, n)?)))
        .collect::<Result<_>>()?;
    let header_srcs: Vec<*const c_char> = headers.iter().map(|h| h.0.as_ptr()).collect();
    let header_names: Vec<*const c_char> = headers.iter().map(|h| h.1.as_ptr()).collect();
    let (c_src, c_name) = (c_string(src, file)?, c_string(file, file)?);
    let mut raw = std::ptr::null_mut();
    // SAFETY: every pointer is a NUL-terminated string alive until the program is
    // destroyed (the CStrings outlive `prog`); the header arrays hold n entries.
    unsafe {
        nsys::nvrtcCreateProgram(
            &mut raw,
            c_src.as_ptr(),
            c_name.as_ptr(),
            headers.len() as i32,
            header_srcs.as_ptr(),
            header_names.as_ptr(),
        )
    }
    .result()
    .map_err(|e| anyhow!("nvrtcCreateProgram({file}): {e:?}"))?;
    let prog = Program(raw);
    let mut opts = vec![format!("--gpu-architecture={target}")];
    opts.extend(options(tf32).map(|o| o.to_string()));
    if !target.starts_with("sm_") {
        opts.retain(|o| !o.starts_with("--ptxas-options"));
    }
    // SAFETY: prog is a live program.
    let compiled = unsafe { nres::compile_program(prog.0, &opts) };
    // SAFETY: as above.
    let log = log_string(unsafe { nres::get_program_log(prog.0) }.unwrap_or_default());
    if let Err(e) = compiled {
        let headline = first_error(&log, dir).unwrap_or_else(|| format!("{dir}/{file}"));
        bail!(
            "NVRTC could not compile {dir}/{file} for {target} ({:?}): {headline}\n{}",
            e.0,
            log.trim_end()
        );
    }
    let image = if target.starts_with("sm_") {
        let mut size = 0usize;
        // SAFETY: prog compiled; the buffer holds the size NVRTC reported.
        unsafe {
            nsys::nvrtcGetCUBINSize(prog.0, &mut size)
                .result()
                .map_err(|e| anyhow!("nvrtcGetCUBINSize({file}): {e:?}"))?;
            let mut cubin = vec![0u8; size];
            nsys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut c_char)
                .result()
                .map_err(|e| anyhow!("nvrtcGetCUBIN({file}): {e:?}"))?;
            Image::Cubin(cubin)
        }
    } else {
        // SAFETY: prog compiled.
        let ptx =
            unsafe { nres::get_ptx(prog.0) }.map_err(|e| anyhow!("nvrtcGetPTX({file}): {e:?}"))?;
        Image::Ptx(log_string(ptx))
    };
    Ok(Compiled {
        file: file.to_string(),
        target: target.to_string(),
        image,
        log,
    })
}

/// The number just before `suffix` in `line` ("40 registers" → 40 for " registers").
fn number_before(line: &str, suffix: &str) -> Option<u32> {
    let at = line.find(suffix)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

/// The per-kernel resources in a ptxas `-v` log. Lines, per entry function:
/// `Compiling entry function 'K' for 'sm_80'`, `Function properties for K`,
/// `N bytes stack frame, N bytes spill stores, N bytes spill loads`,
/// `Used N registers, [used N barriers,] N bytes smem, N bytes cmem[0]`.
/// Properties of non-entry functions (not inlined device functions) are skipped.
pub fn parse_ptxas(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    let mut entry: Option<usize> = None;
    let mut props: Option<usize> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            kernels.push(KernelResources {
                name,
                ..Default::default()
            });
            entry = Some(kernels.len() - 1);
            props = None;
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            let name = rest.trim();
            props = kernels.iter().position(|k| k.name == name);
        } else if line.contains("bytes stack frame") {
            if let Some(k) = props.map(|i| &mut kernels[i]) {
                k.stack = number_before(line, " bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(line, " bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, " bytes spill loads").unwrap_or(0);
            }
        } else if line.contains("Used ") && line.contains(" registers") {
            if let Some(k) = entry.map(|i| &mut kernels[i]) {
                k.registers = number_before(line, " registers").unwrap_or(0);
                k.smem = number_before(line, " bytes smem").unwrap_or(0);
            }
        }
    }
    kernels
}

/// SHA-256 (hex) of every embedded source and the compile options.
pub fn sources_hash(tf32: bool) -> String {
    let mut h = Sha256::new();
    h.update(CACHE_FORMAT.as_bytes());
    h.update([0]);
    for o in options(tf32) {
        h.update(o.as_bytes());
        h.update([0]);
    }
    for (name, src) in SOURCES {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(src.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `$SSKERNEL_KERNEL_CACHE`, else `$XDG_CACHE_HOME/sskernel/kernels`, else
/// `~/.cache/sskernel/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    if let Some(dir) = nonempty("SSKERNEL_KERNEL_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let base = nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sskernel").join("kernels"))
}

/// The on-disk cache of compiled kernel files (see the module doc).
pub struct Cache {
    dir: Option<PathBuf>,
    hash: String,
    tf32: bool,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    /// The cache of this process' variant (`SSKERNEL_TF32`).
    pub fn new() -> Self {
        Self::at_variant(cache_dir(), crate::backend::kernels::tf32_requested())
    }

    /// A cache in `dir` (tests; the program uses [`Cache::new`]).
    pub fn at(dir: &Path) -> Self {
        Self::at_variant(Some(dir.to_path_buf()), false)
    }

    /// A cache of the TF32 variant (or not) in `dir`.
    pub fn at_variant(dir: Option<PathBuf>, tf32: bool) -> Self {
        Self {
            dir,
            hash: sources_hash(tf32),
            tf32,
        }
    }

    /// Whether this cache holds the TF32 variant (compile it with `-DSSK_TF32`).
    pub fn tf32(&self) -> bool {
        self.tf32
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The first 16 hex digits of the sources' hash (in the file names).
    pub fn key(&self) -> &str {
        &self.hash[..16]
    }

    fn stem(file: &str) -> &str {
        file.strip_suffix(".cu").unwrap_or(file)
    }

    fn path(&self, file: &str, target: &str, nvrtc: NvrtcVersion) -> Option<PathBuf> {
        let ext = if target.starts_with("sm_") {
            "cubin"
        } else {
            "ptx"
        };
        self.dir.as_ref().map(|d| {
            d.join(format!(
                "{}.{target}.nvrtc{nvrtc}.{}.{ext}",
                Self::stem(file),
                self.key()
            ))
        })
    }

    /// The cached image for exactly this file, target and NVRTC version.
    pub fn get(&self, file: &str, target: &str, nvrtc: NvrtcVersion) -> Option<Image> {
        let bytes = std::fs::read(self.path(file, target, nvrtc)?).ok()?;
        Some(if target.starts_with("sm_") {
            Image::Cubin(bytes)
        } else {
            Image::Ptx(String::from_utf8(bytes).ok()?)
        })
    }

    /// A cached cubin for this file and `sm_XX` from any NVRTC version (the newest),
    /// for machines without NVRTC. Returns the path too.
    pub fn any_cubin(&self, file: &str, arch: &str) -> Option<(PathBuf, Vec<u8>)> {
        let dir = self.dir.as_ref()?;
        let prefix = format!("{}.{arch}.nvrtc", Self::stem(file));
        let suffix = format!(".{}.cubin", self.key());
        let mut found: Vec<(NvrtcVersion, PathBuf)> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let version = name.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
                let (major, minor) = version.split_once('.')?;
                let v = NvrtcVersion {
                    major: major.parse().ok()?,
                    minor: minor.parse().ok()?,
                };
                Some((v, e.path()))
            })
            .collect();
        found.sort();
        let (_, path) = found.pop()?;
        let bytes = std::fs::read(&path).ok()?;
        Some((path, bytes))
    }

    /// Writes an image atomically (`atomic_file`: unique temporary file, fsync,
    /// rename). Errors are returned
    /// for the caller to report; a cache that cannot be written is not fatal.
    pub fn put(&self, c: &Compiled, nvrtc: NvrtcVersion) -> Result<PathBuf> {
        let path = self
            .path(&c.file, &c.target, nvrtc)
            .ok_or_else(|| anyhow!("no cache directory (set HOME or XDG_CACHE_HOME)"))?;
        let dir = path.parent().expect("the cache path has a directory");
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the kernel cache {}", dir.display()))?;
        let bytes: &[u8] = match &c.image {
            Image::Cubin(b) => b,
            Image::Ptx(s) => s.as_bytes(),
        };
        // A temporary name per writer: parallel test threads with a cold cache
        // write the same entry at once.
        crate::atomic_file::write(&path, bytes)?;
        Ok(path)
    }
}

/// One row of `sskernel kernels compile`.
#[derive(Clone, Debug)]
pub struct ReportRow {
    pub arch: String,
    pub file: String,
    pub kernel: KernelResources,
}

/// `sskernel kernels compile --arch LIST [--source FILE.cu …]`: compiles every
/// kernel file (the embedded ones, or the given files with the embedded headers) for
/// every architecture, prints registers, static shared memory, stack and spills per
/// kernel (ptxas' verbose report), stores the embedded files' cubins in the cache,
/// and fails if any file fails to compile (after trying them all). Spills are
/// flagged, not fatal.
pub fn kernels_compile(archs: &[String], sources: &[PathBuf]) -> Result<Vec<ReportRow>> {
    for a in archs {
        parse_arch(a)?;
    }
    let mut files: Vec<(String, String, String)> = Vec::new(); // (dir, file, source)
    for path in sources {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} names no file", path.display()))?;
        let dir = path
            .parent()
            .map(|d| d.display().to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| ".".into());
        files.push((dir, file, text));
    }
    let embedded = files.is_empty();
    if embedded {
        files = kernel_files()
            .map(|(f, s)| ("kernels".to_string(), f.to_string(), s.to_string()))
            .collect();
    }
    let version = nvrtc_version()?;
    let lib = mapped_library("libnvrtc.so")
        .or_else(|| mapped_library("libnvrtc"))
        .unwrap_or_else(|| "libnvrtc".to_string());
    println!("NVRTC {version} ({lib})");
    let supported = supported_archs().unwrap_or_default();
    let cache = Cache::new();
    if cache.tf32() {
        println!("TF32 tensor-core variant of the GEMM core (SSKERNEL_TF32): {TF32_OPTION}");
    }
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut cache_note = None;
    println!(
        "{:<7} {:<16} {:<28} {:>5} {:>7} {:>6} {:>12} {:>11}",
        "arch", "file", "kernel", "regs", "smem", "stack", "spill-stores", "spill-loads"
    );
    for arch in archs {
        let n = parse_arch(arch)?;
        if cache.tf32() && n < 80 {
            failures.push(format!("the TF32 variant needs sm_80 or newer, not {arch}"));
            continue;
        }
        if !supported.is_empty() && !supported.contains(&n) {
            failures.push(format!(
                "NVRTC {version} does not compile for {arch} (it knows sm_{})",
                supported
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", sm_")
            ));
            continue;
        }
        for (dir, file, src) in &files {
            let c = match compile_source(dir, file, src, arch, cache.tf32()) {
                Ok(c) => c,
                Err(e) => {
                    println!("{arch:<7} {file:<16} FAILED");
                    failures.push(format!("{e:#}"));
                    continue;
                }
            };
            if embedded {
                if let Err(e) = cache.put(&c, version) {
                    cache_note.get_or_insert(format!("not cached: {e:#}"));
                }
            }
            let mut kernels = parse_ptxas(&c.log);
            kernels.sort_by(|a, b| a.name.cmp(&b.name));
            for k in kernels {
                let spill = if k.spill_stores + k.spill_loads > 0 {
                    "  SPILLS"
                } else {
                    ""
                };
                println!(
                    "{arch:<7} {file:<16} {:<28} {:>5} {:>7} {:>6} {:>12} {:>11}{spill}",
                    k.name, k.registers, k.smem, k.stack, k.spill_stores, k.spill_loads
                );
                rows.push(ReportRow {
                    arch: arch.clone(),
                    file: file.clone(),
                    kernel: k,
                });
            }
        }
    }
    let spills = rows
        .iter()
        .filter(|r| r.kernel.spill_stores + r.kernel.spill_loads > 0)
        .count();
    match (&cache_note, cache.dir()) {
        _ if !embedded => println!("cache: not used for --source files"),
        (Some(note), _) => println!("cache: {note}"),
        (None, Some(dir)) => println!("cache: {} (key {})", dir.display(), cache.key()),
        (None, None) => println!("cache: none (no HOME or XDG_CACHE_HOME)"),
    }
    println!(
        "kernels compile: {} kernels over {} architecture(s), {} with spills, {} failure(s)",
        rows.len(),
        archs.len(),
        spills,
        failures.len()
    );
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_report_is_parsed_per_entry_function() {
        let log = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'conv2d_forward' for 'sm_80'
ptxas info    : Function properties for _Z6helperv
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Function properties for conv2d_forward
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, 8448 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function 'sgd_step' for 'sm_90'
ptxas info    : Function properties for sgd_step
    16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 380 bytes cmem[0]
";
        let k = parse_ptxas(log);
        assert_eq!(k.len(), 2);
        assert_eq!(
            k[0],
            KernelResources {
                name: "conv2d_forward".into(),
                registers: 40,
                smem: 8448,
                ..Default::default()
            }
        );
        assert_eq!(
            k[1],
            KernelResources {
                name: "sgd_step".into(),
                registers: 12,
                smem: 0,
                stack: 16,
                spill_stores: 12,
                spill_loads: 8,
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let log = "conv.cu(12): error: identifier \"q\" is undefined\n\n1 error detected";
        assert_eq!(
            first_error(log, "kernels").unwrap(),
            "kernels/conv.cu:12: error: identifier \"q\" is undefined"
        );
    }

    #[test]
    fn architectures_and_cache_names() {
        assert_eq!(parse_arch("sm_80").unwrap(), 80);
        assert_eq!(parse_arch("sm_90a").unwrap(), 90);
        assert!(parse_arch("compute_80").is_err() && parse_arch("sm_").is_err());
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        assert_eq!(cache.hash.len(), 64);
        let v = |major, minor| NvrtcVersion { major, minor };
        for (version, byte) in [(v(12, 9), 1u8), (v(13, 0), 2), (v(12, 10), 3)] {
            let c = Compiled {
                file: "conv.cu".into(),
                target: "sm_90".into(),
                image: Image::Cubin(vec![byte]),
                log: String::new(),
            };
            cache.put(&c, version).unwrap();
        }
        assert!(
            matches!(cache.get("conv.cu", "sm_90", v(12, 9)), Some(Image::Cubin(b)) if b == [1])
        );
        assert!(cache.get("conv.cu", "sm_80", v(12, 9)).is_none());
        // Without NVRTC: the newest cached cubin for the exact architecture.
        let (path, bytes) = cache.any_cubin("conv.cu", "sm_90").unwrap();
        assert_eq!(bytes, [2]);
        assert!(path.to_string_lossy().contains("nvrtc13.0"));
        assert!(cache.any_cubin("conv.cu", "sm_80").is_none());
        assert!(cache.any_cubin("pool.cu", "sm_90").is_none());
        // The TF32 variant has its own key: its cubins are never taken for f32 ones.
        let tf32 = Cache::at_variant(Some(dir.path().to_path_buf()), true);
        assert!(tf32.tf32() && !cache.tf32() && tf32.key() != cache.key());
        assert!(tf32.get("conv.cu", "sm_90", v(12, 9)).is_none());
        assert!(tf32.any_cubin("conv.cu", "sm_90").is_none());
    }
}
