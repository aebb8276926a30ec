//! Heterogeneous problems end to end (issue 15): `mnist-attributes` learns every
//! task kind, branches of different kinds merge and keep training, the simulator
//! agrees with the CPU, and `train features` runs on user files through the CLI —
//! or, on a bad file, says which file and row and writes nothing.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::sim::Sim;
use sskernel::backend::OptimStep;
use sskernel::data::{attributes, HeteroData, TaskKind};
use sskernel::model::{Branched, HeteroActs, HeteroNet, HeteroSpec, Mode};
use sskernel::sharing::criteria::Criterion;
use sskernel::sharing::selective::SharingConfig;
use sskernel::train::hetero::{task_metric, train_hetero, Batcher, HeteroConfig, HeteroSummary};
use std::path::Path;
use std::process::Command;

/// A small net (the paper's widths train the same code, slower).
fn config(out: &Path, mode: Mode, epochs: usize, max_steps: Option<usize>) -> HeteroConfig {
    HeteroConfig {
        mode,
        only_task: None,
        epochs,
        batch: 100,
        lr: 0.002,
        seed: 3,
        max_steps,
        convs: None,
        shared: 128,
        branch_hidden: [48, 32],
        dropout: 0.2,
        out: out.to_path_buf(),
        device: "cpu".into(),
        sharing: None,
        checkpoints: Default::default(),
    }
}

/// What predicting the training mean would score on task t's test rows: the MAE
/// baseline a regression must beat.
fn mean_baseline_mae(data: &HeteroData, t: usize) -> f64 {
    let (mean, std) = data.train_moments(t);
    let truth: Vec<f32> = data.test.iter().map(|&r| data.target(r, t)).collect();
    task_metric(
        &TaskKind::Regression,
        &vec![0.0; truth.len()],
        &truth,
        (mean, std),
    )
}

#[test]
fn mnist_attributes_learns_every_task_kind() {
    let data = attributes::load().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s: HeteroSummary =
        train_hetero(&Cpu, &config(dir.path(), Mode::Mtl, 3, None), &data).unwrap();
    for file in [
        "config.json",
        "log.jsonl",
        "summary.json",
        "checkpoint.safetensors",
        "best.safetensors",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    assert_eq!(s.tasks, attributes::TASKS);
    // The grouping log names each branch's tasks with their kinds.
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["named_groups"][0],
        serde_json::json!(["digit (class (10))"])
    );
    assert_eq!(
        last["named_groups"][5],
        serde_json::json!(["ink-rank (rank)"])
    );
    let [digit, parity, ink, slant, loops, rank] = s.test[..] else {
        panic!("{:?}", s.test)
    };
    // Chance: 10 %, 50 %, the mean's MAE, 33 % (loops is 0 for 6 of 10 digits:
    // ≈ 60 % by the majority), 50 %.
    assert!(digit > 85.0, "digit {digit}");
    assert!(parity > 85.0, "parity {parity}");
    assert!(loops > 85.0, "loops {loops}");
    assert!(rank > 85.0, "ink rank {rank}");
    for (t, mae) in [(2, ink), (3, slant)] {
        let baseline = mean_baseline_mae(&data, t);
        assert!(
            mae < 0.6 * baseline,
            "{}: MAE {mae} vs the mean's {baseline}",
            s.tasks[t]
        );
    }
}

/// Branches of different kinds merge: after `prune` each task's head reads the kept
/// branch, and the pruned net computes exactly what the unpruned one computes with
/// its heads pointed at the kept branches (the same thing another way); then it
/// trains on and its loss falls.
#[test]
fn branches_of_different_kinds_merge_and_train_on() {
    let data = attributes::load().unwrap();
    let spec = HeteroSpec {
        input: 784,
        convs: None,
        shared: 64,
        branch_hidden: [32, 16],
        dropout: 0.2,
        branches: 6,
        tasks: data.tasks.iter().map(|t| t.kind).collect(),
        identical_branches: true,
    };
    // The step counter is the net's (its step state), continued across the calls.
    let step = OptimStep::Adam {
        lr: 0.002,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut batcher = Batcher::new(&data, (0..6).collect());
    let make = || {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut net = HeteroNet::new(&Cpu, spec.clone(), 9, &mut rng);
        net.branches.start_capture(&Cpu);
        (net, HeteroActs::new(&Cpu, &spec, 100))
    };
    let train = |net: &mut HeteroNet<_>,
                 act: &mut HeteroActs<_>,
                 b: &mut Batcher,
                 steps: std::ops::Range<u32>| {
        let mut losses = Vec::new();
        for t in steps {
            // Spread over the split (its rows are grouped by digit).
            let rows: Vec<usize> = (0..100)
                .map(|k| data.train[(k * 7919 + t as usize * 101) % data.train.len()])
                .collect();
            b.load(&Cpu, act, &rows);
            net.forward(&Cpu, act, 100, true);
            net.loss(&Cpu, act, 100);
            net.backward(&Cpu, act, 100);
            net.optim_step(&Cpu, &step);
            losses.push(act.loss.iter().map(|l| l[0] as f64).sum::<f64>());
        }
        losses
    };
    let logits = |net: &mut HeteroNet<_>, act: &mut HeteroActs<_>, b: &mut Batcher| {
        let rows: Vec<usize> = data.val[..100].to_vec();
        b.load(&Cpu, act, &rows);
        net.forward(&Cpu, act, 100, false);
        act.logits.clone()
    };
    let (mut pruned, mut act_p) = make();
    let (mut pointed, mut act_q) = make();
    train(&mut pruned, &mut act_p, &mut batcher, 0..5);
    train(&mut pointed, &mut act_q, &mut batcher, 0..5);
    // Keep branches 0 (digit, class), 2 (ink, regression), 4 (loops, class): parity
    // (binary) joins digit, slant (regression) and ink-rank (rank) join ink.
    pruned.prune(&Cpu, &[0, 2, 4], vec![0, 0, 1, 1, 2, 1]);
    pointed.branches.task_branch = vec![0, 0, 2, 2, 4, 2];
    assert_eq!(pruned.branches.count(), 3);
    let (a, b) = (
        logits(&mut pruned, &mut act_p, &mut batcher),
        logits(&mut pointed, &mut act_q, &mut batcher),
    );
    for t in 0..6 {
        let n = 100 * spec.tasks[t].outputs();
        assert_eq!(
            a[t][..n],
            b[t][..n],
            "task {} after the merge",
            data.tasks[t].name
        );
    }
    assert!(pruned.param_count() < pointed.param_count());
    let losses = train(&mut pruned, &mut act_p, &mut batcher, 5..40);
    assert!(losses.iter().all(|l| l.is_finite()));
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[25..]));
    assert!(last < 0.8 * first, "loss {first} → {last}");
}

