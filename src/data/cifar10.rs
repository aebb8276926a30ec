//! CIFAR-10, the official binary version (DESIGN.md §3): in one directory
//! `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, each 10,000 records
//! of 3073 bytes: one label byte 0..=9, then the 32×32 image as three row-major
//! planes, 1024 R, 1024 G, 1024 B bytes.
//!
//! The records are kept as they are stored, so a split's image i is
//! `[3, 32, 32]` bytes (CHW, the layout a conv net reads) and `Split::channels` is 3.
//! Split as the paper: the first 40,000 training records (batches 1–4) train, the
//! last 10,000 (batch 5) validate, `test_batch.bin` tests. The net subtracts the
//! per-channel mean of the training split, `Split::channel_mean` of
//! `Dataset::train`.
//!
//! Files are memory-mapped (as the IDX files are) and every file is validated —
//! length, record count, every label — before anything is copied out, so a bad
//! directory fails whole, naming the file.

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};
use super::idx::IdxFile;
use super::split::{Dataset, Split};

pub const ROWS: usize = 32;
pub const COLS: usize = 32;
pub const CHANNELS: usize = 3;
pub const CLASSES: usize = 10;
/// The categories of labels 0..=9 (`batches.meta.txt` of the official archive).
pub const CLASS_NAMES: [&str; CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// One record: the label byte, then `[3, 32, 32]` pixels.
pub const RECORD: usize = 1 + CHANNELS * ROWS * COLS;

/// The five training files, in the order their records are numbered.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";

/// How many records each file must hold and how many of the training records (the
/// last ones) validate. Only `OFFICIAL` describes the published files; other
/// values let tests write small files of the same format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub records_per_file: usize,
    pub val_count: usize,
}

impl Layout {
    /// 10,000 records a file; the paper's last 10,000 of 50,000 validate.
    pub const OFFICIAL: Layout = Layout {
        records_per_file: 10_000,
        val_count: 10_000,
    };
}

/// Loads the official files from `dir`: 40k / 10k / 10k.
pub fn load_cifar10(dir: &Path) -> Result<Dataset> {
    load_cifar10_layout(dir, Layout::OFFICIAL)
}

/// Loads `dir` expecting `layout`: every file must hold exactly
/// `layout.records_per_file` records; the last `layout.val_count` training
/// records validate.
pub fn load_cifar10_layout(dir: &Path, layout: Layout) -> Result<Dataset> {
    check_dir(dir)?;
    let names: Vec<&str> = TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect();
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let missing: Vec<PathBuf> = paths.iter().filter(|p| !p.is_file()).cloned().collect();
    if !missing.is_empty() {
        return Err(DataError::Missing {
            what: format!("CIFAR-10 binary files in {}", dir.display()),
            looked_for: missing,
        });
    }
    let maps = paths
        .iter()
        .map(|p| IdxFile::open(p))
        .collect::<Result<Vec<_>>>()?;
    for m in &maps {
        check_records(m.bytes(), &m.path, layout.records_per_file)?;
    }
    let (train_maps, test_map) = maps.split_at(TRAIN_FILES.len());
    let n_train = train_maps.len() * layout.records_per_file;
    if layout.val_count == 0 || layout.val_count >= n_train {
        return Err(DataError::TooFewForSplit {
            path: paths[TRAIN_FILES.len() - 1].clone(),
            n: n_train,
            val: layout.val_count,
        });
    }
    let mut train = empty_split(n_train - layout.val_count);
    let mut val = empty_split(layout.val_count);
    let records = train_maps
        .iter()
        .flat_map(|m| m.bytes().chunks_exact(RECORD));
    for (i, record) in records.enumerate() {
        let to = if i < n_train - layout.val_count {
            &mut train
        } else {
            &mut val
        };
        push_record(to, record);
    }
    let mut test = empty_split(layout.records_per_file);
    for record in test_map[0].bytes().chunks_exact(RECORD) {
        push_record(&mut test, record);
    }
    Ok(Dataset {
        name: "cifar10".into(),
        classes: CLASSES,
        source: format!(
            "CIFAR-10 binary files in {}: {}",
            dir.display(),
            names.join(", ")
        ),
        train,
        val,
        test,
    })
}

/// The directory itself: a missing or unreadable one is named as such, rather
/// than as six missing files.
fn check_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            problem: "is not a directory; expected the folder holding data_batch_1.bin etc.".into(),
        });
    }
    std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    Ok(())
}

/// A file must be exactly `expected` whole records, each with a label `< 10`.
fn check_records(bytes: &[u8], path: &Path, expected: usize) -> Result<()> {
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::RecordLength {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            record: RECORD as u64,
        });
    }
    let records = bytes.len() / RECORD;
    if records != expected {
        return Err(DataError::RecordCount {
            path: path.to_path_buf(),
            records,
            expected,
        });
    }
    let bad = bytes
        .chunks_exact(RECORD)
        .enumerate()
        .find(|(_, r)| r[0] as usize >= CLASSES);
    if let Some((index, r)) = bad {
        return Err(DataError::LabelRange {
            path: path.to_path_buf(),
            label: r[0],
            index,
            classes: CLASSES,
        });
    }
    Ok(())
}

fn empty_split(n: usize) -> Split {
    Split {
        images: Vec::with_capacity(n * (RECORD - 1)),
        labels: Vec::with_capacity(n),
        channels: CHANNELS,
        rows: ROWS,
        cols: COLS,
    }
}

fn push_record(to: &mut Split, record: &[u8]) {
    to.labels.push(record[0]);
    to.images.extend_from_slice(&record[1..]);
}

/// Serialises records in the binary format: each `(label, [3, 32, 32] pixels)`.
/// For tests and tools that write data sets.
pub fn encode(records: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * RECORD);
    for (label, pixels) in records {
        assert_eq!(pixels.len(), RECORD - 1, "a record's image is [3, 32, 32]");
        out.push(*label);
        out.extend_from_slice(pixels);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_checks() {
        let p = Path::new("d/data_batch_1.bin");
        let image = vec![7u8; RECORD - 1];
        let two = encode(&[(3, &image), (9, &image)]);
        check_records(&two, p, 2).unwrap();
        let e = check_records(&two[..RECORD + 5], p, 2).unwrap_err();
        assert!(e.to_string().contains("not a whole number"), "{e}");
        let e = check_records(&two[..RECORD], p, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "d/data_batch_1.bin: 1 records, expected 2: truncated"
        );
        let bad = encode(&[(3, &image), (10, &image)]);
        let e = check_records(&bad, p, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "d/data_batch_1.bin: label 10 at index 1 is out of range 0..10"
        );
    }
}
