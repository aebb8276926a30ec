//! TT-SVD parity with Python (DESIGN.md §5.2–3, §6): our `tt_svd` against a plain
//! numpy TT-SVD (reshape + `np.linalg.svd` truncated at the maximum rank) and
//! tensorly's `tensor_train(tensor, rank=[1, R, …, R, 1])`, run on the same inputs
//! by tests/python/ttsvd_reference.py in the venv that scripts/python-venv.sh creates
//! (`$SSKERNEL_PYTHON`, else `.venv/bin/python`). Data goes both ways as `.npy`.
//!
//! Per 4-way tensor (random low-rank TTs plus 1e-2 Gaussian noise, and one exactly
//! rank-deficient tensor asked for a larger rank):
//! - reconstruction: ‖ours − numpy‖/‖numpy‖ ≤ 1e-4 (and against tensorly's);
//! - relative error ‖T − T̂‖/‖T‖: within 1e-4 (relative) of numpy's and tensorly's.
//!
//! For the batched entry point on 10 branches of `[100, 640]` f32 gradients in three
//! related groups: each branch's reconstruction within 1e-4 of numpy's TT-SVD of
//! `G.reshape(10, 10, 20, 32)` (checks the reshape convention too), and the descriptor
//! distances (ours from the cores) within 1e-6 absolute of numpy's distances between
//! the expanded, normalised reconstructions.
//!
//! The reconstructions are compared, never the cores: the SVD's sign freedom makes
//! the cores of two implementations differ (see src/sharing/ttsvd.rs, gauge).
//!
//! Without the venv the test skips loudly, or fails when `CI` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::data::npy;
use sskernel::sharing::ttsvd::{
    branch_descriptors, descriptor_distances, relative_error, tt_svd, TensorTrain,
};

