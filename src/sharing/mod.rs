//! Selective Sharing (DESIGN.md §5): deciding which task branches to merge.
//!
//! - `hdbscan`: HDBSCAN in small pure steps (distances, MST, single linkage,
//!   condensed tree, cluster selection), matching the Python `hdbscan` library 0.8.44.
//! - `cluster_cmd`: `sskernel cluster points.npy --out DIR`.
//! - `stability`: adjusted Rand index between groupings (seeds of `reproduce`).

pub mod cluster_cmd;
pub mod criteria;
pub mod hdbscan;
pub mod merge;
pub mod selective;
pub mod stability;
pub mod ttsvd;
