//! Crash points for the tests of `--resume` (train/resume.rs).

/// Fault injection for the resume tests: with `SSKERNEL_CRASH_AT=NAME:N` in the
/// environment, the N-th time this process passes the point `NAME` it kills
/// itself with SIGKILL, as a crash or `kill -9` would. Points: `step` (after an
/// optimiser step, before the run records it), `write` (half-way through writing
/// an output file), `sharing` (inside Selective Sharing's step). Without the
/// variable a point costs one atomic load.
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("SSKERNEL_CRASH_AT").ok()?;
        let (point, n) = v.split_once(':')?;
        Some((point.to_string(), n.parse().ok()?))
    });
    if let Some((point, n)) = target {
        if point == name && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            #[cfg(unix)]
            // SAFETY: sends SIGKILL to this process; nothing runs after it.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::process::abort();
        }
    }
}
