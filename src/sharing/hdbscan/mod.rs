//! HDBSCAN (Campello, Moulavi & Sander 2013), written to give the same clusters as
//! the Python `hdbscan` library 0.8.44 (`algorithm="generic"`, alpha 1, no epsilon)
//! on the same points and parameters (DESIGN.md §5.3–4).
//!
//! The steps mirror the library's split into pure functions over plain arrays:
//!
//! | step | here | library |
//! | --- | --- | --- |
//! | distances, core distances c_k, mutual reachability | `distance` | `_hdbscan_reachability.mutual_reachability` |
//! | Prim's MST of the mutual-reachability graph | `mst` | `_hdbscan_linkage.mst_linkage_core` |
//! | single-linkage hierarchy | `linkage` | `_hdbscan_linkage.label` |
//! | condensed tree, stability | `condense` | `_hdbscan_tree.condense_tree`, `compute_stability` |
//! | EOM / leaf selection, labels, probabilities | `select` | `_hdbscan_tree.get_clusters` |
//! | GLOSH outlier scores | `outlier` | `_hdbscan_tree.outlier_scores` |
//!
//! Large low-dimensional inputs take the tree path (`Algorithm::Tree`) for the first
//! two steps, with the same results and O(n·d) memory:
//!
//! | step | here | library |
//! | --- | --- | --- |
//! | KD-tree, core distances, balls (points within c_k) | `kdtree` | `KDTree.query` in `_hdbscan_boruvka` |
//! | Borůvka MST, then Prim over balls ∪ MST | `boruvka` | `KDTreeBoruvkaAlgorithm` (exact mode), `mst_linkage_core_vector` |
//!
//! On a kernel device (`--device sim|cuda`), `device` computes the nearest lists, core
//! distances and Borůvka rounds with kernels/mreach.cu and gives the tree path's
//! results bit for bit.
//!
//! One deliberate difference: MST edges of equal weight are sorted stably; the
//! library's `np.argsort` is not stable (see `mst::sort_by_weight`). Clusters are the
//! same; the numbering of clusters that split at exactly the same height can differ.

pub mod boruvka;
pub mod condense;
pub mod device;
pub mod distance;
pub mod kdtree;
pub mod linkage;
pub mod mst;
pub mod outlier;
pub mod select;

use std::time::Instant;

pub use condense::CondensedEdge;
pub use distance::Distances;
pub use linkage::LinkageRow;
pub use mst::MstEdge;
pub use select::Selection;

/// Parameters, with the library's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HdbscanParams {
    /// Smallest group of points that counts as a cluster (≥ 2).
    pub min_cluster_size: usize,
    /// k of the core distance: the k-th nearest *other* point. `None`: min_cluster_size.
    /// Values above n − 1 are lowered to n − 1, as the library does.
    pub min_samples: Option<usize>,
    pub selection: Selection,
    /// Let the root (all points) be the one cluster when it is the most stable.
    pub allow_single_cluster: bool,
}

impl Default for HdbscanParams {
    fn default() -> Self {
        HdbscanParams {
            min_cluster_size: 5,
            min_samples: None,
            selection: Selection::Eom,
            allow_single_cluster: false,
        }
    }
}

impl HdbscanParams {
    pub fn new(min_cluster_size: usize) -> Self {
        HdbscanParams {
            min_cluster_size,
            ..Default::default()
        }
    }
}

/// The result, with every intermediate a grouping log wants.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    /// [n]: cluster 0, 1, … (clusters in the library's order), −1 for noise.
    pub labels: Vec<i64>,
    /// [n]: membership strength in [0, 1]; 0 for noise.
    pub probabilities: Vec<f64>,
    /// [n]: GLOSH scores (larger = more outlying); NaN where the library gives NaN.
    pub outlier_scores: Vec<f64>,
    /// The condensed tree: the root is node n, clusters n + 1, …
    pub condensed_tree: Vec<CondensedEdge>,
    /// The MST of the mutual-reachability graph, (from, to, weight), by weight.
    pub mst: Vec<(usize, usize, f64)>,
    /// The single-linkage hierarchy (scipy format).
    pub single_linkage: Vec<LinkageRow>,
    /// [n]: c_k of every point.
    pub core_distances: Vec<f64>,
    /// Condensed-tree id of each label: label i is cluster `selected[i]`.
    pub selected: Vec<usize>,
    /// The k actually used: min(min_samples, n − 1).
    pub min_samples_used: usize,
}

