//! What a task is in a heterogeneous problem (issue 15): its kind, the rows its
//! inputs are gathered from, and `HeteroData`, the inputs, per-task targets and
//! split that the trainer reads. This module is the one owner of these facts; the
//! readers (`features`, `attributes`) build a `HeteroData`, the model and the trainer
//! only read it.
//!
//! Targets are one f32 per (row, task), NaN where the value is missing. A missing
//! target is masked out of that task's loss and metric, never imputed: imputing
//! would train the branch on values nobody measured.

use std::fmt;

use super::error::{DataError, Result};

/// A task's type as named on the command line, before the data says how many
/// classes a class task has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskType {
    Class,
    Binary,
    Regression,
    Rank,
}

impl TaskType {
    /// The names `--task NAME:TYPE` accepts, in the order error messages list them.
    pub const NAMES: [&'static str; 4] = ["class", "binary", "regression", "rank"];

    /// `"class" | "binary" | "regression" | "rank"`; `flag` is the whole flag value,
    /// quoted in the error.
    fn parse_in(s: &str, flag: &str) -> Result<TaskType> {
        match s {
            "class" => Ok(TaskType::Class),
            "binary" => Ok(TaskType::Binary),
            "regression" => Ok(TaskType::Regression),
            "rank" => Ok(TaskType::Rank),
            _ => Err(DataError::TaskFlag {
                flag: flag.to_string(),
                problem: format!(
                    "unknown task type '{s}'; expected one of {}",
                    TaskType::NAMES.join(", ")
                ),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Class => "class",
            TaskType::Binary => "binary",
            TaskType::Regression => "regression",
            TaskType::Rank => "rank",
        }
    }

    /// The full kind once the number of classes is known (ignored unless `Class`).
    pub fn with_classes(self, classes: usize) -> TaskKind {
        match self {
            TaskType::Class => TaskKind::Class { classes },
            TaskType::Binary => TaskKind::Binary,
            TaskType::Regression => TaskKind::Regression,
            TaskType::Rank => TaskKind::Rank,
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task predicts, and so its head, loss and metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// One of `classes` labels: softmax, cross-entropy, accuracy.
    Class { classes: usize },
    /// 0 or 1: sigmoid, binary cross-entropy, accuracy at 0.5.
    Binary,
    /// A real value: linear output on standardised targets (`train_moments`), MSE.
    Regression,
    /// A score whose order matters, not its value: pairwise ranking loss.
    Rank,
}

impl TaskKind {
    /// Parses a type name. A class task's class count is not in its name, so this
    /// gives the `TaskType`; `TaskType::with_classes` completes it.
    pub fn parse(s: &str) -> Result<TaskType> {
        TaskType::parse_in(s, s)
    }

    /// Width of the task's output layer: the class count for `Class`, else 1.
    pub fn outputs(&self) -> usize {
        match *self {
            TaskKind::Class { classes } => classes,
            TaskKind::Binary | TaskKind::Regression | TaskKind::Rank => 1,
        }
    }

    pub fn task_type(&self) -> TaskType {
        match self {
            TaskKind::Class { .. } => TaskType::Class,
            TaskKind::Binary => TaskType::Binary,
            TaskKind::Regression => TaskType::Regression,
            TaskKind::Rank => TaskType::Rank,
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskKind::Class { classes } => write!(f, "class ({classes})"),
            other => f.write_str(other.task_type().as_str()),
        }
    }
}

/// One task of a heterogeneous problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    /// Class tasks: the label string of each index. Read from a CSV, index = order of
    /// first appearance in the training split (rows in ascending order), then labels
    /// seen only in validation, then only in test (see `features`); built-in problems
    /// document their own order. Empty for other kinds.
    pub labels: Vec<String>,
}

/// `--task NAME:TYPE` parsed. The error names the flag value and the allowed types.
/// NAME may itself hold ':' (a CSV column such as `a:b`); the type is after the last.
pub fn parse_task_flag(s: &str) -> Result<(String, TaskType)> {
    let Some((name, ty)) = s.rsplit_once(':') else {
        return Err(DataError::TaskFlag {
            flag: s.to_string(),
            problem: format!(
                "expected NAME:TYPE with TYPE one of {}",
                TaskType::NAMES.join(", ")
            ),
        });
    };
    if name.trim().is_empty() {
        return Err(DataError::TaskFlag {
            flag: s.to_string(),
            problem: "the task name before ':' is empty".into(),
        });
    }
    Ok((name.trim().to_string(), TaskType::parse_in(ty.trim(), s)?))
}

/// Rows of inputs a batch is gathered from, without holding them all in memory.
pub trait FeatureRows: Send + Sync {
    fn rows(&self) -> usize;
    fn dim(&self) -> usize;
    /// Writes rows idx[0], idx[1], … as f32 into out ([idx.len(), dim]).
    ///
    /// Panics if an index is `>= rows()` or `out.len() != idx.len() * dim()`: the
    /// indices come from `HeteroData`'s splits, so either is a bug in the caller.
    fn gather(&self, idx: &[usize], out: &mut [f32]);
}

/// A heterogeneous problem: inputs, per-task targets and the split.
pub struct HeteroData {
    /// "mnist-attributes", or the features file's path.
    pub name: String,
    pub tasks: Vec<TaskSpec>,
    /// All rows of X.
    pub inputs: Box<dyn FeatureRows>,
    /// targets[row * tasks.len() + t], f32; NaN = missing (masked out of loss and
    /// metric, never imputed). Class: the class index as f32; Binary: 0/1;
    /// Regression: the value in its original unit; Rank: the score to order by.
    pub targets: Vec<f32>,
    /// Row indices of each split, disjoint.
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

impl HeteroData {
    /// Task t's target for `row` (NaN = missing).
    pub fn target(&self, row: usize, t: usize) -> f32 {
        self.targets[row * self.tasks.len() + t]
    }

    /// Mean and standard deviation of task t's non-missing targets over the training
    /// rows, for standardising regression targets. The training rows only, so that
    /// nothing about validation or test leaks into the model.
    ///
    /// Population std (divide by n, as `StandardScaler`). So that dividing by it is
    /// always safe: no training values give (0, 1), and a constant task gives std 1
    /// (standardising is then a shift only).
    pub fn train_moments(&self, t: usize) -> (f64, f64) {
        let values = self
            .train
            .iter()
            .map(|&r| self.target(r, t))
            .filter(|v| !v.is_nan())
            .map(f64::from);
        let (mut n, mut mean, mut m2) = (0usize, 0.0f64, 0.0f64);
        // Welford: one pass, no cancellation for large means with small spread.
        for v in values {
            n += 1;
            let d = v - mean;
            mean += d / n as f64;
            m2 += d * (v - mean);
        }
        if n == 0 {
            return (0.0, 1.0);
        }
        let std = (m2 / n as f64).sqrt();
        (mean, if std > 0.0 { std } else { 1.0 })
    }
}

impl fmt::Debug for HeteroData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeteroData")
            .field("name", &self.name)
            .field("tasks", &self.tasks)
            .field("rows", &self.inputs.rows())
            .field("dim", &self.inputs.dim())
            .field("train", &self.train.len())
            .field("val", &self.val.len())
            .field("test", &self.test.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_flags() {
        assert_eq!(
            parse_task_flag("style:class").unwrap(),
            ("style".to_string(), TaskType::Class)
        );
        assert_eq!(
            parse_task_flag("a:b:rank").unwrap(),
            ("a:b".to_string(), TaskType::Rank)
        );
        let e = parse_task_flag("year:ordinal").unwrap_err().to_string();
        assert!(
            e.contains("year:ordinal") && e.contains("'ordinal'") && e.contains("regression"),
            "{e}"
        );
        let e = parse_task_flag("year").unwrap_err().to_string();
        assert!(e.contains("NAME:TYPE") && e.contains("binary"), "{e}");
        assert!(parse_task_flag(":class").is_err());
        assert_eq!(TaskKind::parse("binary").unwrap(), TaskType::Binary);
        assert_eq!(TaskType::Class.with_classes(7).outputs(), 7);
        assert_eq!(TaskKind::Regression.outputs(), 1);
    }

    struct NoRows;
    impl FeatureRows for NoRows {
        fn rows(&self) -> usize {
            4
        }
        fn dim(&self) -> usize {
            0
        }
        fn gather(&self, _: &[usize], _: &mut [f32]) {}
    }

    #[test]
    fn moments_use_training_rows_and_skip_missing() {
        let data = HeteroData {
            name: "t".into(),
            tasks: vec![
                TaskSpec {
                    name: "y".into(),
                    kind: TaskKind::Regression,
                    labels: vec![],
                },
                TaskSpec {
                    name: "c".into(),
                    kind: TaskKind::Regression,
                    labels: vec![],
                },
            ],
            inputs: Box::new(NoRows),
            targets: vec![1.0, 5.0, f32::NAN, 5.0, 3.0, 5.0, 100.0, f32::NAN],
            train: vec![0, 1, 2],
            val: vec![3],
            test: vec![],
        };
        assert_eq!(data.train_moments(0), (2.0, 1.0));
        assert_eq!(data.train_moments(1), (5.0, 1.0), "constant: std 1");
        let with_row_3 = HeteroData {
            train: vec![0, 3],
            ..data
        };
        assert_eq!(
            with_row_3.train_moments(0),
            (50.5, 49.5),
            "values 1 and 100"
        );
    }
}
