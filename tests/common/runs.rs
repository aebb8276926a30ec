//! Shared by the tests that run the binary or train on a small dataset: the one
//! spawn of `sskernel`, the embedded MNIST cut small, and a run's JSON outputs
//! without the fields that time it (so two runs can be compared as values).
//! Included with `#[path = "common/runs.rs"] mod runs;`; each test file uses a part.
#![allow(dead_code)]

use sskernel::data::{self, DatasetName};
use std::path::Path;
use std::process::{Command, Output};

/// `sskernel ARGS`, waited for, its output captured.
pub fn sskernel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sskernel"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start sskernel {args:?}: {e}"))
}

/// The embedded MNIST cut to `train`/`val`/`test` images evenly spaced through each
/// split (which holds the digits in order, so every digit is there), for runs of a
/// few steps whose evaluation costs little.
pub fn tiny(train: usize, val: usize, test: usize) -> data::Dataset {
    let full = data::load(DatasetName::Mnist, None).unwrap();
    let take = |s: &data::Split, n: usize| {
        let picks: Vec<usize> = (0..n).map(|i| i * s.len() / n.max(1)).collect();
        data::Split {
            images: picks.iter().flat_map(|&i| s.image(i).to_vec()).collect(),
            labels: picks.iter().map(|&i| s.labels[i]).collect(),
            channels: s.channels,
            rows: s.rows,
            cols: s.cols,
        }
    };
    data::Dataset {
        train: take(&full.train, train),
        val: take(&full.val, val),
        test: take(&full.test, test),
        ..full
    }
}

/// The fields of a run's outputs that time it (log.jsonl, summary.json).
const TIMINGS: [&str; 7] = [
    "seconds",
    "images_per_s",
    "samples_per_s",
    "sharing_seconds",
    "sharing_breakdown",
    "breakdown",
    "mean_images_per_s",
];

/// A JSON file (an object or an array of objects) or a JSON-lines file, as a list
/// of objects without the fields that time the run.
pub fn untimed(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let values: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .collect(),
    };
    values
        .into_iter()
        .map(|mut v| {
            for t in TIMINGS {
                v.as_object_mut().unwrap().remove(t);
            }
            v
        })
        .collect()
}
