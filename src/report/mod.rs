//! Human-readable outputs: `summary.md`, the paper-style table of a run.

use crate::data::Dataset;
use crate::train::{EpochRecord, RunSummary, TrainConfig};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// Writes `summary.md`: the reported figures (test metrics of the best-validation
/// epoch), one column per task for multi-task nets, then the per-epoch curve.
pub fn write_summary_md(
    path: &Path,
    cfg: &TrainConfig,
    data: &Dataset,
    records: &[EpochRecord],
    summary: &RunSummary,
) -> Result<()> {
    let mut md = String::new();
    writeln!(md, "# {} — {:?}, seed {}\n", data.name, cfg.mode, cfg.seed)?;
    writeln!(
        md,
        "Device {}; {} epochs of batch {}, SGD lr {} momentum {}; data: {}.\n",
        cfg.device, summary.epochs_run, cfg.batch, cfg.lr, cfg.momentum, data.source
    )?;
    writeln!(
        md,
        "Test metrics of the best validation epoch ({}):\n",
        summary.best_epoch
    )?;
    let tasks = summary.test_task_acc.as_deref().unwrap_or(&[]);
    let mut header = String::from("| model |");
    let mut rule = String::from("|---|");
    let mut row = format!("| {:?} |", cfg.mode);
    for (t, acc) in tasks.iter().enumerate() {
        write!(header, " task {t} |")?;
        rule.push_str("---:|");
        write!(row, " {:.2} |", 100.0 * acc)?;
    }
    header.push_str(" 10-way acc | # params | # branches |");
    rule.push_str("---:|---:|---:|");
    write!(
        row,
        " {:.2} | {} | {} |",
        100.0 * summary.test_acc,
        summary.params,
        summary.branches
    )?;
    writeln!(md, "{header}\n{rule}\n{row}\n")?;
    writeln!(md, "## Epochs\n")?;
    writeln!(
        md,
        "| epoch | train loss | val acc | test acc | seconds | images/s |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|")?;
    for r in records {
        writeln!(
            md,
            "| {} | {:.4} | {:.2} | {:.2} | {:.1} | {:.0} |",
            r.epoch,
            r.train_loss,
            100.0 * r.val_acc,
            100.0 * r.test_acc,
            r.seconds,
            r.images_per_s
        )?;
    }
    crate::train::write_atomically(path, md.as_bytes())
}
