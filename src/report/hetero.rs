//! The heterogeneous counterpart of Table 1 — the paper's Table 3 (OmniArt) — from
//! `reproduce mnist-attributes` / `reproduce features`: one row per configuration,
//! one column per task in its own metric and unit (mean ± std over seeds), the
//! measured model's parameters, lock epoch and branches, then the groups each
//! multi-task run ended with, by task name and kind.

use super::table::{count, labels_in_order, lock_cells, mean_std, pm};
use crate::atomic_file::{write as write_atomically, write_json};
use crate::data::HeteroData;
use crate::run::{metric_name, HeteroSummary};
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

/// The table as markdown.
pub fn markdown(rows: &[HeteroRow], data: &HeteroData) -> String {
    let mut md = String::new();
    let seeds = rows.first().map_or(0, |r| r.seeds.len());
    let _ = writeln!(
        md,
        "# {} — STL, MTL and Selective Sharing\n\nTest metrics of the epoch with the lowest \
         validation loss, mean ± std over {seeds} seed(s); STL is one net per task (its \
         parameters and branches summed). Class and binary tasks: accuracy %; regression: \
         mean absolute error in the target's unit (lower is better); rank: pairwise ranking \
         accuracy %.\n",
        data.name
    );
    let head: Vec<String> = data
        .tasks
        .iter()
        .map(|t| format!("{} ({}, {})", t.name, t.kind, metric_name(&t.kind)))
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
    let _ = writeln!(md, "\n## Groups of the measured model, per seed\n");
    let name = |t: usize| format!("{} ({})", data.tasks[t].name, data.tasks[t].kind);
    for r in rows.iter().filter(|r| !r.task_groups.is_empty()) {
        let per_seed: Vec<String> = r
            .task_groups
            .iter()
            .map(|groups| {
                let shared: Vec<String> = groups
                    .iter()
                    .filter(|g| g.len() > 1)
                    .map(|g| {
                        format!(
                            "{{{}}}",
                            g.iter().map(|&t| name(t)).collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect();
                if shared.is_empty() {
                    "every task alone".to_string()
                } else {
                    shared.join(" ")
                }
            })
            .collect();
        let _ = writeln!(md, "- **{}**: {}", r.label, per_seed.join(" / "));
    }
    md
}

/// Writes `table.md` and `table.json` into `out`.
pub fn write_table(out: &Path, data: &HeteroData, runs: &[HeteroRun]) -> Result<()> {
    let rows = rows(runs, data.tasks.len());
    let md = markdown(&rows, data);
    write_atomically(&out.join("table.md"), md.as_bytes())?;
    write_json(&out.join("table.json"), &rows)?;
    println!("{md}");
    Ok(())
}
