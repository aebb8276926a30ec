//! A progress bar on a terminal (stderr), plain lines otherwise.

use super::EpochRecord;
use crate::sharing::selective::Decision;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct EpochBar {
    bar: Option<ProgressBar>,
}

impl EpochBar {
    pub fn new(epoch: usize, epochs: usize, batches: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(batches as u64);
            let style = ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches, {per_sec}, loss {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{epoch}/{epochs}"));
            bar
        });
        Self { bar }
    }

    pub fn advance(&self, batch_loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{batch_loss:.4}"));
            bar.inc(1);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The one line printed per epoch.
pub fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    let tasks = r
        .test_task_acc
        .as_ref()
        .map(|t| {
            let mean = t.iter().sum::<f64>() / t.len() as f64;
            format!(", mean task acc {:.2}%", 100.0 * mean)
        })
        .unwrap_or_default();
    format!(
        "epoch {:>3}/{epochs}  loss {:.4}  val {:.2}%  test {:.2}%{tasks}  {:.1}s  {:.0} img/s",
        r.epoch,
        r.train_loss,
        100.0 * r.val_acc,
        100.0 * r.test_acc,
        r.seconds,
        r.images_per_s
    )
}

/// The line printed for a grouping decision.
pub fn decision_line(d: &Decision) -> String {
    let merged: Vec<String> = d
        .merged
        .iter()
        .map(|m| format!("{:?} → keep {}", m.group, m.kept))
        .collect();
    let what = if merged.is_empty() {
        "no merge".to_string()
    } else {
        merged.join(", ")
    };
    let lock = d
        .locked
        .as_ref()
        .map(|why| format!("; locked: {why}"))
        .unwrap_or_default();
    format!(
        "  sharing ({}): groups {:?}: {what}; params {} → {}{lock}",
        d.criterion.name(),
        d.groups,
        d.params_before,
        d.params_after
    )
}
