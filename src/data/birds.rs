//! UCSD-Birds (CUB-200-2011) attributes as ranking tasks on precomputed features
//! (DESIGN.md §3, §4: features → shared FC → one ranking branch per attribute).
//!
//! Files, as published, under `DIR`:
//! - `images.txt`: `<image_id> <path>`, one line per image. Its line order is the
//!   row order of the features.
//! - `train_test_split.txt`: `<image_id> <is_training_image>` (0 or 1), one line
//!   per image.
//! - `attributes/image_attribute_labels.txt`:
//!   `<image_id> <attribute_id> <is_present> <certainty_id> <time>`. The first four
//!   fields are checked strictly (a known image, attribute 1..=312, 0/1, 1..=4);
//!   anything after them is ignored, because some lines of the published file carry
//!   an extra field and the time is not used.
//!
//! and the features, a `.npy` `[n_images, dim]` (float16/32/64, C order) whose row r
//! belongs to line r of `images.txt`; it stays memory-mapped (`npy::map_matrix`).
//!
//! Tasks: one `TaskKind::Rank` per attribute id of `Options::attributes` (default
//! `DEFAULT_ATTRIBUTES`), named `attribute_<id>`. Score of image i on attribute a,
//! from its annotation (is_present p, certainty c: 1 not visible, 2 guessing,
//! 3 probably, 4 definitely):
//!
//! ```text
//! score = (2p − 1) · (c − 1) / 3      c in 2..=4: −1 … −1/3 absent, 1/3 … 1 present
//! score = NaN                          c = 1, or no line for (i, a)
//! ```
//!
//! so a sure "present" ranks above a guessed one, which ranks above any "absent".
//! "Not visible" is missing, not 0: the annotator could not see the part, and 0
//! would be a value nobody measured (missing targets are masked, never imputed).
//!
//! Split: the official one: `is_training_image = 1` rows are train, the rest test;
//! validation is `VAL_FRACTION` (10%) of the training rows, drawn from the seed by
//! `split::split_by_fractions`.
//!
//! Every failure names the file, and the line (1-based) where it is a line's fault;
//! nothing partial is returned.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::error::{DataError, Result};
use super::npy;
use super::split::{split_by_fractions, Fractions};
use super::tasks::{HeteroData, TaskKind, TaskSpec};

/// Attribute ids run 1..=312 in CUB-200-2011's `attributes.txt`.
pub const ATTRIBUTES: u32 = 312;

/// Ten ids spread evenly over the 312 (1 + 31k), so the tasks come from different
/// attribute groups (bill, wing, … each a run of consecutive ids) rather than one
/// body part; fixed before any training run, not picked by results.
pub const DEFAULT_ATTRIBUTES: [u32; 10] = [1, 32, 63, 94, 125, 156, 187, 218, 249, 280];

/// Share of the official training images held out for validation.
pub const VAL_FRACTION: f64 = 0.1;

pub const IMAGES: &str = "images.txt";
pub const SPLIT: &str = "train_test_split.txt";
pub const LABELS: &str = "attributes/image_attribute_labels.txt";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Attribute ids, one ranking task each, in task order.
    pub attributes: Vec<u32>,
    /// Draws the validation rows out of the official training rows.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attributes: DEFAULT_ATTRIBUTES.to_vec(),
            seed: 0,
        }
    }
}

