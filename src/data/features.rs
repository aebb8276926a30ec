//! `sskernel train features`: precomputed features and per-sample targets, one
//! column per task (how the paper ran OmniArt; DESIGN.md §3).
//!
//! - X, `--features X.npy`: a 2-D C-order float16, float32 or float64 `.npy`, one row
//!   per sample. It stays in its memory map (`npy::map_matrix`); a batch converts
//!   only its own rows to f32, so X may be larger than memory.
//! - Y, `--targets Y.csv`: a CSV with a header and one data row per row of X, in the
//!   same order. Each `--task NAME:TYPE` names a column; other columns are ignored.
//!   Cells are trimmed; an empty cell is a missing target (NaN: masked, never
//!   imputed). Per type:
//!   - `class`: any string is a label. Indices are given in order of first
//!     appearance over the training rows (ascending), then labels seen only in
//!     validation, then only in test. Those last ones are kept rather than refused,
//!     because with a random split a rare class often lands only outside training;
//!     their rows count as errors the model could not have avoided, which is the
//!     honest metric, and the trainer can tell them apart by index
//!     (`>= number of labels seen in training`).
//!   - `binary`: `0`/`1` (also `0.0`/`1.0`, as pandas writes a column with gaps) or
//!     `true`/`false` in any case.
//!   - `regression`, `rank`: a finite number (in f32). `nan` or `inf` is an error,
//!     not a missing value: write an empty cell for that.
//! - Split: with `--split TRAIN:VAL:TEST` the rows are split by those fractions over
//!   a permutation drawn from the seed (`split::split_by_fractions`). Without it, a
//!   column named `split` holding `train`/`val`/`test` assigns each row; with
//!   neither, 0.8:0.1:0.1 by the seed. Both at once is an error rather than a silent
//!   choice, since they would disagree.
//!
//! Memory: X is never copied. Gathering touches only its rows' pages of the map;
//! those stay resident (clean, file-backed: the kernel drops them under pressure),
//! so after a full epoch the resident set holds about X's size in shared page cache
//! and nothing more (tests/features_memory.rs: 100k × 512 f32, 205 MB, peaks at
//! 204 MB resident of which 202 MB are the map's pages and 2 MB anonymous). Dropping
//! the pages after each batch (`madvise(MADV_DONTNEED)`) kept the peak at 11 MB but
//! made a shuffled epoch's gathers 9× slower (re-faulting every row), so it is not done.
//!
//! Any bad value fails the whole load (nothing partial is returned) with a message
//! naming the file, the line and X row, the column and what was expected.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use super::error::{DataError, Result};
use super::npy::{self, MappedMatrix};
use super::split::{split_by_fractions, Fractions};
use super::tasks::{FeatureRows, HeteroData, TaskSpec, TaskType};

/// The targets column that assigns rows to splits, when `--split` is not given.
pub const SPLIT_COLUMN: &str = "split";

/// How the rows are split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SplitSpec {
    /// No `--split`: the CSV's `split` column if it has one, else
    /// `Fractions::DEFAULT` (0.8:0.1:0.1) by the seed.
    Auto,
    /// `--split TRAIN:VAL:TEST`; an error if the CSV also has a `split` column.
    Fractions(Fractions),
}

impl SplitSpec {
    /// Parses a `--split` value.
    pub fn parse(s: &str) -> Result<SplitSpec> {
        Fractions::parse(s).map(SplitSpec::Fractions)
    }
}

impl FeatureRows for MappedMatrix {
    fn rows(&self) -> usize {
        MappedMatrix::rows(self)
    }

    fn dim(&self) -> usize {
        self.cols()
    }

    fn gather(&self, idx: &[usize], out: &mut [f32]) {
        let dim = self.cols();
        assert_eq!(out.len(), idx.len() * dim, "out is not [idx.len(), dim]");
        if dim == 0 {
            return;
        }
        for (&r, row) in idx.iter().zip(out.chunks_exact_mut(dim)) {
            self.row_into(r, row);
        }
    }
}

