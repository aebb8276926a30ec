//! Where a step's time goes, op by op, on any device: off by default (an op then
//! pays one relaxed atomic load); between [`start`] and [`stop`] every op call is
//! recorded with its wall time. The CPU ops record themselves ([`span`], one line
//! at the top of each); the kernel devices record each executed plan
//! (`launch::KernelDevice::execute`), so a new op is profiled without being listed
//! anywhere else: `cuda` each launch under its kernel's name with its time on the
//! device (CUDA events around it), `sim` each plan, synchronised before and after,
//! under its kernels' names. `benches/ops.rs` prints the table.
//!
//! A whole run (`sskernel train --profile`) records [`totals`] instead, per op and
//! per training [`phase`], which also marks its phases as NVTX ranges for nsys.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());
/// Set by [`start_totals`]: records add up per op and shape instead of piling up
/// (a run makes millions of op calls).
static TOTALS_ON: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<(String, String), (usize, f64)>> = Mutex::new(BTreeMap::new());

/// One op call: its name (cuda: the kernel; sim: the plan's kernels, `+`-joined), a
/// short description of its shape, and its time (cuda: on the device; else wall).
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
    if !is_on() {
        return;
    }
    if TOTALS_ON.load(Ordering::Relaxed) {
        let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
        let (calls, sum) = totals.entry((op, shape)).or_default();
        *calls += 1;
        *sum += ms;
    } else {
        records().push(Record { op, shape, ms });
    }
}

/// Starts recording totals per op and shape (and forgets earlier ones).
pub fn start_totals() {
    TOTALS.lock().unwrap_or_else(|p| p.into_inner()).clear();
    TOTALS_ON.store(true, Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the totals since [`start_totals`]: each row's calls
/// and summed milliseconds, slowest first.
pub fn stop_totals() -> Vec<Row> {
    ON.store(false, Ordering::Relaxed);
    TOTALS_ON.store(false, Ordering::Relaxed);
    let totals = std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|p| p.into_inner()));
    let mut rows: Vec<Row> = totals
        .into_iter()
        .map(|((op, shape), (calls, ms))| Row {
            op,
            shape,
            calls,
            ms,
        })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

/// How phase records are named among the ops: `phase forward`, …
const PHASE: &str = "phase ";

/// Times the rest of the enclosing scope as one `name` phase of training (data,
/// forward, loss, backward, optimiser, sharing, evaluation, checkpoint) while
/// profiling is on, and marks it as an NVTX range whenever libnvToolsExt can be
/// loaded (so `nsys profile` shows the phases). The ops inside are recorded too.
#[must_use = "the phase times the scope it is bound in: `let _phase = …`"]
pub fn phase(name: &'static str) -> Phase {
    nvtx::push(name);
    Phase(name, is_on().then(Instant::now))
}

/// A running [`phase`]; records and closes its NVTX range on drop.
pub struct Phase(&'static str, Option<Instant>);

impl Phase {
    /// Runs `f` as the whole phase.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        f()
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(started) = self.1.take() {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            record(format!("{PHASE}{}", self.0), String::new(), ms);
        }
        nvtx::pop();
    }
}

/// NVTX ranges through libnvToolsExt, loaded at the first phase; without it
/// (no CUDA toolkit, the CPU) every call is a no-op.
mod nvtx {
    use std::ffi::{c_char, c_int, CString};
    use std::sync::OnceLock;

    struct Nvtx {
        push: unsafe extern "C" fn(*const c_char) -> c_int,
        pop: unsafe extern "C" fn() -> c_int,
        _lib: libloading::Library,
    }

    fn nvtx() -> Option<&'static Nvtx> {
        static NVTX: OnceLock<Option<Nvtx>> = OnceLock::new();
        NVTX.get_or_init(|| {
            // SAFETY: loading the NVTX library runs no initialisation beyond its
            // own; the two symbols have these C signatures (nvToolsExt.h).
            unsafe {
                let lib = ["libnvToolsExt.so.1", "libnvToolsExt.so"]
                    .iter()
                    .find_map(|&name| libloading::Library::new(name).ok())?;
                let push = *lib.get(b"nvtxRangePushA\0").ok()?;
                let pop = *lib.get(b"nvtxRangePop\0").ok()?;
                Some(Nvtx {
                    push,
                    pop,
                    _lib: lib,
                })
            }
        })
        .as_ref()
    }

    pub fn push(name: &str) {
        if let (Some(n), Ok(name)) = (nvtx(), CString::new(name)) {
            // SAFETY: a valid C string, copied by NVTX during the call.
            unsafe { (n.push)(name.as_ptr()) };
        }
    }

    pub fn pop() {
        if let Some(n) = nvtx() {
            // SAFETY: pops the range `push` opened (phases nest as scopes do).
            unsafe { (n.pop)() };
        }
    }
}

