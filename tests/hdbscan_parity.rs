//! HDBSCAN parity with the Python reference libraries (DESIGN.md §5.4, §6): the
//! `hdbscan` library 0.8.44 and scikit-learn's `HDBSCAN`, run on the same points
//! through tests/python/hdbscan_reference.py in the venv that
//! scripts/python-venv.sh creates (`$SSKERNEL_PYTHON`, else `.venv/bin/python`).
//!
//! Per data set, against the library's `algorithm="generic"` (the dense exact
//! algorithm ours mirrors) with `metric="minkowski", p=2` (scipy's direct distance
//! formula, which gives the same bits as ours):
//! - Prim's MST rows: the same (from, to) in the same order, weights within 1e-12
//!   relative (Euclidean distances are summed in the same order as scipy's, so in
//!   practice they are bit-identical);
//! - labels: the same partition and the same noise points;
//! - with the library's MST sort made stable (its `np.argsort` is not; see
//!   src/sharing/hdbscan/mst.rs): identical label numbering, the same condensed
//!   tree (parent, child, size exact, λ within 1e-12 relative), probabilities and
//!   GLOSH outlier scores within 1e-12 absolute (NaN where the library has NaN).
//!
//! Against the library with its default metric ("euclidean": sklearn's
//! `|x|² − 2x·y + |y|²` distances, which put duplicates ~1e-7 apart) and against
//! scikit-learn's HDBSCAN at min_samples + 1: the same partition.
//!
//! The library's default *algorithm* ("best": Boruvka KD-tree with
//! `approx_min_span_tree=True` for d ≤ 60) is only reported: its tree is not a
//! minimum spanning tree, and on two of these sets it moves a noise point or splits a
//! moon (with `algorithm="prims_kdtree"` it agrees with us).
//!
//! Without the venv the test skips loudly, or fails when `CI` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sskernel::data::npy;
use sskernel::sharing::hdbscan::{
    distance::{core_distances, pairwise_euclidean, Distances},
    hdbscan, hdbscan_precomputed, hdbscan_with, mst, Algorithm, Clustering, HdbscanParams,
    Selection,
};

/// Cases whose points tie in distance exactly (integer grids, repeated points): the
/// tree path may pick another of the equal-weight MSTs there.
const TIED_DISTANCES: [&str; 2] = ["grid-ties", "duplicates"];

const LAMBDA_RTOL: f64 = 1e-12;
const PROB_ATOL: f64 = 1e-12;
const SCORE_ATOL: f64 = 1e-12;
const MST_RTOL: f64 = 1e-12;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Option<PathBuf> {
    common::python("hdbscan, sklearn, numpy", "hdbscan parity")
}

// ---- data sets -------------------------------------------------------------------

struct Data {
    points: Vec<f64>,
    n: usize,
    d: usize,
}

