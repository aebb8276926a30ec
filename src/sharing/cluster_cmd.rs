//! `sskernel cluster points.npy --out DIR`: HDBSCAN on a `.npy` matrix (DESIGN.md §1).
//!
//! Reads `[n, d]` float32/float64 points (or an `[n, n]` distance matrix with
//! `--metric precomputed`) and writes into DIR:
//! - `labels.npy` (int64 [n], −1 = noise), `probabilities.npy` and
//!   `outlier_scores.npy` (float64 [n]);
//! - `summary.json`: n, d, the parameters, the device and the path taken (dense or
//!   tree), the number
//!   of clusters, noise count, cluster sizes, seconds per phase (read, device
//!   setup, core distances, MST, tree, selection, and the rest of the wall time as
//!   `other`) and the Borůvka rounds.
//!
//! `--device sim|cuda` (or `auto` finding a GPU) runs the core distances and the
//! Borůvka MST on that device (`hdbscan::device`, kernels/mreach.cu) with the same
//! results as the CPU's tree path; `cpu` runs the CPU path.
//!
//! Runs longer than `PROGRESS_AFTER` print a progress line on stderr at each phase
//! and Borůvka round. Nothing is written into DIR unless the clustering succeeds.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::hdbscan::{
    device::hdbscan_device, hdbscan_precomputed_with, hdbscan_with, Algorithm, Clustering,
    HdbscanParams, Progress, StepTimes,
};
use crate::backend::{on_device, Backend, DeviceChoice, Memory, OnDevice};
use crate::data::npy;

/// `--metric precomputed` reads the whole [n, n] matrix as f64 (8·n² bytes) and runs the
/// O(n²) dense path: above this many points (3.2 GB) it stops before reading.
pub const PRECOMPUTED_MAX_POINTS: usize = 20_000;

/// Quiet below this: a small clustering prints nothing but its result line.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

/// How the input file is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Rows are points; distances are Euclidean.
    #[default]
    Euclidean,
    /// The file is a symmetric [n, n] distance matrix.
    Precomputed,
}

/// What `summary.json` holds.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub input: String,
    pub n: usize,
    pub d: usize,
    pub metric: Metric,
    pub params: HdbscanParams,
    /// Where the core distances and the MST ran: "cpu (N threads)", "sim", "cuda:0 (…)".
    pub device: String,
    /// The path taken: "dense" or "tree".
    pub algorithm: Algorithm,
    pub boruvka_rounds: usize,
    pub min_samples_used: usize,
    pub n_clusters: usize,
    pub noise: usize,
    pub cluster_sizes: Vec<usize>,
    pub seconds: Seconds,
}

/// Wall seconds of each phase; `total` is their sum (up to rounding).
#[derive(Debug, serde::Serialize)]
pub struct Seconds {
    pub read: f64,
    /// Starting the device `--device` picked: for cuda the driver, the context and
    /// loading kernels/mreach.cu (compiling it on a cold kernel cache); 0 on the CPU.
    pub device_setup: f64,
    pub core_distances: f64,
    pub mst: f64,
    pub tree: f64,
    pub selection: f64,
    /// total minus the phases above: the checks before them, writing the outputs.
    pub other: f64,
    pub total: f64,
}

/// How `run_cluster` runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterOptions {
    pub metric: Metric,
    pub algorithm: Algorithm,
    /// Print progress lines on stderr for runs longer than a couple of seconds.
    pub progress: bool,
    /// Largest n for `--metric precomputed`; `None`: `PRECOMPUTED_MAX_POINTS`.
    pub precomputed_max_points: Option<usize>,
    /// `--device`; `None`: the CPU without asking for a device (library callers).
    pub device: Option<DeviceChoice>,
}

/// Prints "cluster: 12.3 s: MST round 4, 1234 components" once the run is long.
fn progress_printer(start: Instant, on: bool) -> impl FnMut(Progress) {
    move |p: Progress| {
        let t = start.elapsed();
        if !on || t < PROGRESS_AFTER {
            return;
        }
        let what = match p {
            Progress::CoreDistances => "core distances".to_string(),
            Progress::MstRound { round, components } => {
                format!("MST (Borůvka) round {}, {components} components", round + 1)
            }
            Progress::Mst => "MST (Prim)".to_string(),
            Progress::Tree => "single linkage and condensed tree".to_string(),
            Progress::Selection => "cluster selection".to_string(),
        };
        eprintln!("cluster: {:.1} s: {what}", t.as_secs_f64());
    }
}