/// Loads X and the named target columns of Y, and splits the rows. `seed` draws
/// the permutation of a fraction split (unused with a `split` column).
pub fn load_features(
    features: &Path,
    targets: &Path,
    tasks: &[(String, TaskType)],
    split: SplitSpec,
    seed: u64,
) -> Result<HeteroData> {
    check_task_names(tasks, targets)?;
    let x = npy::map_matrix(features)?;
    let n = MappedMatrix::rows(&x);
    let table = read_targets(targets, tasks, split)?;
    if table.records != n {
        return Err(DataError::TargetRows {
            targets: targets.to_path_buf(),
            records: table.records,
            features: features.to_path_buf(),
            rows: n,
        });
    }
    let (how, (train, val, test)) = match (split, table.split) {
        (SplitSpec::Fractions(f), _) => (format!("--split {f}"), split_by_fractions(n, f, seed)),
        (SplitSpec::Auto, None) => (
            format!("the default split {}", Fractions::DEFAULT),
            split_by_fractions(n, Fractions::DEFAULT, seed),
        ),
        (SplitSpec::Auto, Some(parts)) => (format!("its '{SPLIT_COLUMN}' column"), parts),
    };
    if train.is_empty() {
        return Err(DataError::NoTrainingRows {
            path: targets.to_path_buf(),
            how,
            rows: n,
        });
    }
    let mut values = table.values;
    let m = tasks.len();
    if let Some((name, _)) = tasks.iter().enumerate().find_map(|(t, task)| {
        let unlabelled = train.iter().all(|&r| values[r * m + t].is_nan());
        unlabelled.then_some(task)
    }) {
        return Err(DataError::UnlabelledTask {
            path: targets.to_path_buf(),
            column: name.clone(),
            train: train.len(),
            how,
        });
    }
    let specs = tasks
        .iter()
        .enumerate()
        .map(|(t, (name, ty))| {
            let labels = match &table.interned[t] {
                Some(first_seen) => {
                    number_classes(&mut values, m, t, first_seen, [&train, &val, &test])
                }
                None => Vec::new(),
            };
            TaskSpec {
                name: name.clone(),
                kind: ty.with_classes(labels.len()),
                labels,
            }
        })
        .collect();
    Ok(HeteroData {
        name: features.display().to_string(),
        tasks: specs,
        inputs: Box::new(x),
        targets: values,
        train,
        val,
        test,
    })
}

/// Task names must be distinct, and `split` is reserved for the split column.
fn check_task_names(tasks: &[(String, TaskType)], targets: &Path) -> Result<()> {
    if tasks.is_empty() {
        return Err(DataError::TaskFlag {
            flag: "NAME:TYPE".into(),
            problem: format!("no task given; name a column of {}", targets.display()),
        });
    }
    for (i, (name, ty)) in tasks.iter().enumerate() {
        let flag = || format!("{name}:{ty}");
        if name == SPLIT_COLUMN {
            return Err(DataError::TaskFlag {
                flag: flag(),
                problem: format!(
                    "'{SPLIT_COLUMN}' is the column that assigns rows to train/val/test, \
                     not a task; rename the column to train on it"
                ),
            });
        }
        if tasks[..i].iter().any(|(other, _)| other == name) {
            return Err(DataError::TaskFlag {
                flag: flag(),
                problem: format!("task '{name}' is given more than once"),
            });
        }
    }
    Ok(())
}

/// The targets CSV read in one pass.
struct TargetTable {
    /// Data rows read.
    records: usize,
    /// [records, tasks]. Class cells hold a provisional id (order of first
    /// appearance in the file), renumbered by `number_classes` once the split is known.
    values: Vec<f32>,
    /// Class tasks: label string of each provisional id. None for other kinds.
    interned: Vec<Option<Vec<String>>>,
    /// (train, val, test) from the `split` column, when there is one.
    split: Option<(Vec<usize>, Vec<usize>, Vec<usize>)>,
}

