//! The heterogeneous counterpart of Table 1 — the paper's Table 3 (OmniArt) — from
//! `reproduce mnist-attributes` / `reproduce features`: one row per configuration,
//! one column per task in its own metric and unit (mean ± std over seeds), the
//! measured model's parameters, lock epoch and branches, then the groups each
//! multi-task run ended with, by task name and kind; `table.png` beside it
//! (`plot::write_hetero_table`). A heterogeneous run's `summary.md` is this table's
//! row of the one run, with its epochs.

use super::table::{count, labels_in_order, lock_cells, mean_std, pm, TABLE_PNG};
use crate::atomic_file::{write as write_atomically, write_json};
use crate::data::{HeteroData, TaskKind};
use crate::run::{metric_name, HeteroConfig, HeteroEpoch, HeteroSummary};
use crate::sharing::selective::Decision;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// One configuration over every seed.
#[derive(Clone, Debug, Serialize)]
pub struct HeteroRow {
    pub label: String,
    pub seeds: Vec<u64>,
    /// Per task: mean and std over seeds of its test metric.
    pub tasks: Vec<(f64, f64)>,
    /// Parameters of the measured model(s): STL counts every task's net.
    pub params: (f64, f64),
    pub branches: (f64, f64),
    pub lock_epoch: Vec<Option<usize>>,
    /// Per seed: the tasks of each branch of the measured model (multi-task nets).
    pub task_groups: Vec<Vec<Vec<usize>>>,
}

/// A run of one configuration and seed: one summary (a multi-task net) or one per
/// task (STL, in task order).
pub type HeteroRun = (String, u64, Vec<HeteroSummary>);

/// Rows in the order configurations first appear.
pub fn rows(runs: &[HeteroRun], tasks: usize) -> Vec<HeteroRow> {
    labels_in_order(runs)
        .into_iter()
        .map(|label| {
            let of: Vec<&HeteroRun> = runs.iter().filter(|(l, _, _)| l == label).collect();
            // Task t's figure of a run: its own STL net's, or the multi-task net's.
            let task_value = |parts: &[HeteroSummary], t: usize| match parts {
                [one] => one.test[t],
                stl => stl[t].test[0],
            };
            let stat = |f: &dyn Fn(&[HeteroSummary]) -> f64| {
                mean_std(&of.iter().map(|(_, _, p)| f(p)).collect::<Vec<_>>())
            };
            let multi = |p: &[HeteroSummary]| p.len() == 1;
            HeteroRow {
                label: label.clone(),
                seeds: of.iter().map(|(_, s, _)| *s).collect(),
                tasks: (0..tasks).map(|t| stat(&|p| task_value(p, t))).collect(),
                params: stat(&|p| p.iter().map(|s| s.params as f64).sum()),
                branches: stat(&|p| p.iter().map(|s| s.branches as f64).sum()),
                lock_epoch: of
                    .iter()
                    .map(|(_, _, p)| p.iter().find_map(|s| s.lock_epoch))
                    .collect(),
                task_groups: of
                    .iter()
                    .filter(|(_, _, p)| multi(p))
                    .map(|(_, _, p)| p[0].task_groups.clone())
                    .collect(),
            }
        })
        .collect()
}

/// A metric's mean ± std: two decimals for percentages, four significant digits
/// for values below 1 (an MAE in [0, 1] units would read 0.00 otherwise).
fn cell((mean, std): (f64, f64), seeds: usize) -> String {
    if mean.abs() >= 1.0 || mean == 0.0 {
        return pm((mean, std), 1.0, seeds);
    }
    let decimals = (3 - mean.abs().log10().floor() as i32).max(2) as usize;
    if seeds > 1 {
        format!("{mean:.decimals$} ± {std:.decimals$}")
    } else {
        format!("{mean:.decimals$}")
    }
}

/// What each task's figure is, in the tables' words.
const UNITS: &str = "Class and binary tasks: accuracy %; regression: mean absolute error in \
                     the target's unit (lower is better); rank: pairwise ranking accuracy %.";

/// A task as the tables name it: `digit (class (10))`.
fn task_name(name: &str, kind: &TaskKind) -> String {
    format!("{name} ({kind})")
}

/// The table's lines: one column per task (`tasks`: name and kind, in the rows'
/// task order) in its metric, # params, lock epoch, # branches.
fn write_model_table(md: &mut String, rows: &[HeteroRow], tasks: &[(&str, TaskKind)]) {
    let head: Vec<String> = tasks
        .iter()
        .map(|(name, kind)| format!("{name} ({kind}, {})", metric_name(kind)))
        .collect();
    let _ = writeln!(
        md,
        "| model | {} | # params | lock epoch | # branches |",
        head.join(" | ")
    );
    let _ = writeln!(md, "|---|{}---:|---|---:|", "---:|".repeat(head.len()));
    for r in rows {
        let cells: Vec<String> = r.tasks.iter().map(|&v| cell(v, r.seeds.len())).collect();
        let locks = lock_cells(&r.lock_epoch);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.label,
            cells.join(" | "),
            count(r.params),
            locks.join(" / "),
            count(r.branches)
        );
    }
}