impl Data {
    fn new(d: usize) -> Self {
        Data {
            points: Vec::new(),
            n: 0,
            d,
        }
    }
    fn push(&mut self, p: &[f64]) {
        assert_eq!(p.len(), self.d);
        self.points.extend_from_slice(p);
        self.n += 1;
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; 1 − u keeps the log away from 0.
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Gaussian blobs: `sizes[i]` points around a random centre in [−box, box]^d.
fn blobs(rng: &mut ChaCha8Rng, d: usize, sizes: &[usize], std: f64, half_box: f64) -> Data {
    let mut data = Data::new(d);
    for &size in sizes {
        let centre: Vec<f64> = (0..d)
            .map(|_| rng.random_range(-half_box..half_box))
            .collect();
        for _ in 0..size {
            let p: Vec<f64> = centre.iter().map(|c| c + std * normal(rng)).collect();
            data.push(&p);
        }
    }
    data
}

fn uniform_noise(rng: &mut ChaCha8Rng, data: &mut Data, count: usize, half_box: f64) {
    for _ in 0..count {
        let p: Vec<f64> = (0..data.d)
            .map(|_| rng.random_range(-half_box..half_box))
            .collect();
        data.push(&p);
    }
}

/// Two interleaved half circles with Gaussian jitter (sklearn's make_moons).
fn moons(rng: &mut ChaCha8Rng, per_moon: usize, jitter: f64) -> Data {
    let mut data = Data::new(2);
    for i in 0..per_moon {
        let t = std::f64::consts::PI * i as f64 / (per_moon - 1) as f64;
        data.push(&[
            t.cos() + jitter * normal(rng),
            t.sin() + jitter * normal(rng),
        ]);
        data.push(&[
            1.0 - t.cos() + jitter * normal(rng),
            0.5 - t.sin() + jitter * normal(rng),
        ]);
    }
    data
}

/// Task-descriptor-like: unit vectors in 1024-D; `groups` of near-identical ones.
fn descriptors(rng: &mut ChaCha8Rng, groups: &[usize], singles: usize, spread: f64) -> Data {
    let d = 1024;
    let unit = |v: Vec<f64>| {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f64>>()
    };
    let mut data = Data::new(d);
    for &g in groups {
        let base: Vec<f64> = (0..d).map(|_| normal(rng)).collect();
        for _ in 0..g {
            data.push(&unit(
                base.iter().map(|b| b + spread * normal(rng)).collect(),
            ));
        }
    }
    for _ in 0..singles {
        data.push(&unit((0..d).map(|_| normal(rng)).collect()));
    }
    data
}

struct Case {
    name: &'static str,
    data: Data,
    params: HdbscanParams,
    precomputed: bool,
}

fn params(mcs: usize, ms: Option<usize>, selection: Selection, single: bool) -> HdbscanParams {
    HdbscanParams {
        min_cluster_size: mcs,
        min_samples: ms,
        selection,
        allow_single_cluster: single,
    }
}

fn cases() -> Vec<Case> {
    use Selection::{Eom, Leaf};
    let mut out = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(20190411);

    let mut d2 = blobs(&mut rng, 2, &[60, 60, 40], 0.6, 8.0);
    uniform_noise(&mut rng, &mut d2, 20, 10.0);
    out.push(Case {
        name: "blobs-2d",
        data: d2,
        params: params(5, None, Eom, false),
        precomputed: false,
    });

    let d2b = blobs(&mut rng, 2, &[80, 30, 30, 15], 0.9, 6.0);
    out.push(Case {
        name: "blobs-2d-leaf-ms1",
        data: d2b,
        params: params(6, Some(1), Leaf, false),
        precomputed: false,
    });

    let d8 = blobs(&mut rng, 8, &[50, 50, 50, 25], 1.0, 5.0);
    out.push(Case {
        name: "blobs-8d-ms3",
        data: d8,
        params: params(8, Some(3), Eom, false),
        precomputed: false,
    });

    let mut d64 = blobs(&mut rng, 64, &[40, 40, 30], 1.0, 2.0);
    uniform_noise(&mut rng, &mut d64, 10, 4.0);
    out.push(Case {
        name: "blobs-64d-leaf",
        data: d64,
        params: params(5, Some(7), Leaf, false),
        precomputed: false,
    });

    let mut m = moons(&mut rng, 100, 0.06);
    uniform_noise(&mut rng, &mut m, 25, 1.6);
    out.push(Case {
        name: "moons-noise",
        data: m,
        params: params(10, Some(5), Eom, false),
        precomputed: false,
    });

    // Duplicates: 30 distinct points, each repeated 1–6 times, plus a blob.
    let mut dup = blobs(&mut rng, 3, &[40], 0.5, 3.0);
    for _ in 0..30 {
        let p: Vec<f64> = (0..3).map(|_| rng.random_range(-6.0..6.0)).collect();
        for _ in 0..rng.random_range(1..=6) {
            dup.push(&p);
        }
    }
    out.push(Case {
        name: "duplicates",
        data: dup,
        params: params(4, Some(3), Eom, false),
        precomputed: false,
    });

    // Ties: two 7×7 integer grids 20 apart plus scattered integer points.
    let mut grid = Data::new(2);
    for (ox, oy) in [(0.0, 0.0), (20.0, 3.0)] {
        for i in 0..7 {
            for j in 0..7 {
                grid.push(&[ox + i as f64, oy + j as f64]);
            }
        }
    }
    for _ in 0..15 {
        grid.push(&[
            rng.random_range(-10..35) as f64,
            rng.random_range(-10..20) as f64,
        ]);
    }
    out.push(Case {
        name: "grid-ties",
        data: grid,
        params: params(5, Some(4), Eom, false),
        precomputed: false,
    });

    // 10 task descriptors in 1024-D: groups of 3, 3, 2 plus 2 singles (mcs 2 as in §5).
    let desc = descriptors(&mut rng, &[3, 3, 2], 2, 0.05);
    out.push(Case {
        name: "descriptors-1024d",
        data: desc,
        params: params(2, None, Eom, false),
        precomputed: false,
    });
    let desc = descriptors(&mut rng, &[4, 3, 2], 1, 0.1);
    out.push(Case {
        name: "descriptors-1024d-precomputed",
        data: desc,
        params: params(2, Some(1), Eom, false),
        precomputed: true,
    });

    // One blob plus sparse noise: the root wins only with allow_single_cluster.
    let mut one = blobs(&mut rng, 2, &[50], 1.0, 1.0);
    uniform_noise(&mut rng, &mut one, 12, 12.0);
    out.push(Case {
        name: "single-cluster-allowed",
        data: one,
        params: params(5, None, Eom, true),
        precomputed: false,
    });

    let d8 = blobs(&mut rng, 8, &[30, 30, 30, 30], 1.5, 4.0);
    out.push(Case {
        name: "blobs-8d-precomputed-leaf",
        data: d8,
        params: params(5, Some(10), Leaf, false),
        precomputed: true,
    });

    out
}

// ---- comparisons -----------------------------------------------------------------

/// Same clusters up to a renumbering, and noise on the same points.
fn same_partition(ours: &[i64], theirs: &[i64]) -> Result<(), String> {
    use std::collections::HashMap;
    if ours.len() != theirs.len() {
        return Err(format!("{} labels vs {}", ours.len(), theirs.len()));
    }
    let (mut fwd, mut back) = (HashMap::new(), HashMap::new());
    for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        if (a < 0) != (b < 0) {
            return Err(format!("point {i}: ours {a}, theirs {b} (noise differs)"));
        }
        if a < 0 {
            continue;
        }
        if *fwd.entry(a).or_insert(b) != b || *back.entry(b).or_insert(a) != a {
            return Err(format!(
                "point {i}: ours {a}, theirs {b}: clusters are not the same sets"
            ));
        }
    }
    Ok(())
}

fn close(a: f64, b: f64, atol: f64, rtol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * a.abs().max(b.abs())
}

fn check_vector(what: &str, ours: &[f64], theirs: &[f64], atol: f64) -> Result<(), String> {
    if ours.len() != theirs.len() {
        return Err(format!("{what}: {} values vs {}", ours.len(), theirs.len()));
    }
    let worst = ours
        .iter()
        .zip(theirs)
        .enumerate()
        .find(|(_, (a, b))| !close(**a, **b, atol, 0.0));
    match worst {
        Some((i, (a, b))) => Err(format!("{what}[{i}]: ours {a}, theirs {b} (atol {atol})")),
        None => Ok(()),
    }
}

fn check_condensed(c: &Clustering, theirs: &[f64]) -> Result<(), String> {
    let rows = theirs.len() / 4;
    if rows != c.condensed_tree.len() {
        return Err(format!(
            "condensed tree: {} rows vs {}",
            c.condensed_tree.len(),
            rows
        ));
    }
    for (i, (e, t)) in c
        .condensed_tree
        .iter()
        .zip(theirs.chunks_exact(4))
        .enumerate()
    {
        let same = e.parent as f64 == t[0]
            && e.child as f64 == t[1]
            && e.size as f64 == t[3]
            && close(e.lambda, t[2], 0.0, LAMBDA_RTOL);
        if !same {
            return Err(format!("condensed tree row {i}: ours {e:?}, theirs {t:?}"));
        }
    }
    Ok(())
}

/// One reference run's output directory (tests/python/hdbscan_reference.py).
struct Reference<'a>(&'a Path);