/// Loads the annotations under `dir` and the features in `features`.
pub fn load_birds(dir: &Path, features: &Path, options: &Options) -> Result<HeteroData> {
    let task_of = task_index(&options.attributes)?;
    let images_path = dir.join(IMAGES);
    let row_of = read_images(&images_path)?;
    let n = row_of.len();
    let x = npy::map_matrix(features)?;
    if x.rows() != n {
        return Err(DataError::MisalignedFeatures {
            features: features.to_path_buf(),
            rows: x.rows(),
            images_path,
            images: n,
        });
    }
    let is_train = read_split(&dir.join(SPLIT), &row_of, &images_path)?;
    let labels_path = dir.join(LABELS);
    let m = options.attributes.len();
    let targets = read_scores(&labels_path, (&row_of, &images_path), &task_of, m)?;

    let official: Vec<usize> = (0..n).filter(|&r| is_train[r]).collect();
    let test: Vec<usize> = (0..n).filter(|&r| !is_train[r]).collect();
    let hold_out = Fractions {
        train: 1.0 - VAL_FRACTION,
        val: VAL_FRACTION,
        test: 0.0,
    };
    let (tr, va, _) = split_by_fractions(official.len(), hold_out, options.seed);
    let train: Vec<usize> = tr.iter().map(|&i| official[i]).collect();
    let val: Vec<usize> = va.iter().map(|&i| official[i]).collect();
    let how = format!(
        "the official training images less {}% for validation (seed {})",
        VAL_FRACTION * 100.0,
        options.seed
    );
    if train.is_empty() {
        return Err(DataError::NoTrainingRows {
            path: dir.join(SPLIT),
            how,
            rows: n,
        });
    }
    let tasks: Vec<TaskSpec> = options
        .attributes
        .iter()
        .map(|id| TaskSpec {
            name: format!("attribute_{id}"),
            kind: TaskKind::Rank,
            labels: Vec::new(),
        })
        .collect();
    if let Some(t) = (0..m).find(|&t| train.iter().all(|&r| targets[r * m + t].is_nan())) {
        return Err(DataError::UnlabelledTask {
            path: labels_path,
            column: tasks[t].name.clone(),
            train: train.len(),
            how,
        });
    }
    Ok(HeteroData {
        name: format!("cub-200-2011 attributes in {}", dir.display()),
        tasks,
        inputs: Box::new(x),
        targets,
        train,
        val,
        test,
    })
}

/// task_of[attribute id] = its task, for ids 0..=ATTRIBUTES. The list must be
/// non-empty, in range and without repeats.
fn task_index(attributes: &[u32]) -> Result<Vec<Option<usize>>> {
    let bad = |problem: String| DataError::Attributes {
        list: attributes.to_vec(),
        problem,
    };
    if attributes.is_empty() {
        return Err(bad("no attribute ids; give at least one task".into()));
    }
    let mut task_of = vec![None; ATTRIBUTES as usize + 1];
    for (t, &id) in attributes.iter().enumerate() {
        if !(1..=ATTRIBUTES).contains(&id) {
            return Err(bad(format!(
                "attribute id {id} is out of range 1..={ATTRIBUTES}"
            )));
        }
        if task_of[id as usize].replace(t).is_some() {
            return Err(bad(format!("attribute id {id} is given more than once")));
        }
    }
    Ok(task_of)
}

/// Calls `each(line number, fields)` for every non-blank line of `path`.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(usize, &[&str]) -> std::result::Result<(), String>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut text = String::new();
    let mut line = 0;
    loop {
        text.clear();
        if reader
            .read_line(&mut text)
            .map_err(|e| DataError::io(path, e))?
            == 0
        {
            return Ok(());
        }
        line += 1;
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        each(line, &fields).map_err(|problem| DataError::BadLine {
            path: path.to_path_buf(),
            line,
            problem,
        })?;
    }
}

/// The line has `min..=max` fields; the problem shows the expected `layout`.
fn arity(fields: &[&str], min: usize, max: usize, layout: &str) -> std::result::Result<(), String> {
    if (min..=max).contains(&fields.len()) {
        return Ok(());
    }
    let expected = match (min, max) {
        (a, b) if a == b => format!("{a}"),
        (a, usize::MAX) => format!("at least {a}"),
        (a, b) => format!("{a} to {b}"),
    };
    Err(format!(
        "{} fields, expected {expected}: {layout}",
        fields.len()
    ))
}

/// Field k parsed as a u32 in `range`, else a problem naming the field and value.
fn field(
    fields: &[&str],
    k: usize,
    name: &str,
    range: std::ops::RangeInclusive<u32>,
) -> std::result::Result<u32, String> {
    let text = fields.get(k).ok_or_else(|| {
        format!(
            "{} fields, expected a {name} in field {}",
            fields.len(),
            k + 1
        )
    })?;
    match text.parse::<u32>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "{name} {text:?} (field {}) is not an integer in {}..={}",
            k + 1,
            range.start(),
            range.end()
        )),
    }
}

/// The row of an image id of `images.txt` (at `images`, named in full: the error
/// is reported against another file's line, and either file may be the damaged one).
fn known(
    row_of: &HashMap<u32, usize>,
    images: &Path,
    id: u32,
) -> std::result::Result<usize, String> {
    row_of
        .get(&id)
        .copied()
        .ok_or_else(|| format!("image id {id} is not in {}", images.display()))
}