impl Clustering {
    pub fn n_clusters(&self) -> usize {
        self.selected.len()
    }

    /// Points per cluster, by label.
    pub fn cluster_sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0; self.n_clusters()];
        for &l in self.labels.iter().filter(|&&l| l >= 0) {
            sizes[l as usize] += 1;
        }
        sizes
    }

    pub fn noise_count(&self) -> usize {
        self.labels.iter().filter(|&&l| l < 0).count()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    #[error("hdbscan needs at least 2 points, got {n}")]
    TooFewPoints { n: usize },

    #[error("points: {len} values is not n × d = {n} × {d}")]
    PointsShape { len: usize, n: usize, d: usize },

    #[error("points: d = 0 dimensions; each point needs at least one coordinate")]
    ZeroDimensions,

    #[error("distance matrix: {len} values is not n × n = {n} × {n}")]
    MatrixShape { len: usize, n: usize },

    #[error("min_cluster_size = {0}: must be at least 2")]
    MinClusterSize(usize),

    #[error("min_samples = 0: must be at least 1")]
    MinSamplesZero,

    #[error("point {row}, coordinate {col} is {value}: expected finite numbers")]
    NonFinitePoint { row: usize, col: usize, value: f64 },

    #[error("distance matrix [{i}, {j}] is {value}: expected finite, non-negative distances")]
    BadDistance { i: usize, j: usize, value: f64 },

    #[error("distance matrix [{i}, {i}] is {value}: the diagonal must be 0")]
    NonZeroDiagonal { i: usize, value: f64 },

    #[error(
        "min_samples = {k}: the device path keeps each point's nearest list in a warp's \
         registers and takes min_samples <= {max}; use --device cpu"
    )]
    DeviceMinSamples { k: usize, max: usize },

    #[error(
        "{n} points × {d} dimensions need {need} bytes of device memory ({:.2} GiB) on \
         {device}, which has {free} bytes free; use --device cpu",
        *need as f64 / (1u64 << 30) as f64
    )]
    DeviceMemory {
        device: String,
        n: usize,
        d: usize,
        need: u64,
        free: u64,
    },

    #[error("distance matrix is not symmetric: [{i}, {j}] = {dij} but [{j}, {i}] = {dji}")]
    NotSymmetric {
        i: usize,
        j: usize,
        dij: f64,
        dji: f64,
    },
}

/// How the core distances and the MST are computed. Both give the library's Prim
/// rows (see `boruvka` for where ties can make them differ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// `Tree` for large low-dimensional inputs, else `Dense`.
    #[default]
    Auto,
    /// O(n²) time, O(n·d) memory: every distance row, Prim on the fly.
    Dense,
    /// KD-tree core distances, Borůvka MST, Prim over the candidate edges.
    Tree,
}

/// `Auto` takes the tree path from this many points…
pub const TREE_MIN_POINTS: usize = 4096;
/// …up to this many dimensions (beyond, boxes stop pruning; measured in BENCHMARKS.md).
pub const TREE_MAX_DIMS: usize = 16;

impl Algorithm {
    /// The path `Auto` resolves to for n points in d dimensions.
    pub fn resolve(self, n: usize, d: usize) -> Algorithm {
        match self {
            Algorithm::Auto if n >= TREE_MIN_POINTS && d <= TREE_MAX_DIMS => Algorithm::Tree,
            Algorithm::Auto => Algorithm::Dense,
            other => other,
        }
    }
}