impl Reference<'_> {
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.npy"))
    }
    fn f64s(&self, name: &str) -> Vec<f64> {
        npy::read_f64_vector(&self.file(name)).unwrap()
    }
    fn i64s(&self, name: &str) -> Vec<i64> {
        npy::read_i64_vector(&self.file(name)).unwrap()
    }
    fn array(&self, name: &str) -> Vec<f64> {
        npy::read_f64_array(&self.file(name)).unwrap().1
    }

    /// The checks against a run of the library's Prim with a stable MST sort
    /// (`variant` "stable" or "prims"): identical labels and condensed tree,
    /// probabilities and outlier scores within their tolerances.
    fn check_identical(
        &self,
        ours: &Clustering,
        variant: &str,
        check: &mut dyn FnMut(&str, Result<(), String>),
    ) {
        let labels = if ours.labels == self.i64s(&format!("{variant}_labels")) {
            Ok(())
        } else {
            Err("label numbering differs".into())
        };
        check(&format!("labels vs {variant}"), labels);
        let tree = self.array(&format!("{variant}_condensed_tree"));
        check(
            &format!("condensed tree vs {variant}"),
            check_condensed(ours, &tree),
        );
        for (what, values, atol) in [
            ("probabilities", &ours.probabilities, PROB_ATOL),
            ("outlier_scores", &ours.outlier_scores, SCORE_ATOL),
        ] {
            let theirs = self.f64s(&format!("{variant}_{what}"));
            check(
                &format!("{what} vs {variant}"),
                check_vector(what, values, &theirs, atol),
            );
        }
    }
}

