//! The reader fuzz harness (tests/fuzz_readers.rs): seeded mutations of valid
//! files, a loop that says which seed and iteration failed, a watchdog for hangs,
//! and a per-thread counting allocator to bound what a reader allocates.
//!
//! Reproduce a failure with the seed and iteration it prints:
//! `SSKERNEL_FUZZ_SEED=S SSKERNEL_FUZZ_ITER=I cargo test --test fuzz_readers NAME`.
//! `SSKERNEL_FUZZ_ITERS=N` runs N mutations per reader instead of `ITERATIONS`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mutations per reader (issue 17: at least 10,000).
pub const ITERATIONS: usize = 10_000;
/// The base seed when `SSKERNEL_FUZZ_SEED` is not set.
pub const DEFAULT_SEED: u64 = 17;
/// One reader call taking longer than this is a hang: the process aborts, naming it.
pub const HANG_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Mutations

/// Values that break size arithmetic when written over a length, count or
/// dimension: zero, one, sign bits, all ones, 2^32 and 2^40 (a header claiming
/// 2^40 elements must be refused before anything that size is allocated).
const WORDS: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// What the decimal numbers of a text format (a .npy shape, safetensors offsets,
/// CSV cells, line fields) are replaced with.
const NUMBERS: [&str; 16] = [
    "0",
    "1",
    "-1",
    "2",
    "255",
    "256",
    "65536",
    "4294967295",
    "4294967296",
    "1099511627776",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211457",
    "1e308",
];

/// `valid` after 1 to 4 random edits, and a description of each (printed when the
/// reader fails on it). Positions favour the first 64 bytes, where headers are.
pub fn mutate(rng: &mut ChaCha8Rng, valid: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut bytes = valid.to_vec();
    let edits = match rng.random_range(0..20) {
        0..12 => 1,
        12..17 => 2,
        _ => rng.random_range(3..=4),
    };
    let log = (0..edits).map(|_| edit(rng, &mut bytes)).collect();
    (bytes, log)
}

fn position(rng: &mut ChaCha8Rng, len: usize) -> usize {
    match len {
        0 => 0,
        _ if rng.random_bool(0.5) => rng.random_range(0..len.min(64)),
        _ => rng.random_range(0..len),
    }
}

fn edit(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) -> String {
    let len = b.len();
    match rng.random_range(0..9) {
        0 => {
            let at = rng.random_range(0..=len);
            b.truncate(at);
            format!("truncate to {at} bytes")
        }
        1 if len > 0 => {
            let at = position(rng, len);
            let bit = rng.random_range(0..8);
            b[at] ^= 1 << bit;
            format!("flip bit {bit} of byte {at}")
        }
        2 if len > 0 => {
            let at = position(rng, len);
            let v = rng.random();
            b[at] = v;
            format!("byte {at} = 0x{v:02x}")
        }
        3 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..=8);
            let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            b.splice(at..at, ins.iter().copied());
            format!("insert {ins:02x?} at {at}")
        }
        4 if len > 0 => {
            let at = rng.random_range(0..len);
            let n = rng.random_range(1..=16).min(len - at);
            b.drain(at..at + n);
            format!("delete {n} bytes at {at}")
        }
        5 if len > 0 => {
            // A length, count or dimension field overwritten, either byte order.
            let width = [2, 4, 8][rng.random_range(0..3)];
            let at = position(rng, len);
            let v = WORDS[rng.random_range(0..WORDS.len())];
            let big = rng.random_bool(0.5);
            let word = if big {
                v.to_be_bytes()[8 - width..].to_vec()
            } else {
                v.to_le_bytes()[..width].to_vec()
            };
            let end = (at + width).min(len);
            b[at..end].copy_from_slice(&word[..end - at]);
            let order = if big { "big" } else { "little" };
            format!("{width}-byte {order}-endian 0x{v:x} at {at}")
        }
        6 if len > 0 => {
            // A range repeated in place: duplicated records, lines, header keys.
            let at = rng.random_range(0..len);
            let n = rng.random_range(1..=64).min(len - at);
            let copy = b[at..at + n].to_vec();
            b.splice(at..at, copy);
            format!("repeat {n} bytes at {at}")
        }
        _ => number(rng, b).unwrap_or_else(|| edit(rng, b)),
    }
}

/// Replaces one run of ASCII digits with a value from `NUMBERS`; None when the
/// bytes hold no digits.
fn number(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) -> Option<String> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return None;
    }
    let run = runs[rng.random_range(0..runs.len())].clone();
    let text = NUMBERS[rng.random_range(0..NUMBERS.len())];
    let old = String::from_utf8_lossy(&b[run.clone()]).into_owned();
    b.splice(run.clone(), text.bytes());
    Some(format!("number {old} at {} = {text}", run.start))
}

// ---------------------------------------------------------------------------
// The loop

/// Runs `case` for every iteration of `name` with its own seeded RNG; `case`
/// returns whether the reader accepted the input. `case` writes what it did into
/// `Case::log`; when it panics (a reader panicked, or an assertion on its result
/// failed) the seed, iteration and log are printed. Prints and returns how many
/// inputs were accepted, of how many.
pub fn run(name: &'static str, mut case: impl FnMut(&mut Case) -> bool) -> (usize, usize) {
    let seed = env_u64("SSKERNEL_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let iterations = env_u64("SSKERNEL_FUZZ_ITERS").map_or(ITERATIONS, |n| n as usize);
    let only = env_u64("SSKERNEL_FUZZ_ITER").map(|i| i as usize);
    let slot = watchdog().register(name);
    let start = Instant::now();
    let (mut ran, mut accepted) = (0, 0);
    for i in (0..iterations).filter(|&i| only.is_none_or(|o| o == i)) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64);
        let mut c = Case {
            rng,
            log: Vec::new(),
            report: Report { name, seed, i },
        };
        slot.start(i);
        accepted += usize::from(case(&mut c));
        ran += 1;
    }
    slot.done();
    eprintln!(
        "fuzz {name}: {ran} mutations (seed {seed}) in {:.2} s, {accepted} accepted",
        start.elapsed().as_secs_f64()
    );
    (ran, accepted)
}

