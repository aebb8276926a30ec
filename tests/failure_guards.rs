//! A diverging run stops at the step its loss stops being finite, says where and
//! which checkpoint is the last good one, and writes no checkpoint of the diverged
//! model.

use sskernel::backend::cpu::Cpu;
use sskernel::data::{self, DatasetName};
use sskernel::model::Mode;
use sskernel::train::{self, TrainConfig};
#[path = "common/runs.rs"]
mod runs;

#[test]
fn a_diverging_run_stops_naming_epoch_step_and_the_last_good_checkpoint() {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // A short sane run leaves a checkpoint; a run with lr 1e6 into the same
    // directory diverges within a few steps and must leave that checkpoint alone.
    let mut cfg = TrainConfig {
        dataset: "mnist".into(),
        mode: Mode::Mtl,
        epochs: 1,
        batch: 256,
        lr: 0.02,
        momentum: 0.5,
        seed: 1,
        max_steps: Some(2),
        data_dir: None,
        out: out.clone(),
        device: "cpu".into(),
        sharing: None,
        checkpoints: Default::default(),
        eager: false,
    };
    train::train(&Cpu, &cfg, &data).unwrap();
    let checkpoint = out.join("checkpoint.safetensors");
    let good = std::fs::read(&checkpoint).unwrap();

    cfg.lr = 1e6;
    cfg.max_steps = None;
    let err = format!("{:#}", train::train(&Cpu, &cfg, &data).unwrap_err());
    assert!(
        err.contains("epoch 1, step") && err.contains("diverged"),
        "the error names epoch and step: {err}"
    );
    assert!(err.contains("no epoch finished"), "{err}");
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        good,
        "the diverged run must not overwrite the last good checkpoint"
    );
}

/// On a kernel device the losses stay in the device's log between reads (every
/// 250 ms, before checkpoints, at the epoch's end): a run diverging on `sim` still
/// stops with the step named and writes no checkpoint of the diverged model.
#[test]
fn a_run_diverging_on_sim_stops_naming_the_step_with_no_checkpoint() {
    let data = runs::tiny(96, 8, 8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = TrainConfig {
        dataset: "mnist".into(),
        mode: Mode::Mtl,
        epochs: 1,
        batch: 4,
        lr: 1e6,
        momentum: 0.5,
        seed: 1,
        max_steps: None,
        data_dir: None,
        out: out.clone(),
        device: "sim".into(),
        sharing: None,
        checkpoints: Default::default(),
        eager: false,
    };
    let sim = sskernel::backend::sim::Sim::with_seed(0);
    let err = format!("{:#}", train::train(&sim, &cfg, &data).unwrap_err());
    assert!(
        err.contains("epoch 1, step") && err.contains("diverged"),
        "the error names epoch and step: {err}"
    );
    for file in ["checkpoint.safetensors", "best.safetensors", "summary.json"] {
        assert!(!out.join(file).exists(), "{file} written by a diverged run");
    }
    assert_eq!(std::fs::read_to_string(out.join("log.jsonl")).unwrap(), "");
}

fn sskernel(shell_prefix: &str, args: &[&str]) -> std::process::Output {
    // Through bash, so a test can set a limit (`ulimit -f`) on the run alone.
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let cmd = format!(
        "{shell_prefix} exec '{}' {}",
        env!("CARGO_BIN_EXE_sskernel"),
        quoted.join(" ")
    );
    std::process::Command::new("bash")
        .args(["-c", &cmd])
        .output()
        .unwrap()
}

/// Two training steps of mnist into `out`, with `shell_prefix` before the command.
fn train_short(shell_prefix: &str, out: &std::path::Path) -> std::process::Output {
    let out = out.display().to_string();
    let args = [
        "train",
        "mnist",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--max-steps",
        "2",
    ];
    sskernel(shell_prefix, &[&args[..], &["--out", &out]].concat())
}

/// An output directory that cannot be made (here: below a regular file) stops the
/// run before any training with an error naming it.
#[test]
fn an_unwritable_output_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = file.join("run");
    let r = train_short("", &out);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("cannot create the run directory") && err.contains(&*out.to_string_lossy()),
        "{err}"
    );
}

/// A disk that fills while a checkpoint is written (a file-size limit smaller than
/// the checkpoint: `ulimit -f`, which binds root too) gives a clear error naming
/// the file, and the last good checkpoint — from an earlier run into the same
/// directory — stays byte for byte, with no temporary file left beside it.
#[test]
fn a_full_disk_leaves_the_last_good_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = train_short("", &out);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let checkpoint = out.join("checkpoint.safetensors");
    let good = std::fs::read(&checkpoint).unwrap();
    assert!(
        good.len() > 2 << 20,
        "the checkpoint must exceed the 1 MiB limit below"
    );

    let full = train_short("ulimit -f 1024;", &out);
    let err = String::from_utf8_lossy(&full.stderr);
    assert_eq!(
        full.status.code(),
        Some(1),
        "an error exit, not a signal: {err}"
    );
    assert!(
        err.contains("cannot write")
            && err.contains(".safetensors")
            && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(std::fs::read(&checkpoint).unwrap(), good);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// `sskernel eval` of a run whose config.json holds an absurd batch refuses it,
/// naming the file, instead of sizing the activations by it.
#[test]
fn eval_refuses_a_damaged_batch_in_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert!(train_short("", &out).status.success());
    let config = out.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let damaged = text.replacen("\"batch\": 64", "\"batch\": 1099511627776", 1);
    assert_ne!(text, damaged, "config.json holds \"batch\": 64");
    std::fs::write(&config, damaged).unwrap();
    let run = out.display().to_string();
    let r = sskernel("", &["eval", &run, "--device", "cpu"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("config.json") && err.contains("config.batch = 1099511627776"),
        "{err}"
    );
}