/// A run's totals ([`stop_totals`]) as Markdown: the phases, then the ops and
/// kernels, each with its share of the phases' total time.
pub fn totals_markdown(rows: &[Row]) -> String {
    let (phases, ops): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.op.starts_with(PHASE));
    // Phases nest only inside other scopes (never in each other), so they add up.
    let total: f64 = phases.iter().map(|r| r.ms).sum();
    let mut out = String::from("| phase | calls | ms | share |\n|---|---:|---:|---:|\n");
    for r in &phases {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1}% |\n",
            &r.op[PHASE.len()..],
            r.calls,
            r.ms,
            100.0 * r.ms / total
        ));
    }
    out.push_str("\n| op or kernels | shape | calls | ms | share |\n|---|---|---:|---:|---:|\n");
    for r in &ops {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1}% |\n",
            r.op,
            r.shape,
            r.calls,
            r.ms,
            100.0 * r.ms / total
        ));
    }
    out
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

/// One row of a per-op table: an op at one shape, its calls per step, and the
/// median over steps of its summed time in a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub op: String,
    pub shape: String,
    pub calls: usize,
    pub ms: f64,
}

/// The per-op table of several profiled steps (each step's records, as [`stop`]
/// returns them), slowest first.
pub fn per_op(steps: &[Vec<Record>]) -> Vec<Row> {
    let mut by_op: BTreeMap<(&str, &str), Vec<Vec<f64>>> = BTreeMap::new();
    for (k, records) in steps.iter().enumerate() {
        for r in records {
            let per_step = by_op.entry((&r.op, &r.shape)).or_default();
            per_step.resize(k + 1, Vec::new());
            per_step[k].push(r.ms);
        }
    }
    let mut rows: Vec<Row> = by_op
        .into_iter()
        .map(|((op, shape), mut per_step)| {
            per_step.resize(steps.len(), Vec::new());
            let mut sums: Vec<f64> = per_step.iter().map(|c| c.iter().sum()).collect();
            Row {
                op: op.to_string(),
                shape: shape.to_string(),
                calls: per_step[0].len(),
                ms: median(&mut sums),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

/// The median (the upper one of an even count); NaN for none.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `rows` as a Markdown table, each op's share of a `step_ms` step beside it.
pub fn markdown(rows: &[Row], step_ms: f64) -> String {
    let mut out = String::from("| op | shape | calls/step | ms/step (median) | share |\n");
    out.push_str("|---|---|---:|---:|---:|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.1}% |\n",
            r.op,
            r.shape,
            r.calls,
            r.ms,
            100.0 * r.ms / step_ms
        ));
    }
    out
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

        // A run's totals: calls add up per op and shape, phases beside the ops.
        start_totals();
        for _ in 0..3 {
            let _phase = phase("forward");
            drop(span("a", || "1×2".into()));
        }
        let rows = stop_totals();
        drop(span("after", || unreachable!("shape asked for while off")));
        let row = |op: &str| rows.iter().find(|r| r.op == op).map(|r| r.calls);
        assert_eq!(
            (row("a"), row("phase forward")),
            (Some(3), Some(3)),
            "{rows:?}"
        );
        let table = totals_markdown(&rows);
        assert!(
            table.contains("| forward | 3 |") && table.contains("| a | 1×2 | 3 |"),
            "{table}"
        );
    }

    #[test]
    fn per_op_sums_calls_within_a_step_and_takes_the_median_step() {
        let rec = |op: &str, ms| Record {
            op: op.into(),
            shape: "s".into(),
            ms,
        };
        let steps = [
            vec![rec("a", 1.0), rec("b", 5.0), rec("a", 2.0)],
            vec![rec("a", 10.0), rec("b", 6.0), rec("a", 20.0)],
            vec![rec("a", 4.0), rec("b", 7.0), rec("a", 4.0)],
        ];
        let rows = per_op(&steps);
        let got: Vec<(&str, usize, f64)> = rows.iter().map(|r| (&*r.op, r.calls, r.ms)).collect();
        assert_eq!(got, [("a", 2, 8.0), ("b", 1, 6.0)]);
        assert!(markdown(&rows, 16.0).contains("| a | s | 2 | 8.000 | 50.0% |"));
    }
}