/// Clusters the points in `points` and writes the results into `out` (created if
/// missing). Returns the summary it wrote.
pub fn run_cluster(
    points: &Path,
    params: &HdbscanParams,
    options: ClusterOptions,
    out: &Path,
) -> Result<Summary> {
    let start = Instant::now();
    let metric = options.metric;
    let Clustered {
        matrix: m,
        clustering,
        read,
        device_setup,
        times,
        device,
    } = cluster_file(points, params, options)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    npy::write_i64_vector(&out.join("labels.npy"), &clustering.labels)?;
    npy::write_f64_vector(&out.join("probabilities.npy"), &clustering.probabilities)?;
    npy::write_f64_vector(&out.join("outlier_scores.npy"), &clustering.outlier_scores)?;

    let summary = Summary {
        input: points.display().to_string(),
        n: m.rows,
        d: if metric == Metric::Precomputed {
            0
        } else {
            m.cols
        },
        metric,
        params: *params,
        device,
        algorithm: times.algorithm,
        boruvka_rounds: times.boruvka_rounds,
        min_samples_used: clustering.min_samples_used,
        n_clusters: clustering.n_clusters(),
        noise: clustering.noise_count(),
        cluster_sizes: clustering.cluster_sizes(),
        seconds: {
            let total = start.elapsed().as_secs_f64();
            let phases = read
                + device_setup
                + times.core_distances
                + times.mst
                + times.tree
                + times.selection;
            Seconds {
                read,
                device_setup,
                core_distances: times.core_distances,
                mst: times.mst,
                tree: times.tree,
                selection: times.selection,
                other: total - phases,
                total,
            }
        },
    };
    crate::atomic_file::write_json(&out.join("summary.json"), &summary)?;
    Ok(summary)
}

/// What `cluster_file` read and found.
pub struct Clustered {
    pub matrix: npy::Matrix,
    pub clustering: Clustering,
    /// Seconds spent reading the file.
    pub read: f64,
    /// Seconds spent starting the device (`Seconds::device_setup`).
    pub device_setup: f64,
    pub times: StepTimes,
    /// The device's name (`Memory::name`).
    pub device: String,
}

/// Reads `points` (`[n, d]` points, or `[n, n]` distances with
/// `Metric::Precomputed`) and clusters them: everything `run_cluster` does before
/// it writes (what the fuzz tests run). Every error names the file.
pub fn cluster_file(
    points: &Path,
    params: &HdbscanParams,
    options: ClusterOptions,
) -> Result<Clustered> {
    let start = Instant::now();
    let metric = options.metric;
    if metric == Metric::Precomputed {
        // The header alone: shape errors and the size cap before reading n² values.
        let header = npy::map_matrix(points)?;
        let (rows, cols) = (header.rows(), header.cols());
        if rows != cols {
            anyhow::bail!(
                "{}: --metric precomputed needs a square [n, n] distance matrix, got [{rows}, {cols}]",
                points.display(),
            );
        }
        let cap = options
            .precomputed_max_points
            .unwrap_or(PRECOMPUTED_MAX_POINTS);
        if rows > cap {
            anyhow::bail!(
                "{}: --metric precomputed with n = {rows}: the dense path needs the whole \
                 [n, n] matrix in memory ({:.1} GB as float64) and O(n²) time; the limit is \
                 n = {cap}. Pass the points instead (--metric euclidean runs in O(n·d) memory)",
                points.display(),
                8.0 * (rows as f64).powi(2) / 1e9
            );
        }
    }
    let device = options.device.unwrap_or(DeviceChoice::Cpu);
    if metric == Metric::Precomputed && matches!(device, DeviceChoice::Sim | DeviceChoice::Cuda) {
        anyhow::bail!(
            "{}: --metric precomputed runs on the CPU only (--device cpu or auto)",
            points.display()
        );
    }
    let m = npy::read_matrix(points)?;
    let read = start.elapsed().as_secs_f64();
    let mut progress = progress_printer(start, options.progress);
    let mut device_setup = 0.0;
    let (clustering, times, device) = match metric {
        Metric::Euclidean if device != DeviceChoice::Cpu => on_device(
            device,
            OnDeviceCluster {
                points: &m.data,
                n: m.rows,
                d: m.cols,
                params,
                algorithm: options.algorithm,
                progress: &mut progress,
                asked: Instant::now(),
                setup: &mut device_setup,
            },
        )?,
        Metric::Euclidean => hdbscan_with(
            &m.data,
            m.rows,
            m.cols,
            params,
            options.algorithm,
            &mut progress,
        )
        .map(|(c, t)| (c, t, crate::backend::cpu::Cpu.name())),
        Metric::Precomputed => hdbscan_precomputed_with(&m.data, m.rows, params, &mut progress)
            .map(|(c, t)| (c, t, crate::backend::cpu::Cpu.name())),
    }
    .with_context(|| format!("clustering {}", points.display()))?;

    Ok(Clustered {
        matrix: m,
        clustering,
        read,
        device_setup,
        times,
        device,
    })
}