/// Our Prim rows (before sorting) against the library's `_min_spanning_tree`.
fn check_mst(case: &Case, theirs: &[f64]) -> Result<(), String> {
    let data = &case.data;
    let (dist_matrix, dist);
    if case.precomputed {
        dist_matrix = pairwise_euclidean(&data.points, data.n, data.d);
        dist = Distances::precomputed(&dist_matrix, data.n);
    } else {
        dist = Distances::euclidean(&data.points, data.n, data.d);
    }
    let k = case
        .params
        .min_samples
        .unwrap_or(case.params.min_cluster_size)
        .min(data.n - 1);
    let ours = mst::prim(&dist, &core_distances(&dist, k));
    if ours.len() * 3 != theirs.len() {
        return Err(format!(
            "MST: {} edges vs {} values (3 per edge)",
            ours.len(),
            theirs.len()
        ));
    }
    for (i, (e, t)) in ours.iter().zip(theirs.chunks_exact(3)).enumerate() {
        if e.from as f64 != t[0] || e.to as f64 != t[1] || !close(e.weight, t[2], 0.0, MST_RTOL) {
            return Err(format!("MST row {i}: ours {e:?}, theirs {t:?}"));
        }
    }
    Ok(())
}

struct Outcome {
    name: &'static str,
    failures: Vec<String>,
    notes: Vec<String>,
    ours_seconds: f64,
}

