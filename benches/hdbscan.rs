//! HDBSCAN: ours against the Python `hdbscan` library and scikit-learn on the same
//! points (DESIGN.md §7). Blobs (10 centres, std 1) plus 5% uniform noise over their
//! bounding box, n × d (n = 100000 and d = 8 unless HDBSCAN_BENCH_N / HDBSCAN_BENCH_D
//! are set; the input `scripts/bench-hdbscan.sh` uses, from another generator),
//! min_cluster_size 5. Prints our time per step and, where the venv exists
//! (scripts/python-venv.sh; `$SSKERNEL_PYTHON` or `.venv/bin/python`), the
//! libraries' times and the ratios. `cargo bench --bench hdbscan`.
//!
//! Library runs: "best" (its default: Boruvka KD-tree, approximate MST), "generic"
//! (the dense exact algorithm ours mirrors; needs an n × n matrix, 3.2 GB at 20k),
//! scikit-learn's HDBSCAN (KD-tree Prim). Above 20k points only "best" runs unless
//! HDBSCAN_BENCH_ONLY names others. Python's timings exclude its start-up.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::data::npy;
use sskernel::sharing::hdbscan::{hdbscan_timed, HdbscanParams};

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn main() {
    let n: usize = std::env::var("HDBSCAN_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let d: usize = std::env::var("HDBSCAN_BENCH_D")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let centres: Vec<Vec<f64>> = (0..10)
        .map(|_| (0..d).map(|_| rng.random_range(-10.0..10.0)).collect())
        .collect();
    let mut points = Vec::with_capacity(n * d);
    let blobs = n - n / 20;
    for i in 0..blobs {
        let c = &centres[i % centres.len()];
        points.extend(c.iter().map(|x| x + normal(&mut rng)));
    }
    let (mut lo, mut hi) = (vec![f64::INFINITY; d], vec![f64::NEG_INFINITY; d]);
    for p in points.chunks_exact(d) {
        for k in 0..d {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    for _ in blobs..n {
        points.extend((0..d).map(|k| rng.random_range(lo[k]..=hi[k])));
    }
    let params = HdbscanParams::new(5);
    println!(
        "hdbscan bench: {n} x {d} blobs (10 centres) + 5% noise, min_cluster_size 5, {} threads",
        rayon::current_num_threads()
    );

    let t = Instant::now();
    let (c, times) = hdbscan_timed(&points, n, d, &params).unwrap();
    let ours = t.elapsed().as_secs_f64();
    println!(
        "ours:    {ours:8.3} s  (core distances {:.3} s, MST {:.3} s, tree {:.3} s); {} clusters, {} noise",
        times.core_distances,
        times.mst,
        times.tree,
        c.n_clusters(),
        c.noise_count()
    );

    let py = std::env::var_os("SSKERNEL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if !py.exists() {
        println!(
            "python reference: skipped, no venv at {} (run scripts/python-venv.sh)",
            py.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("points.npy");
    npy::write_f64_matrix(&file, &points, n, d).unwrap();
    let only = std::env::var("HDBSCAN_BENCH_ONLY").unwrap_or_else(|_| {
        if n <= 20_000 {
            "best,generic,sklearn".into()
        } else {
            "best".into()
        }
    });
    let status = Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/hdbscan_reference.py"
        ))
        .arg(&file)
        .args(["--out".as_ref(), dir.path().as_os_str()])
        .args(["--min-cluster-size", "5", "--only", &only])
        .status()
        .expect("running tests/python/hdbscan_reference.py");
    assert!(status.success(), "hdbscan_reference.py failed");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("meta.json")).unwrap())
            .unwrap();
    for (name, what) in [
        (
            "best",
            "hdbscan 0.8.44, defaults (Boruvka KD-tree, approximate MST)",
        ),
        (
            "generic",
            "hdbscan 0.8.44, algorithm=generic (dense, exact)",
        ),
        ("sklearn", "scikit-learn HDBSCAN (KD-tree Prim)"),
    ] {
        if let Some(s) = meta["seconds"][name].as_f64() {
            println!(
                "{name:<8} {s:8.3} s  ours/theirs = {:.2}  [{what}]",
                ours / s
            );
        }
    }
    let labels =
        |name: &str| npy::read_i64_vector(&dir.path().join(format!("{name}_labels.npy"))).ok();
    if let Some(g) = labels("generic") {
        println!(
            "labels identical to the library's generic run: {}",
            g == c.labels
        );
    }
}
