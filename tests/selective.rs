//! Selective Sharing end to end on the CPU: merging keeps every task's outputs,
//! pruning shrinks the buffers to the parameter-count formula, training goes on,
//! and a selective run logs every decision.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::{Backend, OptimStep};
use sskernel::data::{self, DatasetName};
use sskernel::model::{Activations, Mode, Net, NetSpec};
use sskernel::sharing::criteria::Criterion;
use sskernel::sharing::merge;
use sskernel::sharing::selective::SharingConfig;
use sskernel::train::{self, Inputs, TrainConfig};

const N: usize = 32;

/// MTL net after a few training steps (so branches and heads differ), with a
/// batch of real digits loaded.
fn trained_net() -> (Net<Cpu>, Activations<Cpu>) {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let inputs = Inputs::new(&data.train);
    let mut net = Net::new(
        &Cpu,
        NetSpec::mnist(Mode::Mtl, 10),
        &mut ChaCha8Rng::seed_from_u64(5),
    );
    let mut act = Activations::new(&Cpu, &net.spec, N);
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    for k in 0..4 {
        let idx: Vec<usize> = (k * N..(k + 1) * N).collect();
        inputs.gather(&idx, 10, &mut images, &mut targets);
        Cpu.write(&mut act.x, &images);
        Cpu.write(&mut act.targets, &targets);
        net.train_step(&Cpu, &mut act, N, &step);
    }
    (net, act)
}

fn logits(net: &mut Net<Cpu>, act: &mut Activations<Cpu>) -> Vec<f32> {
    net.forward(&Cpu, act, N, false);
    Cpu.download(&act.logits)[..net.spec.tasks * N].to_vec()
}

#[test]
fn after_a_merge_every_task_computes_with_the_kept_branch_and_its_own_head() {
    let (mut net, mut act) = trained_net();
    // Groups {0, 3, 7} and {2, 5}; branch losses pick 3 and 2 as the kept ones.
    let mut loss = vec![1.0; 10];
    loss[3] = 0.1;
    loss[2] = 0.2;
    let groups: Vec<Vec<usize>> = vec![
        vec![0, 3, 7],
        vec![2, 5],
        vec![1],
        vec![4],
        vec![6],
        vec![8],
        vec![9],
    ];
    let plan = merge::plan(&groups, &loss, &net.task_branch);
    assert_eq!(plan.keep, vec![1, 2, 3, 4, 6, 8, 9]);

    // Expected: the unpruned net with each task's head reading the kept branch.
    let kept_of = |b: usize| match b {
        0 | 3 | 7 => 3,
        2 | 5 => 2,
        b => b,
    };
    net.task_branch = (0..10).map(kept_of).collect();
    let expected = logits(&mut net, &mut act);
    net.task_branch = (0..10).collect();
    let before = logits(&mut net, &mut act);
    assert_ne!(
        expected, before,
        "the merge must change some task's outputs"
    );

    net.prune(&Cpu, &plan.keep, plan.task_branch.clone());
    assert_eq!(
        logits(&mut net, &mut act),
        expected,
        "pruning changed the kept branches"
    );
    assert_eq!(net.branch_origin, vec![1, 2, 3, 4, 6, 8, 9]);

    // Parameters: trunk + branches × (640·100+100 + 100·50+50) + tasks × (50+1).
    let trunk = 520 + 40 + 20_040 + 80 + 410_240;
    assert_eq!(net.param_count(), trunk + 7 * (64_100 + 5_050) + 10 * 51);
    for p in net.params() {
        assert_eq!(
            Cpu.buf_len(&p.value),
            p.len(),
            "{} was not compacted",
            p.name
        );
        assert_eq!(
            Cpu.buf_len(&p.grad),
            p.len(),
            "{}'s gradient was not compacted",
            p.name
        );
        for s in &p.state {
            assert_eq!(
                Cpu.buf_len(s),
                p.len(),
                "{}'s momentum was not compacted",
                p.name
            );
        }
    }

    // Training goes on with the smaller net.
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    net.train_step(&Cpu, &mut act, N, &step);
    let loss: f32 = Cpu.download(&act.loss).iter().sum();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
}

#[test]
fn selective_nets_start_with_identical_branches_and_heads() {
    let net = Net::new(
        &Cpu,
        NetSpec::mnist(Mode::Selective, 10),
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    for p in net
        .params()
        .into_iter()
        .filter(|p| !p.name.starts_with("trunk"))
    {
        let row = p.len() / p.shape[0];
        let first = &p.value[..row];
        assert!(
            p.value.chunks(row).all(|r| r == first),
            "{} rows differ",
            p.name
        );
    }
    let mtl = Net::new(
        &Cpu,
        NetSpec::mnist(Mode::Mtl, 10),
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    let w = &mtl.params()[10];
    assert_ne!(
        w.value[..64_000],
        w.value[64_000..128_000],
        "MTL branches start independent"
    );
}

#[test]
fn a_selective_run_merges_logs_every_decision_and_reloads() {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        dataset: "mnist".into(),
        mode: Mode::Selective,
        epochs: 3,
        batch: 64,
        lr: 0.02,
        momentum: 0.5,
        seed: 0,
        max_steps: None,
        data_dir: None,
        out: dir.path().to_path_buf(),
        device: "cpu".into(),
        sharing: Some(SharingConfig::new(Criterion::Similarity)),
    };
    let summary = train::train(&Cpu, &cfg, &data).unwrap();
    assert!(
        summary.params < 1_122_930,
        "nothing merged: {} parameters",
        summary.params
    );
    assert!(summary.branches < 10);
    let groups = summary.task_groups.clone().unwrap();
    assert_eq!(groups.len(), summary.branches);
    assert_eq!(
        groups.concat().len(),
        10,
        "every task on exactly one branch: {groups:?}"
    );

    let decisions: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("grouping.json")).unwrap())
            .unwrap();
    assert_eq!(decisions.len(), 3, "one decision per epoch until locked");
    let first = &decisions[0];
    for key in [
        "distances",
        "mst",
        "condensed_tree",
        "labels",
        "groups",
        "merged",
        "task_branch",
    ] {
        assert!(!first[key].is_null(), "{key} missing from the decision");
    }
    assert_eq!(first["distances"].as_array().unwrap().len(), 10);
    assert_eq!(first["params_before"], 1_122_930);
    assert!(
        first["params_after"].as_u64().unwrap() < 1_122_930,
        "{first}"
    );

    // The checkpoint of the merged net re-evaluates to the logged accuracy.
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let (val, _) = train::evaluate_run(&Cpu, dir.path(), true).unwrap();
    assert_eq!(val.accuracy, last["val_acc"].as_f64().unwrap());
    assert_eq!(last["branches"], summary.branches);
}