fn check_case(case: &Case, dir: &Path) -> Outcome {
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let t = Instant::now();
    let ours = if case.precomputed {
        let m = pairwise_euclidean(&case.data.points, case.data.n, case.data.d);
        hdbscan_precomputed(&m, case.data.n, &case.params).unwrap()
    } else {
        hdbscan(&case.data.points, case.data.n, case.data.d, &case.params).unwrap()
    };
    let ours_seconds = t.elapsed().as_secs_f64();
    // The tree path (KD-tree, Borůvka, Prim over candidates) on the same points: the
    // same result to the last bit, except where distances tie exactly (see
    // src/sharing/hdbscan/boruvka.rs), where it must still give a minimum spanning
    // tree of the same weights.
    if !case.precomputed && case.data.d <= 16 {
        let (tree, _) = hdbscan_with(
            &case.data.points,
            case.data.n,
            case.data.d,
            &case.params,
            Algorithm::Tree,
            &mut |_| {},
        )
        .unwrap();
        if tree != ours {
            let weights = |c: &Clustering| c.mst.iter().map(|e| e.2.to_bits()).collect::<Vec<_>>();
            if TIED_DISTANCES.contains(&case.name) && weights(&tree) == weights(&ours) {
                notes.push(format!(
                    "tree path: same MST weights, {} (tied distances)",
                    match same_partition(&tree.labels, &ours.labels) {
                        Ok(()) => "same partition".to_string(),
                        Err(e) => format!("other partition: {e}"),
                    }
                ));
            } else {
                failures.push("tree path differs from the dense path".into());
            }
        }
    }
    let reference = Reference(dir);
    let (f64s, i64s, array) = (
        |n: &str| reference.f64s(n),
        |n: &str| reference.i64s(n),
        |n: &str| reference.array(n),
    );
    let mut check = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(format!("{what}: {e}"));
        }
    };

    check(
        "MST vs library generic",
        check_mst(case, &array("generic_mst")),
    );
    // The library as installed: the same partition; numbering reported.
    let generic = i64s("generic_labels");
    check(
        "labels vs library generic",
        same_partition(&ours.labels, &generic),
    );
    if ours.labels != generic {
        notes.push("numbering differs from the library's (unstable MST sort)".into());
    }
    // The library with a stable MST sort: everything identical.
    reference.check_identical(&ours, "stable", &mut check);
    // Required: the library's default metric (sklearn's expanded-form distances)
    // and scikit-learn. Reported only: the library's default algorithm, whose
    // approximate Boruvka MST is not an MST (see the module comment).
    for (variant, what, required) in [
        ("euclid", "library generic, metric=euclidean", true),
        ("sklearn", "scikit-learn, min_samples + 1", true),
        ("best", "library defaults (approximate MST)", false),
    ] {
        match same_partition(&ours.labels, &i64s(&format!("{variant}_labels"))) {
            Ok(()) => {}
            Err(e) if required => failures.push(format!("labels vs {what}: {e}")),
            Err(e) => notes.push(format!("{what}: other partition ({e})")),
        }
    }
    let max_diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .filter(|(x, y)| !(x.is_nan() && y.is_nan()))
            .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
            .fold(0.0f64, f64::max)
    };
    let theirs_tree = array("stable_condensed_tree");
    let theirs_lambdas: Vec<f64> = theirs_tree.chunks_exact(4).map(|r| r[2]).collect();
    let ours_lambdas: Vec<f64> = ours.condensed_tree.iter().map(|e| e.lambda).collect();
    notes.push(format!(
        "max |Δ| λ {:.0e}, p {:.0e}, glosh {:.0e}",
        max_diff(&ours_lambdas, &theirs_lambdas),
        max_diff(&ours.probabilities, &f64s("stable_probabilities")),
        max_diff(&ours.outlier_scores, &f64s("stable_outlier_scores")),
    ));
    if let Ok(meta) = std::fs::read_to_string(dir.join("meta.json")) {
        let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
        notes.push(format!("{} tied MST weights", meta["tied_mst_weights"]));
    }
    let nan = ours.outlier_scores.iter().filter(|s| s.is_nan()).count();
    if nan > 0 {
        notes.push(format!("{nan} NaN outlier scores (as the library)"));
    }
    notes.push(format!(
        "{} clusters {:?}, {} noise",
        ours.n_clusters(),
        ours.cluster_sizes(),
        ours.noise_count()
    ));
    Outcome {
        name: case.name,
        failures,
        notes,
        ours_seconds,
    }
}

#[test]
fn parity_with_hdbscan_library_and_sklearn() {
    let Some(py) = python() else { return };
    let start = Instant::now();
    let cases = cases();
    assert!(cases.len() >= 8);
    let tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("SSKERNEL_KEEP_PARITY_DIR").is_some() {
        eprintln!(
            "keeping the parity inputs and outputs in {}",
            tmp.path().display()
        );
    }

    // One interpreter start for all cases.
    let mut batch = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let points = tmp.path().join(format!("case{i}.npy"));
        let data = &case.data;
        if case.precomputed {
            let m = pairwise_euclidean(&data.points, data.n, data.d);
            npy::write_f64_matrix(&points, &m, data.n, data.n).unwrap();
        } else {
            npy::write_f64_matrix(&points, &data.points, data.n, data.d).unwrap();
        }
        batch.push(serde_json::json!({
            "points": points,
            "out": tmp.path().join(format!("ref{i}")),
            "min_cluster_size": case.params.min_cluster_size,
            "min_samples": case.params.min_samples,
            "selection": match case.params.selection { Selection::Eom => "eom", Selection::Leaf => "leaf" },
            "allow_single_cluster": case.params.allow_single_cluster,
            "metric": if case.precomputed { "precomputed" } else { "euclidean" },
        }));
    }
    let t = Instant::now();
    run_reference(&py, tmp.path(), &batch);
    let python_seconds = t.elapsed().as_secs_f64();

    let mut all_failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let o = check_case(case, &tmp.path().join(format!("ref{i}")));
        eprintln!(
            "{:<32} n={:<4} d={:<5} ours {:.4}s  {}  {}",
            o.name,
            case.data.n,
            case.data.d,
            o.ours_seconds,
            if o.failures.is_empty() { "ok" } else { "FAIL" },
            o.notes.join("; ")
        );
        for f in &o.failures {
            eprintln!("    {f}");
            all_failures.push(format!("{}: {f}", o.name));
        }
    }
    eprintln!(
        "hdbscan parity: {} data sets, Python reference {:.1}s, whole test {:.1}s",
        cases.len(),
        python_seconds,
        start.elapsed().as_secs_f64()
    );
    if std::env::var_os("SSKERNEL_KEEP_PARITY_DIR").is_some() {
        std::mem::forget(tmp);
    }
    assert!(
        all_failures.is_empty(),
        "{} parity failures:\n{}",
        all_failures.len(),
        all_failures.join("\n")
    );
}