/// One iteration: its RNG and a log of what it did.
pub struct Case {
    pub rng: ChaCha8Rng,
    pub log: Vec<String>,
    report: Report,
}

impl Case {
    /// `valid` mutated, the edits logged.
    pub fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let (bytes, log) = mutate(&mut self.rng, valid);
        self.log.extend(log);
        bytes
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }
}

struct Report {
    name: &'static str,
    seed: u64,
    i: usize,
}

impl Drop for Case {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let Report { name, seed, i } = self.report;
            eprintln!(
                "fuzz {name}: failed at seed {seed}, iteration {i}: {}\n  \
                 rerun: SSKERNEL_FUZZ_SEED={seed} SSKERNEL_FUZZ_ITER={i} \
                 cargo test --test fuzz_readers {name}",
                self.log.join("; ")
            );
        }
    }
}

fn env_u64(key: &str) -> Option<u64> {
    let v = std::env::var(key).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
    )
}

/// Whether a reader accepted its input; an error (its message) must name `file`
/// by its full path.
pub fn accepted<T>(read: Result<T, String>, file: &Path) -> bool {
    match read {
        Ok(_) => true,
        Err(message) => {
            assert!(
                message.contains(&file.display().to_string()),
                "the error does not name {}: {message}",
                file.display()
            );
            false
        }
    }
}

// ---------------------------------------------------------------------------
// Files

/// A directory for the mutated files: on tmpfs (`/dev/shm`) where there is one, so
/// 10,000 writes (and the `.gz` cache's fsyncs) cost no disk I/O.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir()),
        false => tempfile::tempdir(),
    }
    .expect("a scratch directory")
}

/// Replaces `path` with `bytes`. The old file is removed first: rewriting a file in
/// place makes ext4 flush it on close (its replace-via-truncate heuristic), 10×
/// slower than writing a new one.
pub fn put(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `dir/name`, made with its parents.
pub fn file_in(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

// ---------------------------------------------------------------------------
// Allocation bound

/// Counts the bytes each thread has allocated and not freed, and the peak since
/// `peak_during` started; install with `#[global_allocator]` in the test binary.
/// Per thread, so tests running in parallel do not see each other's allocations;
/// what a reader allocates on rayon's workers is not seen either (the readers
/// fuzzed allocate their buffers on the calling thread; workers only fill them).
pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counting
// touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f`; returns its result and the most bytes this thread held at once
/// during it beyond what it held before.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get);
    (r, (peak - base).max(0) as usize)
}

/// Runs `read` and asserts it allocated at most `per_byte` × `file_len` + `slack`
/// bytes: what the file can justify, with `slack` for fixed buffers.
pub fn bounded<R>(
    what: &str,
    file_len: usize,
    per_byte: usize,
    slack: usize,
    read: impl FnOnce() -> R,
) -> R {
    let (r, peak) = peak_during(read);
    let limit = per_byte * file_len + slack;
    assert!(
        peak <= limit,
        "{what} allocated {peak} bytes for a {file_len}-byte file (limit {limit})"
    );
    r
}

// ---------------------------------------------------------------------------
// Watchdog

/// One thread for the whole binary that aborts the process when a fuzz
/// iteration runs past `HANG_LIMIT`, printing which: a hung reader would
/// otherwise hang `cargo test` with nothing said.
pub struct Watchdog {
    loops: Mutex<Vec<(&'static str, &'static Slot)>>,
}

/// Where one fuzz loop is: its iteration and when it started (ms since `EPOCH`;
/// `u64::MAX` when idle).
pub struct Slot {
    iteration: AtomicU64,
    since_ms: AtomicU64,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Slot {
    fn start(&self, i: usize) {
        self.iteration.store(i as u64, Ordering::Relaxed);
        self.since_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn done(&self) {
        self.since_ms.store(u64::MAX, Ordering::Relaxed);
    }
}

fn watchdog() -> &'static Watchdog {
    static DOG: OnceLock<Watchdog> = OnceLock::new();
    DOG.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = now_ms();
            let dog = watchdog();
            for (name, slot) in dog.loops.lock().unwrap().iter() {
                let since = slot.since_ms.load(Ordering::Relaxed);
                if since != u64::MAX && now.saturating_sub(since) > HANG_LIMIT.as_millis() as u64 {
                    eprintln!(
                        "fuzz {name}: iteration {} has run for over {} s: a hang; \
                         rerun it with SSKERNEL_FUZZ_ITER={0}",
                        slot.iteration.load(Ordering::Relaxed),
                        HANG_LIMIT.as_secs()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog {
            loops: Mutex::new(Vec::new()),
        }
    })
}

impl Watchdog {
    fn register(&self, name: &str) -> &'static Slot {
        let slot: &'static Slot = Box::leak(Box::new(Slot {
            iteration: AtomicU64::new(0),
            since_ms: AtomicU64::new(u64::MAX),
        }));
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        self.loops.lock().unwrap().push((name, slot));
        slot
    }
}