/// ‖ours − reference‖/‖reference‖ for reconstructions.
const RECON_RTOL: f64 = 1e-4;
/// |err_ours − err_ref| / err_ref for the relative errors ‖T − T̂‖/‖T‖.
const ERROR_RTOL: f64 = 1e-4;
/// |d_ours − d_numpy| for descriptor distances (ours: from the cores).
const DIST_ATOL: f64 = 1e-6;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Option<PathBuf> {
    common::python("numpy, tensorly", "ttsvd parity")
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A random TT tensor with the given ranks, scaled to RMS 1, plus N(0, noise²) noise.
fn low_rank_plus_noise(seed: u64, dims: &[usize], ranks: &[usize], noise: f64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tt = TensorTrain {
        dims: dims.to_vec(),
        ranks: ranks.to_vec(),
        cores: (0..dims.len())
            .map(|k| {
                (0..ranks[k] * dims[k] * ranks[k + 1])
                    .map(|_| gaussian(&mut rng))
                    .collect()
            })
            .collect(),
    };
    let mut t = tt.reconstruct();
    let rms = (t.iter().map(|v| v * v).sum::<f64>() / t.len() as f64).sqrt();
    for v in &mut t {
        *v = *v / rms + noise * gaussian(&mut rng);
    }
    t
}

/// Three groups of related [out, in] gradients: group base (rank 5) + a branch's own
/// rank-5 part at 0.3 + 1e-2 noise. grads: [branches, out, in], f32.
fn grouped_grads(seed: u64, branches: usize, out: usize, inp: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let low_rank = |rng: &mut ChaCha8Rng, scale: f64| -> Vec<f64> {
        let a: Vec<f64> = (0..out * 5).map(|_| gaussian(rng)).collect();
        let b: Vec<f64> = (0..inp * 5).map(|_| gaussian(rng)).collect();
        let mut m = vec![0.0; out * inp];
        for o in 0..out {
            for i in 0..inp {
                m[o * inp + i] = scale * (0..5).map(|k| a[o * 5 + k] * b[i * 5 + k]).sum::<f64>();
            }
        }
        m
    };
    let bases: Vec<Vec<f64>> = (0..3).map(|_| low_rank(&mut rng, 1.0)).collect();
    let mut grads = Vec::with_capacity(branches * out * inp);
    for b in 0..branches {
        let own = low_rank(&mut rng, 0.3);
        for (x, y) in bases[b % 3].iter().zip(&own) {
            grads.push((x + y + 1e-2 * gaussian(&mut rng)) as f32);
        }
    }
    grads
}

fn write_npy(path: &Path, shape: &[usize], data: &[f64]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, npy::encode("<f8", shape, &bytes))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn read_npy(path: &Path, shape: &[usize]) -> Vec<f64> {
    let (got, data) =
        npy::read_f64_array(path).unwrap_or_else(|e| panic!("reading the reference: {e}"));
    assert_eq!(got, shape, "{}: shape", path.display());
    data
}

/// value ≤ tol, false for NaN.
fn within(value: f64, tol: f64) -> bool {
    value <= tol
}

fn rel_diff(a: &[f64], reference: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(reference)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let den: f64 = reference.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

struct TensorCase {
    name: &'static str,
    dims: Vec<usize>,
    ranks: Vec<usize>,
    noise: f64,
    max_rank: usize,
}

#[test]
fn ttsvd_matches_numpy_and_tensorly() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let cases = [
        TensorCase {
            name: "lowrank_10x10x20x32",
            dims: vec![10, 10, 20, 32],
            ranks: vec![1, 4, 4, 4, 1],
            noise: 1e-2,
            max_rank: 4,
        },
        TensorCase {
            name: "lowrank_3x5x7x4",
            dims: vec![3, 5, 7, 4],
            ranks: vec![1, 3, 4, 4, 1],
            noise: 1e-2,
            max_rank: 4,
        },
        // Signal rank 2 under noise, asked for 4: the extra two ranks are noise.
        TensorCase {
            name: "rank2_noise_R4_10x10x20x32",
            dims: vec![10, 10, 20, 32],
            ranks: vec![1, 2, 2, 2, 1],
            noise: 1e-2,
            max_rank: 4,
        },
        // Exactly rank 2, asked for 4: we stop at the numerical rank, numpy does not.
        TensorCase {
            name: "exact_rank2_R4_6x6x6x6",
            dims: vec![6, 6, 6, 6],
            ranks: vec![1, 2, 2, 2, 1],
            noise: 0.0,
            max_rank: 4,
        },
    ];
    let (branches, out, inp, max_rank) = (10, 100, 640, 4);

    let mut manifest = Vec::new();
    let mut tensors = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let t = low_rank_plus_noise(100 + i as u64, &c.dims, &c.ranks, c.noise);
        write_npy(&dir.join(format!("{}.npy", c.name)), &c.dims, &t);
        manifest
            .push(serde_json::json!({"name": c.name, "kind": "tensor", "max_rank": c.max_rank}));
        tensors.push(t);
    }
    let grads = grouped_grads(7, branches, out, inp);
    let grads64: Vec<f64> = grads.iter().map(|&v| v as f64).collect();
    write_npy(&dir.join("grads.npy"), &[branches, out, inp], &grads64);
    manifest.push(serde_json::json!({"name": "grads", "kind": "branches", "max_rank": max_rank}));
    std::fs::write(
        dir.join("cases.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();

    let t = Instant::now();
    let run = Command::new(&py)
        .arg(repo().join("tests/python/ttsvd_reference.py"))
        .arg(dir)
        .output()
        .expect("running tests/python/ttsvd_reference.py");
    let python_seconds = t.elapsed().as_secs_f64();
    assert!(
        run.status.success(),
        "ttsvd_reference.py failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    eprintln!(
        "reference: {} ({python_seconds:.2} s with interpreter start)",
        results["versions"]
    );

    let mut failures = Vec::new();
    for (c, t) in cases.iter().zip(&tensors) {
        let r = &results["cases"][c.name];
        let tt = tt_svd(t, &c.dims, c.max_rank);
        let ours = tt.reconstruct();
        let err = relative_error(t, &tt);
        let numpy = read_npy(&dir.join(format!("{}.numpy.npy", c.name)), &c.dims);
        let tensorly = read_npy(&dir.join(format!("{}.tensorly.npy", c.name)), &c.dims);
        let vs_numpy = rel_diff(&ours, &numpy);
        let vs_tensorly = rel_diff(&ours, &tensorly);
        let err_np = r["numpy_rel_error"].as_f64().unwrap();
        let err_tl = r["tensorly_rel_error"].as_f64().unwrap();
        // An exact input has errors at rounding level: compare them absolutely.
        let err_diff = |e: f64| (err - e).abs() / e.max(1e-10);
        eprintln!(
            "{:28} ranks ours {:?} numpy {} tensorly {}; rel. error ours {err:.6e} numpy {err_np:.6e} \
             tensorly {err_tl:.6e}; ‖ours − numpy‖/‖numpy‖ {vs_numpy:.1e}, vs tensorly {vs_tensorly:.1e}",
            c.name, tt.ranks, r["numpy_ranks"], r["tensorly_ranks"]
        );
        for (what, value, tol) in [
            ("reconstruction vs numpy", vs_numpy, RECON_RTOL),
            ("reconstruction vs tensorly", vs_tensorly, RECON_RTOL),
            ("relative error vs numpy", err_diff(err_np), ERROR_RTOL),
            ("relative error vs tensorly", err_diff(err_tl), ERROR_RTOL),
        ] {
            if !within(value, tol) {
                failures.push(format!("{}: {what}: {value:e} > {tol:e}", c.name));
            }
        }
    }

    // The batched entry point, timed as the sharing step calls it (best of 5).
    let mut best = f64::INFINITY;
    let (mut tts, mut dist) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        tts = branch_descriptors(&grads, branches, out, inp, max_rank);
        dist = descriptor_distances(&tts);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let r = &results["cases"]["grads"];
    eprintln!(
        "branch_descriptors + descriptor_distances, {branches} × [{out}, {inp}], R = {max_rank}: \
         {:.1} ms (best of 5, {} rayon threads); numpy TT-SVD loop {:.1} ms; dims {}",
        best * 1e3,
        rayon::current_num_threads(),
        r["numpy_seconds"].as_f64().unwrap() * 1e3,
        r["dims"]
    );
    let numpy = read_npy(&dir.join("grads.numpy.npy"), &[branches, out, inp]);
    let numpy_dist = read_npy(&dir.join("grads.distances.npy"), &[branches, branches]);
    let per = out * inp;
    let mut worst = 0.0f64;
    for (b, tt) in tts.iter().enumerate() {
        assert_eq!(tt.dims, [10, 10, 20, 32]);
        let d = rel_diff(&tt.reconstruct(), &numpy[b * per..(b + 1) * per]);
        worst = worst.max(d);
        if !within(d, RECON_RTOL) {
            failures.push(format!("grads branch {b}: reconstruction vs numpy {d:e}"));
        }
    }
    // Every distance finite, on both sides: f64::max would drop a NaN.
    assert_eq!(dist.len(), branches * branches, "our distances");
    assert_eq!(numpy_dist.len(), branches * branches, "numpy's distances");
    for (side, d) in [("ours", &dist), ("numpy", &numpy_dist)] {
        if let Some(i) = d.iter().position(|v| !v.is_finite()) {
            failures.push(format!(
                "grads: distance ({}, {}) is {} ({side})",
                i / branches,
                i % branches,
                d[i]
            ));
        }
    }
    let dist_diff = dist
        .iter()
        .zip(&numpy_dist)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, |worst: f64, d| {
            if worst.is_nan() || d.is_nan() {
                f64::NAN
            } else {
                worst.max(d)
            }
        });
    eprintln!(
        "grads: worst branch ‖ours − numpy‖/‖numpy‖ {worst:.1e}; max |d_ours − d_numpy| {dist_diff:.1e}"
    );
    eprintln!("distances (ours):");
    for a in 0..branches {
        let row: Vec<String> = (0..branches)
            .map(|b| format!("{:.3}", dist[a * branches + b]))
            .collect();
        eprintln!("  {}", row.join(" "));
    }
    if !within(dist_diff, DIST_ATOL) {
        failures.push(format!(
            "grads: distances differ by {dist_diff:e} > {DIST_ATOL:e}"
        ));
    }
    assert!(
        failures.is_empty(),
        "TT-SVD parity failures:\n{}",
        failures.join("\n")
    );
}