/// Where a long run is: called at the start of each phase and each Borůvka round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Progress {
    CoreDistances,
    /// Borůvka round (from 0) with this many components left.
    MstRound {
        round: usize,
        components: usize,
    },
    /// Dense Prim (one pass, no rounds).
    Mst,
    Tree,
    Selection,
}

/// Times of each step in seconds, for benchmarks and the summary.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StepTimes {
    /// The path taken (`Dense` or `Tree`).
    pub algorithm: Algorithm,
    /// Tree build, core distances and balls (tree path), or the distance rows (dense).
    pub core_distances: f64,
    /// Borůvka and Prim over the candidates (tree path), or dense Prim; and the sort.
    pub mst: f64,
    /// Single linkage, condensed tree and stabilities.
    pub tree: f64,
    /// Cluster selection, labels, probabilities, outlier scores.
    pub selection: f64,
    /// Borůvka rounds (0 on the dense path).
    pub boruvka_rounds: usize,
}

/// HDBSCAN on Euclidean points. points: [n, d].
pub fn hdbscan(
    points: &[f64],
    n: usize,
    d: usize,
    params: &HdbscanParams,
) -> Result<Clustering, ClusterError> {
    hdbscan_timed(points, n, d, params).map(|(c, _)| c)
}

/// `hdbscan`, also returning how long each step took.
pub fn hdbscan_timed(
    points: &[f64],
    n: usize,
    d: usize,
    params: &HdbscanParams,
) -> Result<(Clustering, StepTimes), ClusterError> {
    hdbscan_with(points, n, d, params, Algorithm::Auto, &mut |_| {})
}

/// `hdbscan_timed` on a chosen path, reporting progress.
pub fn hdbscan_with(
    points: &[f64],
    n: usize,
    d: usize,
    params: &HdbscanParams,
    algorithm: Algorithm,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Clustering, StepTimes), ClusterError> {
    check_points(points, n, d)?;
    let k = check(n, params)?;
    let mut times = StepTimes {
        algorithm: algorithm.resolve(n, d),
        ..Default::default()
    };
    let (core, rows) = if times.algorithm == Algorithm::Tree {
        progress(Progress::CoreDistances);
        let t = Instant::now();
        let tree = kdtree::KdTree::build(points, n, d);
        let (core, balls) = kdtree::core_distances_and_balls(&tree, k);
        times.core_distances = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let forest = boruvka::boruvka(&tree, &core, &balls, &mut |round, components| {
            times.boruvka_rounds = round + 1;
            progress(Progress::MstRound { round, components })
        });
        let rows = boruvka::prim_over_candidates(&tree, &core, &balls, &forest);
        times.mst = t.elapsed().as_secs_f64();
        let mut original = vec![0.0; n];
        for (p, &i) in tree.index.iter().enumerate() {
            original[i] = core[p];
        }
        (original, rows)
    } else {
        dense_mst(&Distances::euclidean(points, n, d), k, &mut times, progress)
    };
    Ok((finish(rows, core, k, params, &mut times, progress), times))
}

/// HDBSCAN on a precomputed distance matrix. dist: [n, n], symmetric, finite,
/// non-negative, zero diagonal.
pub fn hdbscan_precomputed(
    dist: &[f64],
    n: usize,
    params: &HdbscanParams,
) -> Result<Clustering, ClusterError> {
    hdbscan_precomputed_timed(dist, n, params).map(|(c, _)| c)
}

/// `hdbscan_precomputed`, also returning how long each step took.
pub fn hdbscan_precomputed_timed(
    dist: &[f64],
    n: usize,
    params: &HdbscanParams,
) -> Result<(Clustering, StepTimes), ClusterError> {
    hdbscan_precomputed_with(dist, n, params, &mut |_| {})
}

