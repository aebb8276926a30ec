//! A diverging run stops at the step its loss stops being finite, says where and
//! which checkpoint is the last good one, and writes no checkpoint of the diverged
//! model.

use sskernel::backend::cpu::Cpu;
use sskernel::data::{self, DatasetName};
use sskernel::model::Mode;
use sskernel::train::{self, TrainConfig};

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
