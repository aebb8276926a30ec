//! What build.rs generates from kernels/*.cu, for every device that runs them: the
//! kernel table (name, file, parameters parsed from each `extern "C" __global__`
//! signature) and the embedded sources. `sim` and `cuda` both import it; neither
//! depends on the other.

/// How a kernel parameter travels, from its C type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Any pointer: a device buffer.
    Ptr,
    I32,
    F32,
    /// A struct by value.
    Bytes,
}

#[derive(Debug)]
pub struct KernelParam {
    pub name: &'static str,
    /// The C type as written in the signature, without `__restrict__`.
    pub ty: &'static str,
    pub kind: ParamKind,
}

/// One `extern "C" __global__` kernel of kernels/*.cu, as build.rs parsed it.
#[derive(Debug)]
pub struct KernelInfo {
    pub name: &'static str,
    pub file: &'static str,
    pub params: &'static [KernelParam],
}

mod table {
    use super::{KernelInfo, KernelParam, ParamKind};
    include!(concat!(env!("OUT_DIR"), "/kernel_table.rs"));
}
/// Every kernel, in file order (the simulator's trampolines follow this order).
pub use table::KERNELS;

mod sources {
    include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));
}
/// kernels/*.cu and *.cuh, embedded for NVRTC: `(file name, source)`.
pub use sources::SOURCES;

/// The kernel called `name`.
pub fn kernel(name: &str) -> Option<&'static KernelInfo> {
    KERNELS.iter().find(|k| k.name == name)
}