/// The branches that serve more than one task, by task name and kind:
/// `{digit (class (10)), parity (binary)} {ink (regression), slant (regression)}`.
fn shared_groups(groups: &[Vec<usize>], tasks: &[(&str, TaskKind)]) -> String {
    let shared: Vec<String> = groups
        .iter()
        .filter(|g| g.len() > 1)
        .map(|g| {
            let names: Vec<String> = g
                .iter()
                .map(|&t| task_name(tasks[t].0, &tasks[t].1))
                .collect();
            format!("{{{}}}", names.join(", "))
        })
        .collect();
    if shared.is_empty() {
        "every task alone".to_string()
    } else {
        shared.join(" ")
    }
}

/// The table as markdown.
pub fn markdown(rows: &[HeteroRow], data: &HeteroData) -> String {
    let mut md = String::new();
    let seeds = rows.first().map_or(0, |r| r.seeds.len());
    let _ = writeln!(
        md,
        "# {} — STL, MTL and Selective Sharing\n\nTest metrics of the epoch with the lowest \
         validation loss, mean ± std over {seeds} seed(s); STL is one net per task (its \
         parameters and branches summed). {UNITS}\n",
        data.name
    );
    let tasks: Vec<(&str, TaskKind)> = data
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.kind))
        .collect();
    write_model_table(&mut md, rows, &tasks);
    let _ = writeln!(
        md,
        "\n![each task's metric and the parameters per configuration, mean ± std]({TABLE_PNG})"
    );
    let _ = writeln!(md, "\n## Groups of the measured model, per seed\n");
    for r in rows.iter().filter(|r| !r.task_groups.is_empty()) {
        let per_seed: Vec<String> = r
            .task_groups
            .iter()
            .map(|groups| shared_groups(groups, &tasks))
            .collect();
        let _ = writeln!(md, "- **{}**: {}", r.label, per_seed.join(" / "));
    }
    md
}

/// Writes `table.md`, `table.json` and `table.png` into `out`.
pub fn write_table(out: &Path, data: &HeteroData, runs: &[HeteroRun]) -> Result<()> {
    let rows = rows(runs, data.tasks.len());
    let md = markdown(&rows, data);
    write_json(&out.join("table.json"), &rows)?;
    super::plot::write_hetero_table(&out.join(TABLE_PNG), &rows, &data.tasks)?;
    write_atomically(&out.join("table.md"), md.as_bytes())?;
    println!("{md}");
    Ok(())
}

/// Writes a heterogeneous run's `summary.md`: the test metrics of the epoch with the
/// lowest validation loss (the table's row of this one run), the groups of that
/// model by task name and kind, the per-epoch table and, for Selective Sharing, the
/// distances of the decision that last changed the grouping; it links the figures
/// of `write_run_plots`.
pub fn write_summary_md(
    path: &Path,
    cfg: &HeteroConfig,
    data: &HeteroData,
    records: &[HeteroEpoch],
    summary: &HeteroSummary,
    decisions: Option<&[Decision]>,
) -> Result<()> {
    let mut md = String::new();
    let label = cfg.label();
    writeln!(md, "# {} — {label}, seed {}\n", data.name, cfg.seed)?;
    let convs = if cfg.convs.is_some() {
        "a conv stack, "
    } else {
        ""
    };
    writeln!(
        md,
        "Device {}; {} epochs of batch {}, Adam lr {}; {convs}shared FC {}, branches FC {} → \
         FC {}, dropout {}; data: {}, train/val/test {}/{}/{} samples.\n",
        cfg.device,
        summary.epochs_run,
        cfg.batch,
        cfg.lr,
        cfg.shared,
        cfg.branch_hidden[0],
        cfg.branch_hidden[1],
        cfg.dropout,
        data.name,
        data.train.len(),
        data.val.len(),
        data.test.len()
    )?;
    writeln!(
        md,
        "Test metrics of the epoch with the lowest validation loss ({}). {UNITS}\n",
        summary.best_epoch
    )?;
    let tasks: Vec<(&str, TaskKind)> = summary
        .tasks
        .iter()
        .map(String::as_str)
        .zip(summary.kinds.iter().copied())
        .collect();
    let run = (label, cfg.seed, vec![summary.clone()]);
    write_model_table(&mut md, &rows(&[run], tasks.len()), &tasks);
    writeln!(
        md,
        "\nTasks per branch of this model: {}.\n",
        shared_groups(&summary.task_groups, &tasks)
    )?;
    super::write_curves_link(&mut md)?;
    writeln!(md, "## Epochs\n")?;
    let test: Vec<String> = tasks
        .iter()
        .map(|(name, _)| format!("test {name}"))
        .collect();
    writeln!(
        md,
        "| epoch | train loss | val loss | {} | params | branches | seconds | samples/s | shared branches |",
        test.join(" | ")
    )?;
    writeln!(
        md,
        "|---:|---:|---:|{}---:|---:|---:|---:|---|",
        "---:|".repeat(test.len())
    )?;
    for r in records {
        let metrics: Vec<String> = r.test.iter().map(|&v| cell((v, 0.0), 1)).collect();
        writeln!(
            md,
            "| {} | {:.4} | {:.4} | {} | {} | {} | {:.1} | {:.0} | {} |",
            r.epoch,
            r.train_loss,
            r.val_loss,
            metrics.join(" | "),
            r.params,
            r.branches,
            r.seconds,
            r.samples_per_s,
            shared_groups(&r.task_groups, &tasks)
        )?;
    }
    super::write_grouping_section(&mut md, decisions)?;
    crate::atomic_file::write(path, md.as_bytes())
}