fn read_targets(
    path: &Path,
    tasks: &[(String, TaskType)],
    split: SplitSpec,
) -> Result<TargetTable> {
    let csv_err = |source| DataError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_string)
        .collect();
    let column = |name: &str| -> Result<Option<usize>> {
        let mut at = header.iter().enumerate().filter(|(_, h)| *h == name);
        match (at.next(), at.next()) {
            (_, Some(_)) => Err(DataError::DuplicateColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
            }),
            (found, None) => Ok(found.map(|(i, _)| i)),
        }
    };
    let columns = tasks
        .iter()
        .map(|(name, _)| {
            column(name)?.ok_or_else(|| DataError::UnknownColumn {
                path: path.to_path_buf(),
                column: name.clone(),
                header: header.clone(),
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let split_column = match (split, column(SPLIT_COLUMN)?) {
        (SplitSpec::Fractions(f), Some(_)) => {
            return Err(DataError::SplitConflict {
                path: path.to_path_buf(),
                flag: f.to_string(),
            })
        }
        (SplitSpec::Fractions(_), None) => None,
        (SplitSpec::Auto, c) => c,
    };

    let mut values = Vec::new();
    let mut classes: Vec<Option<Interned>> = tasks
        .iter()
        .map(|(_, ty)| (*ty == TaskType::Class).then(Interned::default))
        .collect();
    let mut parts: [Vec<usize>; 3] = Default::default();
    let mut record = csv::StringRecord::new();
    let mut row = 0;
    while reader.read_record(&mut record).map_err(csv_err)? {
        let line = record.position().map_or(0, |p| p.line());
        // `flexible` is off, so every record has the header's width.
        let cell = |c: usize| record.get(c).unwrap_or("");
        let bad = |c: usize, expected| DataError::BadTarget {
            path: path.to_path_buf(),
            line,
            row,
            column: header[c].clone(),
            value: cell(c).to_string(),
            expected,
        };
        for (t, ((_, ty), &c)) in tasks.iter().zip(&columns).enumerate() {
            let text = cell(c);
            let value = if text.is_empty() {
                f32::NAN
            } else if let Some(labels) = classes[t].as_mut() {
                labels.id(text) as f32
            } else if *ty == TaskType::Binary {
                parse_binary(text).ok_or_else(|| bad(c, "0, 1, true or false"))?
            } else {
                parse_finite(text).ok_or_else(|| bad(c, "a finite number"))?
            };
            values.push(value);
        }
        if let Some(c) = split_column {
            let part = match cell(c) {
                "train" => 0,
                "val" => 1,
                "test" => 2,
                _ => return Err(bad(c, "train, val or test")),
            };
            parts[part].push(row);
        }
        row += 1;
    }
    Ok(TargetTable {
        records: row,
        values,
        interned: classes
            .into_iter()
            .map(|c| c.map(|labels| labels.names))
            .collect(),
        split: split_column.map(|_| {
            let [train, val, test] = parts;
            (train, val, test)
        }),
    })
}

/// A class task's labels as read, numbered in order of first appearance in the file.
#[derive(Default)]
struct Interned {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interned {
    fn id(&mut self, label: &str) -> u32 {
        if let Some(&id) = self.ids.get(label) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(label.to_string(), id);
        self.names.push(label.to_string());
        id
    }
}

/// `true`/`false` (any case) or a number equal to 0 or 1.
fn parse_binary(text: &str) -> Option<f32> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Some(1.0),
        "false" => Some(0.0),
        other => match other.parse::<f64>() {
            Ok(v) if v == 0.0 || v == 1.0 => Some(v as f32),
            _ => None,
        },
    }
}

/// A number that is finite once rounded to the f32 the targets are kept in.
fn parse_finite(text: &str) -> Option<f32> {
    text.parse::<f64>()
        .ok()
        .map(|v| v as f32)
        .filter(|v| v.is_finite())
}

/// Renumbers class task t from provisional ids (file order) to the order of first
/// appearance over `parts` (train, then val, then test; each ascending). Returns the
/// label string of each final index.
fn number_classes(
    values: &mut [f32],
    n_tasks: usize,
    t: usize,
    first_seen: &[String],
    parts: [&[usize]; 3],
) -> Vec<String> {
    let mut index_of = vec![u32::MAX; first_seen.len()];
    let mut labels = Vec::with_capacity(first_seen.len());
    for &row in parts.into_iter().flatten() {
        let v = &mut values[row * n_tasks + t];
        if v.is_nan() {
            continue;
        }
        let id = *v as usize;
        if index_of[id] == u32::MAX {
            index_of[id] = labels.len() as u32;
            labels.push(first_seen[id].clone());
        }
        *v = index_of[id] as f32;
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_numbers() {
        for (s, v) in [("1", 1.0), ("0.0", 0.0), ("TRUE", 1.0), ("false", 0.0)] {
            assert_eq!(parse_binary(s), Some(v), "{s}");
        }
        for s in ["2", "yes", "0.5", "nan"] {
            assert_eq!(parse_binary(s), None, "{s}");
        }
        assert_eq!(parse_finite("-1.5e2"), Some(-150.0));
        for s in ["nan", "inf", "1e39", "abc"] {
            assert_eq!(parse_finite(s), None, "{s}");
        }
    }

    #[test]
    fn classes_numbered_by_training_rows_first() {
        // provisional ids in file order: a=0, b=1, c=2; rows 0..4 = a b c a.
        let mut values = vec![0.0, 1.0, 2.0, f32::NAN, 0.0];
        let first_seen: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let labels = number_classes(&mut values, 1, 0, &first_seen, [&[2, 4], &[0, 3], &[1]]);
        assert_eq!(labels, ["c", "a", "b"]);
        assert_eq!(values[..3], [1.0, 2.0, 0.0]);
        assert!(values[3].is_nan());
        assert_eq!(values[4], 1.0);
    }
}