/// The kernels (simulator) and the CPU make the same run: the same grouping
/// decisions and metrics within rounding after a few steps.
#[test]
fn simulator_matches_cpu_on_a_short_selective_run() {
    let data = attributes::load().unwrap();
    let run = |sim: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), Mode::Selective, 1, Some(3));
        cfg.shared = 32;
        cfg.branch_hidden = [16, 8];
        cfg.sharing = Some(SharingConfig::new(Criterion::Random));
        let s = if sim {
            train_hetero(&Sim::new().unwrap(), &cfg, &data).unwrap()
        } else {
            train_hetero(&Cpu, &cfg, &data).unwrap()
        };
        let grouping = std::fs::read_to_string(dir.path().join("grouping.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&grouping).unwrap();
        (s, v[0]["task_groups"].clone())
    };
    let (cpu, cpu_groups) = run(false);
    let (sim, sim_groups) = run(true);
    assert_eq!(cpu_groups, sim_groups);
    for (a, b) in cpu.test.iter().zip(&sim.test) {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "{:?} vs {:?}",
            cpu.test,
            sim.test
        );
    }
}

/// A float32 `[rows, cols]` .npy.
fn write_npy(path: &Path, rows: usize, cols: usize, data: &[f32]) {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = header.into_bytes();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(bytemuck::cast_slice(data));
    std::fs::write(path, bytes).unwrap();
}

/// `sskernel train features` on generated files whose targets are functions of
/// the features (so there is something to learn), with a missing value; then the
/// same with a CSV one row short: an error naming the file, and no run directory.
#[test]
fn train_features_through_the_cli_and_a_bad_csv_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (400, 6);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    write_npy(&dir.path().join("x.npy"), rows, cols, &x);
    let mut csv = String::from("style,signed,year,score\n");
    for r in 0..rows {
        let f = &x[r * cols..(r + 1) * cols];
        let style = ["ink", "oil", "tempera"][(f[0] * 1.5 + 1.5).clamp(0.0, 2.99) as usize];
        let year = if r % 17 == 5 {
            String::new()
        } else {
            format!("{:.1}", 1800.0 + 100.0 * f[1])
        };
        csv += &format!("{style},{},{year},{}\n", u8::from(f[2] > 0.0), f[3] + f[4]);
    }
    std::fs::write(dir.path().join("y.csv"), &csv).unwrap();
    let run = |targets: &str, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_sskernel"))
            .args([
                "train", "features", "--device", "cpu", "--mode", "mtl", "--epochs", "2",
            ])
            .args(["--shared", "32", "--hidden", "16,8", "--out"])
            .arg(out)
            .arg("--features")
            .arg(dir.path().join("x.npy"))
            .arg("--targets")
            .arg(dir.path().join(targets))
            .args(["--task", "style:class", "--task", "signed:binary"])
            .args(["--task", "year:regression", "--task", "score:rank"])
            .output()
            .unwrap()
    };
    let out = dir.path().join("run");
    let ok = run("y.csv", &out);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["tasks"],
        serde_json::json!(["style", "signed", "year", "score"])
    );
    assert_eq!(
        summary["kinds"][0],
        serde_json::json!({"class": {"classes": 3}})
    );

    let short: String = csv.lines().take(rows).collect::<Vec<_>>().join("\n") + "\n";
    std::fs::write(dir.path().join("short.csv"), short).unwrap();
    let bad_out = dir.path().join("bad-run");
    let bad = run("short.csv", &bad_out);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("short.csv") && err.contains("399") && err.contains("400"),
        "{err}"
    );
    assert!(!bad_out.exists(), "a failed load writes no run directory");
}