/// `hdbscan_precomputed_timed`, reporting progress.
pub fn hdbscan_precomputed_with(
    dist: &[f64],
    n: usize,
    params: &HdbscanParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Clustering, StepTimes), ClusterError> {
    if dist.len() != n * n {
        return Err(ClusterError::MatrixShape { len: dist.len(), n });
    }
    for i in 0..n {
        for j in 0..n {
            let v = dist[i * n + j];
            if !v.is_finite() || v < 0.0 {
                return Err(ClusterError::BadDistance { i, j, value: v });
            }
            if i == j && v != 0.0 {
                return Err(ClusterError::NonZeroDiagonal { i, value: v });
            }
            if j > i && v != dist[j * n + i] {
                return Err(ClusterError::NotSymmetric {
                    i,
                    j,
                    dij: v,
                    dji: dist[j * n + i],
                });
            }
        }
    }
    let k = check(n, params)?;
    let mut times = StepTimes {
        algorithm: Algorithm::Dense,
        ..Default::default()
    };
    let (core, rows) = dense_mst(&Distances::precomputed(dist, n), k, &mut times, progress);
    Ok((finish(rows, core, k, params, &mut times, progress), times))
}

/// Validates the points' shape and values.
fn check_points(points: &[f64], n: usize, d: usize) -> Result<(), ClusterError> {
    if points.len() != n * d {
        return Err(ClusterError::PointsShape {
            len: points.len(),
            n,
            d,
        });
    }
    if d == 0 {
        return Err(ClusterError::ZeroDimensions);
    }
    if let Some(k) = points.iter().position(|v| !v.is_finite()) {
        return Err(ClusterError::NonFinitePoint {
            row: k / d,
            col: k % d,
            value: points[k],
        });
    }
    Ok(())
}

/// Validates n and the parameters; returns the k of the core distance.
fn check(n: usize, params: &HdbscanParams) -> Result<usize, ClusterError> {
    if n < 2 {
        return Err(ClusterError::TooFewPoints { n });
    }
    if params.min_cluster_size < 2 {
        return Err(ClusterError::MinClusterSize(params.min_cluster_size));
    }
    let min_samples = params.min_samples.unwrap_or(params.min_cluster_size);
    if min_samples == 0 {
        return Err(ClusterError::MinSamplesZero);
    }
    Ok(min_samples.min(n - 1))
}

/// Core distances and Prim's rows from every distance row.
fn dense_mst(
    dist: &Distances,
    k: usize,
    times: &mut StepTimes,
    progress: &mut dyn FnMut(Progress),
) -> (Vec<f64>, Vec<MstEdge>) {
    progress(Progress::CoreDistances);
    let t = Instant::now();
    let core = distance::core_distances(dist, k);
    times.core_distances = t.elapsed().as_secs_f64();
    progress(Progress::Mst);
    let t = Instant::now();
    let rows = mst::prim(dist, &core);
    times.mst = t.elapsed().as_secs_f64();
    (core, rows)
}