/// Euclidean clustering on the backend `--device` picked: a kernel device runs
/// `hdbscan_device`; the CPU (no device memory of its own) runs the CPU path.
struct OnDeviceCluster<'a> {
    points: &'a [f64],
    n: usize,
    d: usize,
    params: &'a HdbscanParams,
    algorithm: Algorithm,
    progress: &'a mut dyn FnMut(Progress),
    /// When `on_device` was called: `run` starts once the device has.
    asked: Instant,
    setup: &'a mut f64,
}

impl OnDevice for OnDeviceCluster<'_> {
    type Output = Result<(Clustering, StepTimes, String), super::hdbscan::ClusterError>;
    /// Only the mutual-reachability kernels: loading every module costs start time.
    const KERNEL_FILES: Option<&'static [&'static str]> = Some(&["mreach.cu"]);

    fn run<B: Backend>(self, backend: &B) -> Result<Self::Output> {
        *self.setup = self.asked.elapsed().as_secs_f64();
        let (points, n, d, params) = (self.points, self.n, self.d, self.params);
        let result = if backend.free_memory().is_none() {
            hdbscan_with(points, n, d, params, self.algorithm, self.progress)
        } else {
            hdbscan_device(backend, points, n, d, params, self.progress)
        };
        Ok(result.map(|(c, t)| (c, t, backend.name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharing::hdbscan::Selection;

    #[test]
    fn writes_labels_probabilities_scores_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let pts = dir.path().join("points.npy");
        let data = [
            0.0, 0.0, 0.1, 0.0, 0.0, 0.1, 5.0, 5.0, 5.1, 5.0, 5.0, 5.1, 40.0, 40.0,
        ];
        npy::write_f64_matrix(&pts, &data, 7, 2).unwrap();
        let out = dir.path().join("out");
        let params = HdbscanParams {
            min_cluster_size: 2,
            min_samples: Some(1),
            selection: Selection::Eom,
            allow_single_cluster: false,
        };
        let s = run_cluster(&pts, &params, ClusterOptions::default(), &out).unwrap();
        assert_eq!((s.n, s.d, s.n_clusters, s.noise), (7, 2, 2, 1));
        assert_eq!(s.cluster_sizes, vec![3, 3]);
        let labels = npy::read_i64_vector(&out.join("labels.npy")).unwrap();
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 1, -1]);
        assert_eq!(
            npy::read_f64_vector(&out.join("probabilities.npy"))
                .unwrap()
                .len(),
            7
        );
        assert_eq!(
            npy::read_f64_vector(&out.join("outlier_scores.npy"))
                .unwrap()
                .len(),
            7
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["params"]["selection"], "eom");
        assert_eq!(json["n_clusters"], 2);

        // Not square with --metric precomputed: a clear error naming the file.
        let precomputed = ClusterOptions {
            metric: Metric::Precomputed,
            ..Default::default()
        };
        let e = run_cluster(&pts, &params, precomputed, &out).unwrap_err();
        assert!(format!("{e:#}").contains("points.npy") && format!("{e:#}").contains("[7, 2]"));
    }

    /// Every bad input: an error naming the file and the problem, and nothing in DIR.
    #[test]
    fn bad_inputs_are_named_and_leave_no_labels() {
        let dir = tempfile::tempdir().unwrap();
        let params = HdbscanParams::new(3);
        let f64_bytes = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let write = |name: &str, bytes: Vec<u8>| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let pts: Vec<f64> = (0..20).map(|i| (i * 7 % 11) as f64).collect();
        let fortran = {
            let mut b = npy::encode("<f8", &[10, 2], &f64_bytes(&pts));
            let at = b.windows(5).position(|w| w == b"False").unwrap();
            b.splice(at..at + 5, *b"True ");
            b
        };
        let mut nan = pts.clone();
        nan[7] = f64::NAN;
        let mut inf = pts.clone();
        inf[13] = f64::NEG_INFINITY;
        let asym = [0.0, 1.0, 2.0, 1.0, 0.0, 3.0, 2.0, 4.0, 0.0];
        let square = [0.0, 1.0, 2.0, 1.0, 0.0, 3.0, 2.0, 3.0, 0.0];
        let i64_bytes: Vec<u8> = (0..20i64).flat_map(|x| x.to_le_bytes()).collect();
        let euclidean = ClusterOptions::default();
        let precomputed = ClusterOptions {
            metric: Metric::Precomputed,
            ..Default::default()
        };
        let capped = ClusterOptions {
            precomputed_max_points: Some(2),
            ..precomputed
        };
        let cases: Vec<(&str, Vec<u8>, ClusterOptions, &str)> = vec![
            (
                "nan.npy",
                npy::encode("<f8", &[10, 2], &f64_bytes(&nan)),
                euclidean,
                "NaN",
            ),
            (
                "inf.npy",
                npy::encode("<f8", &[10, 2], &f64_bytes(&inf)),
                euclidean,
                "-inf",
            ),
            (
                "empty.npy",
                npy::encode("<f8", &[0, 2], &[]),
                euclidean,
                "at least 2 points",
            ),
            (
                "one.npy",
                npy::encode("<f8", &[1, 2], &f64_bytes(&pts[..2])),
                euclidean,
                "at least 2 points",
            ),
            (
                "zero-d.npy",
                npy::encode("<f8", &[10, 0], &[]),
                euclidean,
                "d = 0",
            ),
            (
                "flat.npy",
                npy::encode("<f8", &[20], &f64_bytes(&pts)),
                euclidean,
                "expected 2 dimensions",
            ),
            ("fortran.npy", fortran, euclidean, "Fortran"),
            (
                "ints.npy",
                npy::encode("<i8", &[10, 2], &i64_bytes),
                euclidean,
                "dtype '<i8'",
            ),
            (
                "rect.npy",
                npy::encode("<f8", &[10, 2], &f64_bytes(&pts)),
                precomputed,
                "square",
            ),
            (
                "asym.npy",
                npy::encode("<f8", &[3, 3], &f64_bytes(&asym)),
                precomputed,
                "not symmetric",
            ),
            (
                "big.npy",
                npy::encode("<f8", &[3, 3], &f64_bytes(&square)),
                capped,
                "the limit is n = 2",
            ),
        ];
        for (name, bytes, options, want) in cases {
            let path = write(name, bytes);
            let out = dir.path().join(format!("out-{name}"));
            let e = run_cluster(&path, &params, options, &out).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains(name) && msg.contains(want), "{name}: {msg}");
            assert!(!out.exists(), "{name}: wrote {}", out.display());
        }
        // Fewer points than min_samples: lowered to n − 1 as the library does, and said so.
        let few = write(
            "few.npy",
            npy::encode("<f8", &[4, 2], &f64_bytes(&pts[..8])),
        );
        let out = dir.path().join("out-few");
        let s = run_cluster(&few, &HdbscanParams::new(10), euclidean, &out).unwrap();
        assert_eq!((s.min_samples_used, s.n_clusters, s.noise), (3, 0, 4));
    }
}
