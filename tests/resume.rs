//! `train --resume`: a run killed with SIGKILL at 20 points — mid-step, mid-write of
//! a checkpoint or log, mid-sharing-step, and at random moments — and resumed each
//! time ends with the same checkpoint (byte for byte), best model and records as
//! an uninterrupted run; no kill leaves a partial checkpoint. Also: Ctrl-C
//! checkpoints and says how to resume, and a resume with other settings is refused.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
#[path = "common/runs.rs"]
mod runs;
use runs::untimed;

/// A selective run of 3 epochs on the embedded MNIST (125 steps each), with a
/// checkpoint every 7 steps; the random criterion groups at the end of epoch 1.
const RUN: [&str; 12] = [
    "train",
    "mnist",
    "--device",
    "cpu",
    "--mode",
    "selective",
    "--criterion",
    "random",
    "--epochs",
    "3",
    "--checkpoint-every",
    "7",
];

fn sskernel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sskernel"));
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// The run's arguments with `--out DIR` (fresh) or `--resume DIR`.
fn run_args(dir: &Path, resume: bool) -> Vec<String> {
    let mut args: Vec<String> = RUN.iter().map(|s| s.to_string()).collect();
    args.push(if resume { "--resume" } else { "--out" }.into());
    args.push(dir.display().to_string());
    args
}

/// A checkpoint, when there is one, is whole: a safetensors file with its
/// metadata and its training position.
fn assert_whole_checkpoint(dir: &Path, after: &str) {
    let path = dir.join("checkpoint.safetensors");
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{after}: the checkpoint is damaged: {e}"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let about = &meta.metadata().as_ref().unwrap()["sskernel"];
    assert!(
        about.contains("\"resume\""),
        "{after}: no position in {about}"
    );
}

fn killed(out: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9)
}

#[test]
fn a_run_killed_at_20_points_and_resumed_ends_as_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, resumed) = (tmp.path().join("whole"), tmp.path().join("resumed"));
    let started = Instant::now();
    let out = sskernel().args(run_args(&whole, false)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_time = started.elapsed();

    // The kinds of kill, in an order that reaches the sharing step (end of epoch
    // 1, before the grouping locks) while the run is still in epoch 1.
    let kinds = [
        "step", "write", "sharing", "step", "sharing", "random", "write", "step", "random",
        "write", "step", "random", "step", "write", "random", "step", "write", "random", "step",
        "random",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    for (i, kind) in kinds.iter().enumerate() {
        let mut cmd = sskernel();
        cmd.args(run_args(&resumed, i > 0));
        let out = if *kind == "random" {
            // SIGKILL from outside after up to 1/30 of a whole run.
            let mut child = cmd.spawn().unwrap();
            let wait = run_time.mul_f64(rng.random_range(0.0..1.0 / 30.0));
            std::thread::sleep(wait.max(Duration::from_millis(20)));
            child.kill().unwrap();
            child.wait_with_output().unwrap()
        } else {
            let n = match *kind {
                "step" => rng.random_range(1..=9),
                "write" => rng.random_range(1..=4),
                _ => 1,
            };
            cmd.env("SSKERNEL_CRASH_AT", format!("{kind}:{n}"));
            cmd.output().unwrap()
        };
        let what = format!("kill {} ({kind})", i + 1);
        assert!(
            killed(&out),
            "{what}: the run was not killed: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_whole_checkpoint(&resumed, &what);
    }
    let out = sskernel().args(run_args(&resumed, true)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let read = |dir: &Path, f: &str| std::fs::read(dir.join(f)).unwrap();
    for file in ["checkpoint.safetensors", "best.safetensors"] {
        assert!(read(&whole, file) == read(&resumed, file), "{file} differs");
    }
    for file in ["log.jsonl", "grouping.json", "summary.json"] {
        assert_eq!(
            untimed(&whole.join(file)),
            untimed(&resumed.join(file)),
            "{file}"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(&resumed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn ctrl_c_checkpoints_and_says_how_to_resume_and_other_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let child = sskernel().args(run_args(&dir, false)).spawn().unwrap();
    // Wait for the first checkpoint (step 7), then interrupt.
    let checkpoint = dir.join("checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sends SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted in epoch 1"), "{stderr}");
    assert!(
        stderr.contains(&format!("--resume {}", dir.display())),
        "{stderr}"
    );
    assert!(
        !stderr.contains("--out"),
        "the resume command drops --out: {stderr}"
    );
    assert_whole_checkpoint(&dir, "SIGINT");

    // Another seed and learning rate: refused, both named, the run untouched.
    let before = std::fs::read(&checkpoint).unwrap();
    let mut args = run_args(&dir, true);
    args.extend(["--seed", "1", "--lr", "0.05"].map(String::from));
    let out = sskernel().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("config.seed was 0, now 1") && stderr.contains("config.lr was 0.0"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before);

    // A directory that holds no run: a clear error naming it.
    let none = tmp.path().join("none");
    let out = sskernel().args(run_args(&none, true)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot resume") && stderr.contains("none"),
        "{stderr}"
    );
}

/// The heterogeneous trainer resumes the same way: a selective run stopped after
/// epoch 1 and resumed to epoch 3 ends as a run of 3 epochs (checkpoints byte for
/// byte; the optimiser is Adam, whose step count and dropout masks must go on).
#[test]
fn a_heterogeneous_run_resumed_after_an_epoch_ends_as_an_uninterrupted_run() {
    use sskernel::backend::cpu::Cpu;
    use sskernel::data::attributes;
    use sskernel::model::Mode;
    use sskernel::run::Checkpointing;
    use sskernel::sharing::criteria::Criterion;
    use sskernel::sharing::selective::SharingConfig;
    use sskernel::train::hetero::{train_hetero, HeteroConfig};

    let data = attributes::load().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (whole, resumed) = (tmp.path().join("whole"), tmp.path().join("resumed"));
    let config = |out: &Path, epochs: usize, resume: bool| HeteroConfig {
        mode: Mode::Selective,
        only_task: None,
        epochs,
        batch: 100,
        lr: 0.002,
        seed: 5,
        max_steps: None,
        convs: None,
        shared: 64,
        branch_hidden: [32, 16],
        dropout: 0.2,
        out: out.to_path_buf(),
        device: "cpu".into(),
        sharing: Some(SharingConfig::new(Criterion::Variance)),
        checkpoints: Checkpointing {
            every: Some(30),
            resume,
        },
    };
    train_hetero(&Cpu, &config(&whole, 3, false), &data).unwrap();
    train_hetero(&Cpu, &config(&resumed, 1, false), &data).unwrap();
    train_hetero(&Cpu, &config(&resumed, 3, true), &data).unwrap();
    let read = |dir: &Path, f: &str| std::fs::read(dir.join(f)).unwrap();
    for file in ["checkpoint.safetensors", "best.safetensors"] {
        assert!(read(&whole, file) == read(&resumed, file), "{file} differs");
    }
    for file in ["log.jsonl", "grouping.json", "summary.json"] {
        assert_eq!(
            untimed(&whole.join(file)),
            untimed(&resumed.join(file)),
            "{file}"
        );
    }
}
