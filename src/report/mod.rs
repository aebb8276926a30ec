//! Every human-readable table and figure: `summary.md` of a digit run (here; a
//! heterogeneous run's in `hetero`, sharing the figure links and the decision's
//! distances below), Table 1 of `reproduce` (`table`) and its heterogeneous
//! counterpart (`hetero`), the PNG figures (`plot`). Reads the run records of
//! `crate::run`; knows nothing of the training loop.

pub mod hetero;
pub mod plot;
pub mod table;

use crate::data::Dataset;
use crate::run::{EpochRecord, RunSummary, TrainConfig};
use crate::sharing::selective::Decision;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The figures of a run directory, as `summary.md` links them.
pub const CURVES_PNG: &str = "curves.png";
pub const GROUPING_PNG: &str = "grouping.png";

/// Writes a run's figures: `curves.png` and, when sharing decided anything,
/// `grouping.png`.
pub fn write_run_plots(
    dir: &Path,
    curves: &plot::Curves,
    decisions: Option<&[Decision]>,
) -> Result<()> {
    plot::write_curves(&dir.join(CURVES_PNG), curves)?;
    if let Some(decisions) = decisions.filter(|d| !d.is_empty()) {
        plot::write_grouping(&dir.join(GROUPING_PNG), decisions)?;
    }
    Ok(())
}

/// Writes `summary.md`: the reported figures (test metrics of the best-validation
/// epoch and that model's size), one column per task for multi-task nets, the
/// per-epoch curve with the groups of each epoch and, for Selective Sharing, the
/// distances of the decision that last changed the grouping; it links the figures
/// of `write_run_plots`.
pub fn write_summary_md(
    path: &Path,
    cfg: &TrainConfig,
    data: &Dataset,
    records: &[EpochRecord],
    summary: &RunSummary,
    decisions: Option<&[Decision]>,
) -> Result<()> {
    let mut md = String::new();
    writeln!(md, "# {} — {}, seed {}\n", data.name, cfg.label(), cfg.seed)?;
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
    let mut row = format!("| {} |", cfg.label());
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
    if summary.final_params != summary.params {
        writeln!(
            md,
            "Branches merged after the best epoch: the final model has {} parameters \
             and {} branches ({:?}); `best.safetensors` holds the model above.\n",
            summary.final_params,
            summary.final_branches,
            summary.final_task_groups.as_deref().unwrap_or(&[])
        )?;
    }
    write_curves_link(&mut md)?;
    writeln!(md, "## Epochs\n")?;
    writeln!(
        md,
        "| epoch | train loss | val acc | test acc | params | seconds | images/s | tasks per branch |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for r in records {
        let groups = r
            .task_groups
            .as_ref()
            .map_or("–".to_string(), |g| format!("{g:?}"));
        writeln!(
            md,
            "| {} | {:.4} | {:.2} | {:.2} | {} | {:.1} | {:.0} | {groups} |",
            r.epoch,
            r.train_loss,
            100.0 * r.val_acc,
            100.0 * r.test_acc,
            r.params,
            r.seconds,
            r.images_per_s
        )?;
    }
    write_grouping_section(&mut md, decisions)?;
    crate::atomic_file::write(path, md.as_bytes())
}

/// The link to `curves.png` in a summary.
fn write_curves_link(md: &mut String) -> Result<()> {
    writeln!(
        md,
        "![loss, metrics and parameters per epoch]({CURVES_PNG})\n"
    )?;
    Ok(())
}

/// Selective Sharing's part of a summary: the distances of the decision that last
/// changed the grouping and the link to `grouping.png` (nothing without decisions,
/// as `write_run_plots` draws nothing then).
fn write_grouping_section(md: &mut String, decisions: Option<&[Decision]>) -> Result<()> {
    if let Some(decisions) = decisions.filter(|d| !d.is_empty()) {
        write_decision_distances(md, decisions)?;
        writeln!(
            md,
            "\n![each decision's distances, groups and condensed tree]({GROUPING_PNG})"
        )?;
    }
    Ok(())
}

/// The descriptor distances of the decision that last changed the grouping (the
/// last decision when none did), branches named by their origin task.
fn write_decision_distances(md: &mut String, decisions: &[Decision]) -> Result<()> {
    let Some(d) = decisions
        .iter()
        .rev()
        .find(|d| !d.merged.is_empty())
        .or(decisions.last())
    else {
        return Ok(());
    };
    writeln!(
        md,
        "\n## Grouping decision of epoch {}\n\nDistances between the branches' unit-norm \
         TT descriptors (rows and columns: the branch's origin task); groups {:?}, \
         tasks per branch after it {:?}.\n",
        d.epoch, d.groups, d.task_groups
    )?;
    let names: Vec<String> = d.branches.iter().map(|b| b.to_string()).collect();
    writeln!(md, "| | {} |", names.join(" | "))?;
    writeln!(md, "|---|{}", "---:|".repeat(names.len()))?;
    for (name, row) in names.iter().zip(&d.distances) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
        writeln!(md, "| {name} | {} |", cells.join(" | "))?;
    }
    Ok(())
}