/// `images.txt`: image id → row (its line's order among the images).
fn read_images(path: &Path) -> Result<HashMap<u32, usize>> {
    let mut row_of = HashMap::new();
    for_each_line(path, |_, fields| {
        arity(fields, 2, 2, "<image_id> <path>")?;
        let id = field(fields, 0, "image id", 1..=u32::MAX)?;
        let row = row_of.len();
        if row_of.insert(id, row).is_some() {
            return Err(format!("image id {id} appears twice"));
        }
        Ok(())
    })?;
    if row_of.is_empty() {
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            problem: "lists no images".into(),
        });
    }
    Ok(row_of)
}

/// `train_test_split.txt`: is_train[row]. Every image must have exactly one line.
fn read_split(path: &Path, row_of: &HashMap<u32, usize>, images: &Path) -> Result<Vec<bool>> {
    let mut split: Vec<Option<bool>> = vec![None; row_of.len()];
    for_each_line(path, |_, fields| {
        arity(fields, 2, 2, "<image_id> <is_training_image>")?;
        let id = field(fields, 0, "image id", 1..=u32::MAX)?;
        let row = known(row_of, images, id)?;
        let is_train = field(fields, 1, "is_training_image", 0..=1)? == 1;
        if split[row].replace(is_train).is_some() {
            return Err(format!("image id {id} appears twice"));
        }
        Ok(())
    })?;
    if let Some(row) = split.iter().position(Option::is_none) {
        let id = row_of
            .iter()
            .find(|&(_, &r)| r == row)
            .map_or(0, |(&id, _)| id);
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            problem: format!(
                "no line for image id {id} ({} line {})",
                images.display(),
                row + 1
            ),
        });
    }
    Ok(split.into_iter().map(|s| s == Some(true)).collect())
}

/// `image_attribute_labels.txt`: the scores `[rows, tasks]` (module doc), NaN
/// where missing. Lines of attributes that are not tasks are checked but not kept.
fn read_scores(
    path: &Path,
    (row_of, images): (&HashMap<u32, usize>, &Path),
    task_of: &[Option<usize>],
    m: usize,
) -> Result<Vec<f32>> {
    let mut scores = vec![f32::NAN; row_of.len() * m];
    let mut seen = vec![false; row_of.len() * m];
    for_each_line(path, |_, fields| {
        // The time and any field after it are not read (module doc).
        arity(
            fields,
            4,
            usize::MAX,
            "<image_id> <attribute_id> <is_present> <certainty_id> …",
        )?;
        let id = field(fields, 0, "image id", 1..=u32::MAX)?;
        let row = known(row_of, images, id)?;
        let attribute = field(fields, 1, "attribute id", 1..=ATTRIBUTES)?;
        let present = field(fields, 2, "is_present", 0..=1)?;
        let certainty = field(fields, 3, "certainty_id", 1..=4)?;
        let Some(t) = task_of[attribute as usize] else {
            return Ok(());
        };
        if std::mem::replace(&mut seen[row * m + t], true) {
            return Err(format!(
                "image {id}, attribute {attribute} is annotated twice"
            ));
        }
        scores[row * m + t] = score(present, certainty);
        Ok(())
    })?;
    Ok(scores)
}

/// The ranking score of one annotation (module doc).
pub fn score(is_present: u32, certainty: u32) -> f32 {
    if certainty <= 1 {
        return f32::NAN;
    }
    let sign = if is_present == 1 { 1.0 } else { -1.0 };
    sign * (certainty - 1) as f32 / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores() {
        assert!(score(1, 1).is_nan() && score(0, 1).is_nan(), "not visible");
        assert_eq!(score(1, 4), 1.0);
        assert_eq!(score(0, 4), -1.0);
        assert!(score(1, 2) < score(1, 3) && score(0, 3) < score(0, 2));
        assert!(score(0, 2) < score(1, 2));
    }

    #[test]
    fn attribute_list_checks() {
        assert_eq!(task_index(&[312, 1]).unwrap()[1], Some(1));
        let e = |l: &[u32]| task_index(l).unwrap_err().to_string();
        assert!(e(&[]).contains("no attribute ids"));
        assert!(e(&[0]).contains("attribute id 0 is out of range 1..=312"));
        assert!(e(&[313]).contains("313"));
        assert!(e(&[5, 5]).contains("more than once"));
    }
}
