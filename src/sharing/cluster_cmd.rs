//! `sskernel cluster points.npy --out DIR`: HDBSCAN on a `.npy` matrix (DESIGN.md §1).
//!
//! Reads `[n, d]` float32/float64 points (or an `[n, n]` distance matrix with
//! `--metric precomputed`) and writes into DIR:
//! - `labels.npy` (int64 [n], −1 = noise), `probabilities.npy` and
//!   `outlier_scores.npy` (float64 [n]);
//! - `summary.json`: n, d, the parameters, the number of clusters, noise count,
//!   cluster sizes, seconds per step.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::hdbscan::{
    hdbscan_precomputed_timed, hdbscan_timed, Clustering, HdbscanParams, StepTimes,
};
use crate::data::npy;

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
    pub min_samples_used: usize,
    pub n_clusters: usize,
    pub noise: usize,
    pub cluster_sizes: Vec<usize>,
    pub seconds: Seconds,
}

#[derive(Debug, serde::Serialize)]
pub struct Seconds {
    pub read: f64,
    pub core_distances: f64,
    pub mst: f64,
    pub tree: f64,
    pub total: f64,
}

/// Clusters the points in `points` and writes the results into `out` (created if
/// missing). Returns the summary it wrote.
pub fn run_cluster(
    points: &Path,
    params: &HdbscanParams,
    metric: Metric,
    out: &Path,
) -> Result<Summary> {
    let start = Instant::now();
    let Clustered {
        matrix: m,
        clustering,
        read,
        times,
    } = cluster_file(points, params, metric)?;
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
        min_samples_used: clustering.min_samples_used,
        n_clusters: clustering.n_clusters(),
        noise: clustering.noise_count(),
        cluster_sizes: clustering.cluster_sizes(),
        seconds: Seconds {
            read,
            core_distances: times.core_distances,
            mst: times.mst,
            tree: times.tree,
            total: start.elapsed().as_secs_f64(),
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
    pub times: StepTimes,
}

/// Reads `points` (`[n, d]` points, or `[n, n]` distances with
/// `Metric::Precomputed`) and clusters them: everything `run_cluster` does before
/// it writes. Every error names the file.
pub fn cluster_file(points: &Path, params: &HdbscanParams, metric: Metric) -> Result<Clustered> {
    let start = Instant::now();
    let m = npy::read_matrix(points)?;
    let read = start.elapsed().as_secs_f64();
    let (clustering, times) = match metric {
        Metric::Euclidean => hdbscan_timed(&m.data, m.rows, m.cols, params),
        Metric::Precomputed => {
            if m.rows != m.cols {
                anyhow::bail!(
                    "{}: --metric precomputed needs a square [n, n] distance matrix, got [{}, {}]",
                    points.display(),
                    m.rows,
                    m.cols
                );
            }
            hdbscan_precomputed_timed(&m.data, m.rows, params)
        }
    }
    .with_context(|| format!("clustering {}", points.display()))?;
    Ok(Clustered {
        matrix: m,
        clustering,
        read,
        times,
    })
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
        let s = run_cluster(&pts, &params, Metric::Euclidean, &out).unwrap();
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
        let e = run_cluster(&pts, &params, Metric::Precomputed, &out).unwrap_err();
        assert!(format!("{e:#}").contains("points.npy") && format!("{e:#}").contains("[7, 2]"));
    }
}