/// Sort, single linkage, condensed tree, selection (the steps both paths share).
fn finish(
    rows: Vec<MstEdge>,
    core: Vec<f64>,
    k: usize,
    params: &HdbscanParams,
    times: &mut StepTimes,
    progress: &mut dyn FnMut(Progress),
) -> Clustering {
    let t = Instant::now();
    let sorted = mst::sort_by_weight(&rows);
    times.mst += t.elapsed().as_secs_f64();

    progress(Progress::Tree);
    let t = Instant::now();
    let hierarchy = linkage::single_linkage(&sorted);
    let tree = condense::condense_tree(&hierarchy, params.min_cluster_size);
    let stability = condense::stability(&tree);
    times.tree = t.elapsed().as_secs_f64();

    progress(Progress::Selection);
    let t = Instant::now();
    let selected = select::select_clusters(
        &tree,
        &stability,
        params.selection,
        params.allow_single_cluster,
    );
    let labels = select::label_points(&tree, &selected, params.allow_single_cluster);
    let probabilities = select::probabilities(&tree, &labels, &selected);
    let outlier_scores = outlier::outlier_scores(&tree);
    times.selection = t.elapsed().as_secs_f64();

    Clustering {
        labels,
        probabilities,
        outlier_scores,
        condensed_tree: tree,
        mst: sorted.iter().map(|e| (e.from, e.to, e.weight)).collect(),
        single_linkage: hierarchy,
        core_distances: core,
        selected,
        min_samples_used: k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tight groups of 4 on a line and one far point.
    fn toy() -> Vec<f64> {
        vec![0.0, 0.1, 0.2, 0.3, 10.0, 10.1, 10.2, 10.3, 50.0]
    }

    #[test]
    fn two_groups_and_a_noise_point() {
        let c = hdbscan(&toy(), 9, 1, &HdbscanParams::new(3)).unwrap();
        assert_eq!(c.labels, vec![0, 0, 0, 0, 1, 1, 1, 1, -1]);
        assert_eq!(c.n_clusters(), 2);
        assert_eq!(c.cluster_sizes(), vec![4, 4]);
        assert_eq!(c.noise_count(), 1);
        assert_eq!(c.min_samples_used, 3);
        assert_eq!(c.mst.len(), 8);
        assert!(c.mst.windows(2).all(|w| w[0].2 <= w[1].2));
        assert_eq!(c.probabilities[8], 0.0);
        assert!(c.outlier_scores[8] > 0.9);
    }

    #[test]
    fn precomputed_equals_euclidean() {
        let p = toy();
        let d = distance::pairwise_euclidean(&p, 9, 1);
        let a = hdbscan(&p, 9, 1, &HdbscanParams::new(3)).unwrap();
        let b = hdbscan_precomputed(&d, 9, &HdbscanParams::new(3)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn min_samples_is_clamped_to_n_minus_1() {
        let c = hdbscan(
            &toy()[..3],
            3,
            1,
            &HdbscanParams {
                min_samples: Some(10),
                ..HdbscanParams::new(2)
            },
        )
        .unwrap();
        assert_eq!(c.min_samples_used, 2);
    }

    #[test]
    fn errors() {
        let p = HdbscanParams::new(2);
        assert_eq!(
            hdbscan(&[1.0], 1, 1, &p),
            Err(ClusterError::TooFewPoints { n: 1 })
        );
        assert_eq!(
            hdbscan(&[1.0, 2.0, 3.0], 2, 2, &p),
            Err(ClusterError::PointsShape { len: 3, n: 2, d: 2 })
        );
        let e = hdbscan(&[1.0, f64::NAN, 3.0, 4.0], 2, 2, &p).unwrap_err();
        assert!(
            matches!(e, ClusterError::NonFinitePoint { row: 0, col: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("NaN"));
        assert_eq!(
            hdbscan(&[1.0, 2.0], 2, 1, &HdbscanParams::new(1)),
            Err(ClusterError::MinClusterSize(1))
        );
        assert_eq!(
            hdbscan(
                &[1.0, 2.0],
                2,
                1,
                &HdbscanParams {
                    min_samples: Some(0),
                    ..p
                }
            ),
            Err(ClusterError::MinSamplesZero)
        );
        let asym = [0.0, 1.0, 2.0, 0.0];
        let e = hdbscan_precomputed(&asym, 2, &p).unwrap_err();
        assert!(e.to_string().contains("not symmetric"), "{e}");
        let diag = [1.0, 1.0, 1.0, 0.0];
        assert!(matches!(
            hdbscan_precomputed(&diag, 2, &p),
            Err(ClusterError::NonZeroDiagonal { i: 0, .. })
        ));
        let inf = [0.0, f64::INFINITY, f64::INFINITY, 0.0];
        assert!(matches!(
            hdbscan_precomputed(&inf, 2, &p),
            Err(ClusterError::BadDistance { .. })
        ));
        let neg = [0.0, -1.0, -1.0, 0.0];
        assert!(matches!(
            hdbscan_precomputed(&neg, 2, &p),
            Err(ClusterError::BadDistance { .. })
        ));
    }
}