// ---- large inputs: the tree path ---------------------------------------------------

/// Blobs of equal size around random centres in [−10, 10]^d, std 1, plus a share of
/// uniform noise over [−12, 12]^d: what `sskernel cluster` is run on at scale.
fn large_case(
    seed: u64,
    n: usize,
    d: usize,
    noise: f64,
    params: HdbscanParams,
) -> (Data, HdbscanParams) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_noise = (n as f64 * noise) as usize;
    let per = (n - n_noise) / 8;
    let mut sizes = vec![per; 8];
    sizes[0] += n - n_noise - 8 * per;
    let mut data = blobs(&mut rng, d, &sizes, 1.0, 10.0);
    uniform_noise(&mut rng, &mut data, n_noise, 12.0);
    (data, params)
}

/// The tree path against the dense path (Prim over every distance row, the one the
/// small cases check against the library) at sizes where the dense path still takes
/// seconds: every field of the result identical, MST weight sums equal.
#[test]
fn tree_path_equals_dense_path_at_20k_points() {
    use Selection::{Eom, Leaf};
    let cases = [
        large_case(1, 20_000, 2, 0.05, params(5, None, Eom, false)),
        large_case(2, 16_000, 5, 0.0, params(10, Some(4), Leaf, false)),
        large_case(3, 12_000, 8, 0.10, params(15, Some(3), Eom, false)),
    ];
    for (data, p) in &cases {
        let run = |algorithm| {
            let t = Instant::now();
            let (c, _) =
                hdbscan_with(&data.points, data.n, data.d, p, algorithm, &mut |_| {}).unwrap();
            (c, t.elapsed().as_secs_f64())
        };
        let (dense, dense_s) = run(Algorithm::Dense);
        let (tree, tree_s) = run(Algorithm::Tree);
        let sum = |c: &Clustering| c.mst.iter().map(|e| e.2).sum::<f64>();
        eprintln!(
            "n={} d={}: dense {dense_s:.2}s, tree {tree_s:.2}s; {} clusters, {} noise; MST weight {}",
            data.n,
            data.d,
            tree.n_clusters(),
            tree.noise_count(),
            sum(&tree)
        );
        assert_eq!(
            sum(&tree).to_bits(),
            sum(&dense).to_bits(),
            "MST weight sums differ"
        );
        assert!(
            tree == dense,
            "n={} d={}: the tree path differs from the dense path",
            data.n,
            data.d
        );
    }
}

/// ARI in contingency form (O(n + clusters²)); noise (−1) counts as one more label,
/// as scikit-learn's `adjusted_rand_score` sees it.
fn ari(a: &[i64], b: &[i64]) -> f64 {
    use std::collections::HashMap;
    let pairs = |x: f64| x * (x - 1.0) / 2.0;
    let mut joint: HashMap<(i64, i64), f64> = HashMap::new();
    let (mut ra, mut rb): (HashMap<i64, f64>, HashMap<i64, f64>) = Default::default();
    for (&x, &y) in a.iter().zip(b) {
        *joint.entry((x, y)).or_default() += 1.0;
        *ra.entry(x).or_default() += 1.0;
        *rb.entry(y).or_default() += 1.0;
    }
    let index: f64 = joint.values().map(|&v| pairs(v)).sum();
    let (sa, sb): (f64, f64) = (
        ra.values().map(|&v| pairs(v)).sum(),
        rb.values().map(|&v| pairs(v)).sum(),
    );
    let expected = sa * sb / pairs(a.len() as f64);
    let max = (sa + sb) / 2.0;
    if max == expected {
        1.0
    } else {
        (index - expected) / (max - expected)
    }
}

