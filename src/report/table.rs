//! Table 1 of the paper from `reproduce`'s runs: one row per configuration, mean ±
//! std over seeds of each task's test accuracy, the 10-way accuracy, the measured
//! model's size, lock epochs, the groups per seed and their stability across seeds.

use crate::data::Dataset;
use crate::run::{RunSummary, TrainConfig};
use crate::sharing::stability;
use serde::Serialize;
use std::fmt::Write;

/// The table's figure (`plot::write_table`), beside table.md in `reproduce`'s directory.
pub const TABLE_PNG: &str = "table.png";

/// One row of the table: a configuration over every seed.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub label: String,
    pub seeds: Vec<u64>,
    /// Per task: mean and std over seeds of the test binary accuracy (multi-task nets).
    pub task_acc: Option<Vec<(f64, f64)>>,
    /// 10-way test accuracy of the best-validation epoch: mean, std.
    pub test_acc: (f64, f64),
    /// The best-validation model's parameters and branches (the model measured).
    pub params: (f64, f64),
    pub branches: (f64, f64),
    /// Parameters at the end of the run.
    pub final_params: (f64, f64),
    /// Per seed: the epoch whose decision locked the grouping (selective only).
    pub lock_epoch: Vec<Option<usize>>,
    /// Per seed: the tasks of each branch in the best-validation model, and at the end.
    pub task_groups: Vec<Option<Vec<Vec<usize>>>>,
    pub final_task_groups: Vec<Option<Vec<Vec<usize>>>>,
    /// How stable the final groups are across seeds: mean and minimum adjusted
    /// Rand index over every pair of seeds (multi-task nets, ≥ 2 seeds).
    pub final_groups_ari: Option<(f64, f64)>,
}

