//! Where a step's time goes, op by op, on any device: off by default (an op then
//! pays one relaxed atomic load); between [`start`] and [`stop`] every op call is
//! recorded with its wall time. The CPU ops record themselves ([`span`], one line
//! at the top of each); the kernel devices record each executed plan, synchronised
//! before and after, under its kernels' names (`launch::KernelDevice::execute`), so
//! a new op is profiled without being listed anywhere else. `benches/ops.rs` prints
//! the table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

/// One op call: its name (a kernel device: the plan's kernels, `+`-joined), a
/// short description of its shape, and its wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub op: String,
    pub shape: String,
    pub ms: f64,
}

/// Starts recording (and forgets earlier records). Profiling is process-wide: one
/// profiled run at a time.
pub fn start() {
    records().clear();
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the records since [`start`], in call order.
pub fn stop() -> Vec<Record> {
    ON.store(false, Ordering::Relaxed);
    std::mem::take(&mut *records())
}

pub fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

fn records() -> std::sync::MutexGuard<'static, Vec<Record>> {
    RECORDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records `ms` for `op` at `shape` (while profiling is on).
pub fn record(op: String, shape: String, ms: f64) {
    if is_on() {
        records().push(Record { op, shape, ms });
    }
}

/// Times the rest of the enclosing scope as one call of `op` (a synchronous op:
/// the CPU's). `shape` runs only while profiling is on.
#[must_use = "the span times the scope it is bound in: `let _span = …`"]
pub fn span(op: &'static str, shape: impl FnOnce() -> String) -> Span {
    Span(is_on().then(|| (op, shape(), Instant::now())))
}

/// A running [`span`]; records on drop.
pub struct Span(Option<(&'static str, String, Instant)>);

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((op, shape, started)) = self.0.take() {
            record(op.to_string(), shape, started.elapsed().as_secs_f64() * 1e3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test owns the process-wide switch (tests in this binary run in parallel).
    #[test]
    fn records_only_between_start_and_stop_in_call_order() {
        drop(span("before", || unreachable!("shape asked for while off")));
        start();
        drop(span("a", || "1×2".into()));
        {
            let _s = span("b", || "3".into());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let got = stop();
        drop(span("after", || unreachable!("shape asked for while off")));
        // Other tests' CPU ops may run meanwhile: only this test's spans count.
        let mine: Vec<&Record> = got
            .iter()
            .filter(|r| ["a", "b"].contains(&&*r.op))
            .collect();
        let names: Vec<(&str, &str)> = mine
            .iter()
            .map(|r| (r.op.as_str(), r.shape.as_str()))
            .collect();
        assert_eq!(names, [("a", "1×2"), ("b", "3")]);
        assert!(mine[1].ms >= 2.0, "{got:?}");
    }
}
