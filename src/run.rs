//! What a run is and what it reports: its settings, one record per epoch, and the
//! summary (of a digit run, and of a heterogeneous one). `train` fills them, `report` writes them as tables; both import this
//! module and neither imports the other.

use crate::data::TaskKind;
use crate::model::{ConvStackSpec, Mode};
use crate::sharing::criteria::Criterion;
use crate::sharing::selective::SharingConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Every setting of a run; written to `config.json` as is.
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    pub dataset: String,
    pub mode: Mode,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub seed: u64,
    /// Stop after this many optimiser steps (smoke tests); the partial epoch is
    /// still evaluated, logged and checkpointed.
    pub max_steps: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub out: PathBuf,
    /// The device that runs the ops, as the backend names itself.
    pub device: String,
    /// Selective Sharing's settings (`--mode selective` only).
    pub sharing: Option<SharingConfig>,
    pub checkpoints: Checkpointing,
    /// Launch every op as it comes instead of replaying the step's recorded launch
    /// program (kernel devices; the results are the same bits either way).
    #[serde(skip)]
    pub eager: bool,
}

/// How a run is checkpointed and started; the results are the same for any value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Checkpointing {
    /// Also checkpoint every N optimiser steps (always at each epoch's end).
    pub every: Option<usize>,
    /// Continue the run in the output directory from its last checkpoint.
    #[serde(skip)]
    pub resume: bool,
}

/// Every setting of a heterogeneous run (`train::hetero`); written to `config.json`
/// as is.
#[derive(Clone, Debug, Serialize)]
pub struct HeteroConfig {
    pub mode: Mode,
    /// STL: the one task this net learns (index into the data's tasks).
    pub only_task: Option<usize>,
    pub epochs: usize,
    pub batch: usize,
    /// Adam's learning rate (β 0.9, 0.999, eps 1e-8, as torch.optim.Adam).
    pub lr: f32,
    pub seed: u64,
    pub max_steps: Option<usize>,
    /// The conv stack in front of the shared FC (image problems; the inputs are
    /// then images of `convs.input` values each).
    pub convs: Option<ConvStackSpec>,
    pub shared: usize,
    pub branch_hidden: [usize; 2],
    pub dropout: f32,
    pub out: PathBuf,
    pub device: String,
    pub sharing: Option<SharingConfig>,
    pub checkpoints: Checkpointing,
}

impl HeteroConfig {
    /// The run's name in tables and default directories, as [`TrainConfig::label`].
    pub fn label(&self) -> String {
        label(
            self.mode,
            self.sharing
                .as_ref()
                .map_or(Criterion::Similarity, |s| s.criterion),
        )
    }
}

/// One line of `log.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Optimiser steps so far.
    pub steps: usize,
    /// Mean over the epoch's batches of the batch loss (MTL: summed over tasks).
    pub train_loss: f64,
    /// 10-way accuracy, fraction in [0, 1].
    pub val_acc: f64,
    pub test_acc: f64,
    /// MTL: per-task binary accuracy (task t = "digit is t").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_task_acc: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_task_acc: Option<Vec<f64>>,
    /// Trainable parameter count.
    pub params: usize,
    pub branches: usize,
    /// Multi-task nets: the tasks served by each branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_groups: Option<Vec<Vec<usize>>>,
    /// Selective Sharing: whether the grouping is locked after this epoch, and the
    /// time its step took (not part of `seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing_seconds: Option<f64>,
    /// Where `sharing_seconds` went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_breakdown: Option<crate::sharing::selective::StepTimes>,
    /// Training time of the epoch, evaluation excluded.
    pub seconds: f64,
    pub images_per_s: f64,
    pub device: String,
}

/// What a finished run reports: the test figures of the best-validation epoch and
/// the model that produced them (saved as `best.safetensors`).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub best_epoch: usize,
    pub best_val_acc: f64,
    pub test_acc: f64,
    pub test_task_acc: Option<Vec<f64>>,
    /// The best-validation model's trainable parameters, branches and (multi-task
    /// nets) the tasks served by each branch.
    pub params: usize,
    pub branches: usize,
    pub task_groups: Option<Vec<Vec<usize>>>,
    /// The same at the end of the run; they differ from the above when branches
    /// merged after the best epoch.
    pub final_params: usize,
    pub final_branches: usize,
    pub final_task_groups: Option<Vec<Vec<usize>>>,
    /// Selective Sharing: the epoch whose decision locked the grouping.
    pub lock_epoch: Option<usize>,
    pub epochs_run: usize,
    pub steps: usize,
    pub mean_images_per_s: f64,
}

impl TrainConfig {
    /// The run's name in tables and default directories: "stl", "mtl",
    /// "selective-similarity", …
    pub fn label(&self) -> String {
        label(
            self.mode,
            self.sharing
                .as_ref()
                .map_or(Criterion::Similarity, |s| s.criterion),
        )
    }
}

/// "stl", "mtl", or "selective-CRITERION" (the criterion matters only for selective).
pub fn label(mode: Mode, criterion: Criterion) -> String {
    match mode {
        Mode::Selective => format!("selective-{}", criterion.name()),
        other => other.name().to_string(),
    }
}

/// One task's figure: accuracy in % (class, binary), mean absolute error in the
/// target's own unit (regression), or pairwise ranking accuracy in % (rank).
pub fn metric_name(kind: &TaskKind) -> &'static str {
    match kind {
        TaskKind::Class { .. } | TaskKind::Binary => "accuracy %",
        TaskKind::Regression => "MAE",
        TaskKind::Rank => "rank accuracy %",
    }
}

/// What a finished heterogeneous run reports: the test metrics of the epoch with
/// the lowest validation loss, and that model's size and grouping.
#[derive(Clone, Debug, Serialize)]
pub struct HeteroSummary {
    pub tasks: Vec<String>,
    pub kinds: Vec<TaskKind>,
    pub metrics: Vec<&'static str>,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub test: Vec<f64>,
    pub params: usize,
    pub branches: usize,
    pub task_groups: Vec<Vec<usize>>,
    pub lock_epoch: Option<usize>,
    pub epochs_run: usize,
    pub steps: usize,
}

/// One line of a heterogeneous run's `log.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeteroEpoch {
    pub epoch: usize,
    pub steps: usize,
    /// Mean over the epoch's batches of the summed task losses.
    pub train_loss: f64,
    /// The same on the validation split (the best-epoch criterion).
    pub val_loss: f64,
    /// Per task, its metric (`metric_name`) on validation and test.
    pub val: Vec<f64>,
    pub test: Vec<f64>,
    pub params: usize,
    pub branches: usize,
    pub task_groups: Vec<Vec<usize>>,
    /// The same groups by task name and kind, e.g. `["digit (class (10))",
    /// "parity (binary)"]`: which kinds a merged branch serves.
    pub named_groups: Vec<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    pub seconds: f64,
    pub samples_per_s: f64,
}