pub(crate) fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// The configurations' labels in the order they first appear.
pub(crate) fn labels_in_order<T>(runs: &[(String, u64, T)]) -> Vec<&String> {
    let mut labels: Vec<&String> = Vec::new();
    for (label, _, _) in runs {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels
}

/// Rows in the order configurations first appear.
pub fn rows(results: &[(String, u64, RunSummary)]) -> Vec<Row> {
    labels_in_order(results)
        .into_iter()
        .map(|label| {
            let runs: Vec<&(String, u64, RunSummary)> =
                results.iter().filter(|(l, _, _)| l == label).collect();
            let of = |f: &dyn Fn(&RunSummary) -> f64| {
                mean_std(&runs.iter().map(|(_, _, s)| f(s)).collect::<Vec<_>>())
            };
            let tasks = runs[0].2.test_task_acc.as_ref().map(|t| t.len());
            Row {
                label: label.clone(),
                seeds: runs.iter().map(|(_, seed, _)| *seed).collect(),
                task_acc: tasks.map(|tasks| {
                    (0..tasks)
                        .map(|t| of(&|s| s.test_task_acc.as_ref().map_or(f64::NAN, |a| a[t])))
                        .collect()
                }),
                test_acc: of(&|s| s.test_acc),
                params: of(&|s| s.params as f64),
                branches: of(&|s| s.branches as f64),
                final_params: of(&|s| s.final_params as f64),
                lock_epoch: runs.iter().map(|(_, _, s)| s.lock_epoch).collect(),
                task_groups: runs.iter().map(|(_, _, s)| s.task_groups.clone()).collect(),
                final_task_groups: runs
                    .iter()
                    .map(|(_, _, s)| s.final_task_groups.clone())
                    .collect(),
                final_groups_ari: runs
                    .iter()
                    .map(|(_, _, s)| s.final_task_groups.clone())
                    .collect::<Option<Vec<_>>>()
                    .and_then(|groupings| stability::pairwise_ari(&groupings)),
            }
        })
        .collect()
}

/// A count over seeds (parameters, branches): the number when every seed agrees,
/// else mean ± std.
pub(crate) fn count(v: (f64, f64)) -> String {
    if v.1 == 0.0 {
        format!("{:.0}", v.0)
    } else if v.0 >= 100.0 {
        format!("{:.0} ± {:.0}", v.0, v.1)
    } else {
        format!("{:.2} ± {:.2}", v.0, v.1)
    }
}

/// Lock epochs per seed, "–" where none locked.
pub(crate) fn lock_cells(lock_epoch: &[Option<usize>]) -> Vec<String> {
    lock_epoch
        .iter()
        .map(|l| l.map_or("–".into(), |e| e.to_string()))
        .collect()
}

pub(crate) fn pm(v: (f64, f64), scale: f64, seeds: usize) -> String {
    if seeds > 1 {
        format!("{:.2} ± {:.2}", scale * v.0, scale * v.1)
    } else {
        format!("{:.2}", scale * v.0)
    }
}

/// The paper-style table: one column per task, the 10-way accuracy, # params,
/// lock epoch, # branches; then the groups each selective run ended with.
pub fn markdown(rows: &[Row], data: &Dataset, configs: &[TrainConfig]) -> String {
    let mut md = String::new();
    let seeds = rows.first().map_or(0, |r| r.seeds.len());
    let _ = writeln!(md, "# {}: STL, MTL and Selective Sharing\n", data.name);
    if let Some(cfg) = configs.first() {
        let _ = writeln!(
            md,
            "{} epochs, batch {}, SGD lr {} momentum {}, device {}, seeds {:?}; test metrics \
             of the best-validation epoch{}.\n",
            cfg.epochs,
            cfg.batch,
            cfg.lr,
            cfg.momentum,
            cfg.device,
            rows.first().map(|r| r.seeds.clone()).unwrap_or_default(),
            if seeds > 1 {
                ", mean ± std over seeds"
            } else {
                ""
            }
        );
        if let Some(sc) = configs.iter().find_map(|c| c.sharing.as_ref()) {
            let _ = writeln!(
                md,
                "Selective Sharing: TT rank {}, min_cluster_size {}, {:?} selection, merge \
                 {}, {} branch initialisation, sharing from epoch {}.\n",
                sc.tt_rank,
                sc.hdbscan.min_cluster_size,
                sc.hdbscan.selection,
                sc.merge.name(),
                if sc.independent_branches {
                    "independent"
                } else {
                    "identical"
                },
                sc.share_start
            );
        }
    }
    let tasks = rows
        .iter()
        .find_map(|r| r.task_acc.as_ref().map(|t| t.len()))
        .unwrap_or(0);
    let mut header = String::from("| model |");
    let mut rule = String::from("|---|");
    for t in 0..tasks {
        let _ = write!(header, " {t} |");
        rule.push_str("---:|");
    }
    header.push_str(" 10-way acc | # params | # branches | lock epoch | final # params |");
    rule.push_str("---:|---:|---:|---:|---:|");
    let _ = writeln!(md, "{header}\n{rule}");
    for r in rows {
        let _ = write!(md, "| {} |", r.label);
        for t in 0..tasks {
            let cell = r
                .task_acc
                .as_ref()
                .map_or("–".into(), |a| pm(a[t], 100.0, seeds));
            let _ = write!(md, " {cell} |");
        }
        let locks = lock_cells(&r.lock_epoch);
        let _ = writeln!(
            md,
            " {} | {} | {} | {} | {} |",
            pm(r.test_acc, 100.0, seeds),
            count(r.params),
            count(r.branches),
            locks.join(", "),
            count(r.final_params),
        );
    }
    let _ = writeln!(
        md,
        "\n![10-way accuracy and parameters per configuration, mean ± std]({TABLE_PNG})"
    );
    let _ = writeln!(
        md,
        "\n# params and # branches are those of the best-validation model (the one \
         measured); final # params is the model at the end of the run.\n\n\
         Tasks per branch in the best-validation model (per seed; the final grouping \
         after → where it differs):\n"
    );
    for r in rows.iter().filter(|r| r.label.starts_with("selective")) {
        for ((seed, best), last) in r.seeds.iter().zip(&r.task_groups).zip(&r.final_task_groups) {
            let best = best.as_deref().unwrap_or(&[]);
            let last = last.as_deref().unwrap_or(&[]);
            let after = if best == last {
                String::new()
            } else {
                format!(" → {last:?}")
            };
            let _ = writeln!(md, "- {} seed {seed}: {best:?}{after}", r.label);
        }
    }
    let stable: Vec<&Row> = rows
        .iter()
        .filter(|r| r.label.starts_with("selective") && r.final_groups_ari.is_some())
        .collect();
    if !stable.is_empty() {
        let _ = writeln!(
            md,
            "\nStability of the final groups across seeds (adjusted Rand index over \
             every pair of seeds; 1 = identical partitions, 0 = chance):\n"
        );
        for r in stable {
            let (mean, min) = r.final_groups_ari.expect("filtered");
            let _ = writeln!(md, "- {}: mean {mean:.3}, min {min:.3}", r.label);
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_the_number_when_seeds_agree_else_mean_and_std() {
        assert_eq!(count((10.0, 0.0)), "10");
        assert_eq!(count((3.3333, 1.5275)), "3.33 ± 1.53");
        assert_eq!(count((661930.0, 104431.2)), "661930 ± 104431");
    }
}
