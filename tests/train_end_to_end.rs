//! End-to-end runs of `train` on the embedded MNIST: outputs, determinism,
//! parameter counts, learning, checkpoint round trip, and the CLI's errors.

use sskernel::backend::cpu::Cpu;
use sskernel::data::{self, DatasetName};
use sskernel::model::Mode;
use sskernel::train::{self, TrainConfig};
use std::path::Path;
use std::process::Command;

fn config(mode: Mode, out: &Path, seed: u64, max_steps: usize, epochs: usize) -> TrainConfig {
    TrainConfig {
        dataset: "mnist".into(),
        mode,
        epochs,
        batch: 64,
        lr: 0.02,
        momentum: 0.5,
        seed,
        max_steps: Some(max_steps),
        data_dir: None,
        out: out.to_path_buf(),
        device: "cpu".into(),
        sharing: None,
    }
}

/// log.jsonl with the wall-clock fields removed.
fn log_without_timing(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let obj = v.as_object_mut().unwrap();
            obj.remove("seconds");
            obj.remove("images_per_s");
            v
        })
        .collect()
}

#[test]
fn mtl_run_writes_every_output_and_its_checkpoint_reevaluates_the_same() {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Batch 2000: four steps per 8000-image epoch; the second epoch is cut by max_steps.
    let mut cfg = config(Mode::Mtl, dir.path(), 7, 6, 2);
    cfg.batch = 2000;
    let summary = train::train(&Cpu, &cfg, &data).unwrap();
    assert_eq!(summary.params, 1_122_930);
    assert_eq!(summary.branches, 10);
    assert_eq!(summary.steps, 6);
    for file in [
        "config.json",
        "log.jsonl",
        "summary.md",
        "summary.json",
        "checkpoint.safetensors",
        "best.safetensors",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let log = log_without_timing(dir.path());
    assert_eq!(log.len(), 2, "the partial second epoch is logged too");
    for (i, record) in log.iter().enumerate() {
        assert_eq!(record["epoch"], i + 1);
        assert_eq!(record["params"], 1_122_930);
        assert_eq!(record["device"], "cpu");
        for key in ["train_loss", "val_acc", "test_acc"] {
            let v = record[key].as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
        }
        assert!(record["val_acc"].as_f64().unwrap() <= 1.0);
        assert_eq!(record["test_task_acc"].as_array().unwrap().len(), 10);
    }
    assert_eq!(log[1]["steps"], 6);
    // checkpoint.safetensors holds the model after the last epoch: re-evaluating
    // it gives that epoch's logged accuracies exactly.
    let (val, test) = train::evaluate_run(&Cpu, dir.path(), true).unwrap();
    assert_eq!(val.accuracy, log[1]["val_acc"].as_f64().unwrap());
    assert_eq!(test.accuracy, log[1]["test_acc"].as_f64().unwrap());
    // best.safetensors holds the model whose figures the summary reports.
    let (val, test) = train::evaluate_run(&Cpu, dir.path(), false).unwrap();
    assert_eq!(val.accuracy, summary.best_val_acc);
    assert_eq!(test.accuracy, summary.test_acc);
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("1122930") && md.contains("task 9"), "{md}");
}

#[test]
fn same_seed_gives_the_same_log_and_checkpoint_and_another_seed_does_not() {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (dir, seed) in dirs.iter().zip([3, 3, 4]) {
        train::train(&Cpu, &config(Mode::Mtl, dir.path(), seed, 12, 1), &data).unwrap();
    }
    assert_eq!(
        log_without_timing(dirs[0].path()),
        log_without_timing(dirs[1].path())
    );
    let ckpt =
        |d: &tempfile::TempDir| std::fs::read(d.path().join("checkpoint.safetensors")).unwrap();
    assert!(
        ckpt(&dirs[0]) == ckpt(&dirs[1]),
        "checkpoints differ for the same seed"
    );
    assert_ne!(
        log_without_timing(dirs[0].path()),
        log_without_timing(dirs[2].path())
    );
}

#[test]
fn stl_learns_mnist_in_two_hundred_steps() {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = train::train(&Cpu, &config(Mode::Stl, dir.path(), 0, 200, 2), &data).unwrap();
    assert_eq!(summary.params, 500_580);
    // Chance is 10%; a wrong gradient anywhere in the net stays far below this.
    assert!(
        summary.best_val_acc > 0.85,
        "val acc {} after 200 steps",
        summary.best_val_acc
    );
}

#[test]
fn mtl_learns_mnist_in_a_hundred_steps() {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = train::train(&Cpu, &config(Mode::Mtl, dir.path(), 0, 100, 1), &data).unwrap();
    assert!(
        summary.best_val_acc > 0.7,
        "val acc {} after 100 steps",
        summary.best_val_acc
    );
    let tasks = summary.test_task_acc.unwrap();
    assert!(
        tasks.iter().all(|&a| a > 0.85),
        "per-task accuracy {tasks:?}"
    );
}

fn sskernel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sskernel"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_trains_and_says_which_device_it_picked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = sskernel(&[
        "train",
        "mnist",
        "--mode",
        "stl",
        "--max-steps",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // "picked cpu (why)" here; "picked cuda:0 (…)" on a machine with a GPU.
    assert!(stderr.contains("--device auto: picked "), "{stderr}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("500580 trainable parameters"));
    assert!(out.join("checkpoint.safetensors").is_file());
}

#[test]
fn cli_refuses_devices_that_are_not_built_and_bad_flags_plainly() {
    for (args, expected) in [
        (
            vec!["train", "mnist", "--device", "cuda"],
            "no CUDA backend",
        ),
        (
            vec!["train", "mnist", "--batch", "0"],
            "--batch must be at least 1",
        ),
        (
            vec!["train", "mnist", "--data-dir", "/nonexistent/dir"],
            "/nonexistent/dir",
        ),
        (
            vec!["eval", "/nonexistent/run"],
            "/nonexistent/run/config.json",
        ),
    ] {
        let o = sskernel(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn cli_trains_on_the_kernel_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = sskernel(&[
        "train",
        "mnist",
        "--device",
        "sim",
        "--mode",
        "mtl",
        "--batch",
        "500",
        "--max-steps",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert!(log.contains(r#""device":"sim""#), "{log}");
}

#[test]
fn cli_clusters_a_npy_file_and_names_a_bad_one() {
    use sskernel::data::npy;
    let dir = tempfile::tempdir().unwrap();
    // Two tight groups of five points in 2-D and one far point.
    let mut points = Vec::new();
    for (cx, cy) in [(0.0, 0.0), (10.0, 10.0)] {
        for k in 0..5 {
            points.extend([cx + 0.01 * k as f64, cy - 0.02 * k as f64]);
        }
    }
    points.extend([50.0, -50.0]);
    let input = dir.path().join("points.npy");
    npy::write_f64_matrix(&input, &points, 11, 2).unwrap();
    let out = dir.path().join("clusters");
    let o = sskernel(&[
        "cluster",
        input.to_str().unwrap(),
        "--min-cluster-size",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let labels = npy::read_i64_vector(&out.join("labels.npy")).unwrap();
    assert_eq!(labels, vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1]);
    assert!(out.join("summary.json").is_file() && out.join("outlier_scores.npy").is_file());

    let bad = dir.path().join("bad.npy");
    std::fs::write(&bad, b"not a numpy file").unwrap();
    let o = sskernel(&[
        "cluster",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("bad.npy"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