/// 50k points against the library itself (`scripts/hdbscan-large-parity.sh`; about ten
/// minutes on two cores, most of it the library's O(n²) Prim): the library's
/// `prims_kdtree` run — the same Prim as `generic`, which needs a 20 GB matrix here —
/// with a stable MST sort must give identical labels, condensed tree, probabilities,
/// outlier scores and sorted MST; its exact Borůvka run is only reported by ARI: it
/// resolves equal weights its own way, and with many small clusters that moves whole
/// clusters (measured: ARI 0.25 on the 2-D case, where ours equals prims_kdtree).
#[test]
#[ignore = "minutes: run scripts/hdbscan-large-parity.sh"]
fn parity_at_50k_points_with_the_library() {
    use Selection::{Eom, Leaf};
    let Some(py) = python() else { return };
    let cases = [
        (
            "50k-2d-noise",
            large_case(11, 50_000, 2, 0.05, params(5, None, Eom, false)),
        ),
        (
            "50k-4d",
            large_case(12, 50_000, 4, 0.0, params(10, Some(5), Eom, false)),
        ),
        (
            "50k-8d-noise",
            large_case(13, 50_000, 8, 0.05, params(5, None, Eom, false)),
        ),
        (
            "50k-8d-leaf",
            large_case(14, 50_000, 8, 0.0, params(20, Some(8), Leaf, false)),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut batch = Vec::new();
    for (i, (_, (data, p))) in cases.iter().enumerate() {
        let points = tmp.path().join(format!("case{i}.npy"));
        npy::write_f64_matrix(&points, &data.points, data.n, data.d).unwrap();
        batch.push(serde_json::json!({
            "points": points,
            "out": tmp.path().join(format!("ref{i}")),
            "min_cluster_size": p.min_cluster_size,
            "min_samples": p.min_samples,
            "selection": match p.selection { Selection::Eom => "eom", Selection::Leaf => "leaf" },
            "only": "prims,boruvka",
        }));
    }
    run_reference(&py, tmp.path(), &batch);

    let mut failures = Vec::new();
    for (i, (name, (data, p))) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("ref{i}"));
        let t = Instant::now();
        let (ours, times) = hdbscan_with(
            &data.points,
            data.n,
            data.d,
            p,
            Algorithm::Auto,
            &mut |_| {},
        )
        .unwrap();
        let ours_s = t.elapsed().as_secs_f64();
        let reference = Reference(&dir);
        let (i64s, array) = (|n: &str| reference.i64s(n), |n: &str| reference.array(n));
        let mut check = |what: &str, r: Result<(), String>| {
            if let Err(e) = r {
                failures.push(format!("{name}: {what}: {e}"));
            }
        };
        reference.check_identical(&ours, "prims", &mut check);
        let theirs_mst = array("prims_mst");
        let same_mst = ours.mst.len() * 3 == theirs_mst.len()
            && ours
                .mst
                .iter()
                .zip(theirs_mst.chunks_exact(3))
                .all(|(e, t)| {
                    e.0 as f64 == t[0] && e.1 as f64 == t[1] && close(e.2, t[2], 0.0, MST_RTOL)
                });
        check(
            "sorted MST vs prims_kdtree",
            if same_mst {
                Ok(())
            } else {
                Err("MST rows differ".into())
            },
        );
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let boruvka_ari = ari(&ours.labels, &i64s("boruvka_labels"));
        eprintln!(
            "{name:<14} n={} d={} ours {ours_s:.2}s ({:?}: core {:.2}s, MST {:.2}s, {} rounds), \
             prims_kdtree {:.1}s, boruvka {:.1}s; {} clusters, {} noise; ARI vs library Borůvka {boruvka_ari:.6}",
            data.n,
            data.d,
            times.algorithm,
            times.core_distances,
            times.mst,
            times.boruvka_rounds,
            meta["seconds"]["prims"].as_f64().unwrap_or(f64::NAN),
            meta["seconds"]["boruvka"].as_f64().unwrap_or(f64::NAN),
            ours.n_clusters(),
            ours.noise_count(),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs tests/python/hdbscan_reference.py on `batch` (its cases, as JSON in
/// `dir/cases.json`); each case's outputs land where the case says.
fn run_reference(py: &Path, dir: &Path, batch: &[serde_json::Value]) {
    let batch_path = dir.join("cases.json");
    std::fs::write(&batch_path, serde_json::to_string(batch).unwrap()).unwrap();
    let out = Command::new(py)
        .arg(repo().join("tests/python/hdbscan_reference.py"))
        .arg("--batch")
        .arg(&batch_path)
        .output()
        .expect("running the Python reference");
    assert!(
        out.status.success(),
        "hdbscan_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
