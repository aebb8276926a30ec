//! Selective Sharing end to end on the CPU: merging keeps every task's outputs,
//! pruning shrinks the buffers to the parameter-count formula, training goes on as
//! with the unpruned net, a selective run logs every decision (each checked against
//! the others and the log), and the end-of-epoch step as the loop runs it: the lock
//! rule (patience, its restart, every task sharing, --share-start, capture stopped)
//! and each criterion deciding from the distances it logs.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::{ops::*, OptimStep};
use sskernel::data::{self, DatasetName};
use sskernel::model::{Activations, Branched, Mode, Net, NetSpec};
use sskernel::sharing::criteria::{self, Criterion};
use sskernel::sharing::merge;
use sskernel::sharing::selective::{Decision, Sharing, SharingConfig};
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
    let plan = merge::plan(&groups, &loss, &net.branches.task_branch);
    assert_eq!(plan.keep, vec![1, 2, 3, 4, 6, 8, 9]);

    // Expected: the unpruned net with each task's head reading the kept branch.
    let kept_of = |b: usize| match b {
        0 | 3 | 7 => 3,
        2 | 5 => 2,
        b => b,
    };
    net.branches.task_branch = (0..10).map(kept_of).collect();
    let expected = logits(&mut net, &mut act);
    net.branches.task_branch = (0..10).collect();
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
    assert_eq!(net.branches.branch_origin, vec![1, 2, 3, 4, 6, 8, 9]);

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

    // Training goes on with the smaller net exactly as with the unpruned one whose
    // heads read the kept branches (its other branches, read by no head, get zero
    // gradients): the same step (weights, gradients, momentum) gives the same net.
    let (mut unpruned, mut act_u) = trained_net();
    unpruned.branches.task_branch = (0..10).map(kept_of).collect();
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    net.train_step(&Cpu, &mut act, N, &step);
    unpruned.train_step(&Cpu, &mut act_u, N, &step);
    let loss: Vec<f32> = Cpu.download(&act.loss);
    assert_eq!(loss, Cpu.download(&act_u.loss), "loss of the step");
    assert!(loss.iter().all(|l| l.is_finite() && *l > 0.0), "{loss:?}");
    let keep = &plan.keep;
    for (p, u) in net.params().iter().zip(unpruned.params()) {
        // Branch-batched tensors keep the rows `keep`; the others are whole.
        let expected: Vec<f32> = if p.name.starts_with("branches.") {
            let row = u.len() / 10;
            keep.iter()
                .flat_map(|&b| u.value[b * row..(b + 1) * row].iter().copied())
                .collect()
        } else {
            u.value.clone()
        };
        let num: f64 = p
            .value
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).powi(2) as f64)
            .sum();
        let den: f64 = expected.iter().map(|b| (b * b) as f64).sum();
        let err = (num / den.max(1e-300)).sqrt();
        assert!(
            p.value.len() == expected.len() && err <= 1e-6,
            "{} after a step: ‖pruned − unpruned‖/‖unpruned‖ = {err:e}",
            p.name
        );
    }
    let (a, b) = (
        logits(&mut net, &mut act),
        logits(&mut unpruned, &mut act_u),
    );
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2) as f64).sum();
    let den: f64 = b.iter().map(|y| (y * y) as f64).sum();
    assert!((num / den).sqrt() <= 1e-6, "logits after the step differ");
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

fn distinct(v: &[usize]) -> usize {
    v.iter().collect::<std::collections::BTreeSet<_>>().len()
}

/// Trainable parameters of the MNIST net with `branches` branches and ten heads.
fn params_with(branches: usize) -> usize {
    let trunk = 520 + 40 + 20_040 + 80 + 410_240;
    trunk + branches * (64_100 + 5_050) + 10 * 51
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// Checks one logged grouping decision of the similarity criterion against
/// DESIGN.md §5, each part against the others: distances between unit-norm
/// descriptors, labels, the MST of the mutual reachability, the condensed tree,
/// the groups (HDBSCAN's clusters, noise alone), the merges and the new task→branch
/// map (from `before`, by branch origin). Returns the new map.
fn check_decision(d: &serde_json::Value, before: &[usize]) -> Vec<usize> {
    let names = usizes(&d["branches"]);
    let n = names.len();
    assert!(n >= 2, "{d}");
    let mut active: Vec<usize> = before.to_vec();
    active.sort_unstable();
    active.dedup();
    assert_eq!(names, active, "the active branches");
    let dist: Vec<Vec<f64>> = d["distances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(dist.len(), n);
    for (a, row) in dist.iter().enumerate() {
        assert_eq!(row.len(), n);
        assert_eq!(row[a], 0.0);
        for (b, &v) in row.iter().enumerate() {
            assert!(
                v.is_finite() && (0.0..=2.0 + 1e-9).contains(&v),
                "d({a},{b}) = {v}"
            );
            assert!(
                (v - dist[b][a]).abs() <= 1e-12,
                "d not symmetric at ({a},{b})"
            );
        }
    }
    let labels: Vec<i64> = d["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(labels.len(), n, "{d}");
    assert!(labels.iter().all(|&l| l >= -1));
    // The MST spans the n points with n − 1 edges of mutual reachability ≥ d.
    let mst = d["mst"].as_array().unwrap();
    assert_eq!(mst.len(), n - 1, "MST edges");
    let mut component: Vec<usize> = (0..n).collect();
    let root = |c: &Vec<usize>, mut i: usize| {
        while c[i] != i {
            i = c[i];
        }
        i
    };
    for e in mst {
        let (a, b, w) = (
            e[0].as_u64().unwrap() as usize,
            e[1].as_u64().unwrap() as usize,
            e[2].as_f64().unwrap(),
        );
        assert!(
            a < n && b < n && w.is_finite() && w >= dist[a][b] - 1e-12,
            "{e}"
        );
        let (ra, rb) = (root(&component, a), root(&component, b));
        assert_ne!(ra, rb, "MST edge {e} closes a cycle");
        component[ra] = rb;
    }
    // Condensed tree: every point leaves some cluster exactly once.
    let tree = d["condensed_tree"].as_array().unwrap();
    let mut left = vec![0; n];
    for row in tree {
        let (child, size) = (row[1].as_u64().unwrap() as usize, row[3].as_u64().unwrap());
        if child < n {
            assert_eq!(size, 1, "{row}");
            left[child] += 1;
        }
    }
    assert_eq!(left, vec![1; n], "points in the condensed tree");
    // Groups: the clusters, then each noise point alone; every branch once.
    let groups: Vec<Vec<usize>> = d["groups"].as_array().unwrap().iter().map(usizes).collect();
    let mut all = groups.concat();
    all.sort_unstable();
    assert_eq!(all, names, "groups partition the branches");
    for g in &groups {
        let pos: Vec<usize> = g.iter().map(|b| names.binary_search(b).unwrap()).collect();
        let l = labels[pos[0]];
        assert!(
            pos.iter().all(|&p| labels[p] == l),
            "group {g:?} mixes labels"
        );
        assert!(l >= 0 || g.len() == 1, "noise grouped: {g:?}");
    }
    let clusters = labels.iter().max().map_or(0, |&m| (m + 1) as usize);
    let noise = labels.iter().filter(|&&l| l < 0).count();
    assert_eq!(groups.len(), clusters + noise);
    // Merges: exactly the groups of two or more, each keeping one of its branches;
    // their tasks move to it.
    let merged = d["merged"].as_array().unwrap();
    let big: Vec<&Vec<usize>> = groups.iter().filter(|g| g.len() >= 2).collect();
    assert_eq!(merged.len(), big.len(), "{d}");
    let mut expected = before.to_vec();
    for (m, g) in merged.iter().zip(big) {
        assert_eq!(&usizes(&m["group"]), g);
        let kept = m["kept"].as_u64().unwrap() as usize;
        assert!(g.contains(&kept), "kept {kept} not in {g:?}");
        for b in expected.iter_mut() {
            if g.contains(b) {
                *b = kept;
            }
        }
    }
    let after = usizes(&d["task_branch"]);
    assert_eq!(after, expected, "task → branch after the decision");
    // The tasks of each branch: the same map, branch by branch.
    let mut groups_after: Vec<Vec<usize>> = d["task_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(usizes)
        .collect();
    groups_after.sort();
    let mut from_map: Vec<Vec<usize>> = Vec::new();
    for b in after.iter().collect::<std::collections::BTreeSet<_>>() {
        from_map.push((0..after.len()).filter(|&t| after[t] == *b).collect());
    }
    from_map.sort();
    assert_eq!(groups_after, from_map, "task_groups of {d}");
    assert_eq!(d["params_after"], params_with(distinct(&after)), "{d}");
    after
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
        checkpoints: Default::default(),
        eager: false,
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
    let log: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 3);
    // One decision at the end of every epoch up to the one that locked, none after.
    let decided = summary.lock_epoch.unwrap_or(cfg.epochs);
    assert_eq!(
        decisions.len(),
        decided,
        "lock epoch {:?}",
        summary.lock_epoch
    );
    let (mut params, mut task_branch) = (1_122_930, (0..10).collect::<Vec<usize>>());
    for (k, d) in decisions.iter().enumerate() {
        let epoch = k + 1;
        assert_eq!(d["epoch"], epoch, "decisions in epoch order");
        assert_eq!(d["params_before"], params, "epoch {epoch}: {d}");
        task_branch = check_decision(d, &task_branch);
        params = d["params_after"].as_u64().unwrap() as usize;
        // The log's line of that epoch describes the net the decision left.
        assert_eq!(log[k]["params"], params, "epoch {epoch}");
        assert_eq!(log[k]["branches"], distinct(&task_branch), "epoch {epoch}");
        assert_eq!(
            d["locked"].is_null(),
            Some(epoch) != summary.lock_epoch,
            "{d}"
        );
    }
    for (k, line) in log.iter().enumerate() {
        let locked = summary.lock_epoch.is_some_and(|e| k + 1 >= e);
        assert_eq!(line["locked"], locked, "log line {}", k + 1);
    }
    assert!(
        decisions[0]["params_after"].as_u64().unwrap() < 1_122_930,
        "nothing merged at the end of epoch 1: {}",
        decisions[0]
    );
    // The summary: the model at the end, and the best-validation epoch's.
    assert_eq!(summary.final_params, params);
    let best = &log[summary.best_epoch - 1];
    assert_eq!(best["params"], summary.params);
    assert_eq!(best["branches"], summary.branches);

    // The checkpoint of the merged net re-evaluates to the logged accuracy.
    let last = log.last().unwrap();
    let (val, _) = train::evaluate_run(&Cpu, dir.path(), true).unwrap();
    assert_eq!(val.accuracy, last["val_acc"].as_f64().unwrap());
    assert_eq!(last["branches"], summary.final_branches);
}

// ---------------------------------------------------------------------------
// The end-of-epoch step as the training loop runs it: `Sharing::end_epoch` on a
// selective net after real training steps, with settings that make the outcome
// certain whatever the gradients say.

/// A selective net with Selective Sharing started, and the training split.
struct Shared {
    net: Net<Cpu>,
    act: Activations<Cpu>,
    sharing: Sharing,
    data: data::Dataset,
    batches: usize,
    /// Train task 8 on task 7's targets, and task 9 on their opposite.
    twins: bool,
}

impl Shared {
    fn new(cfg: SharingConfig) -> Self {
        let data = data::load(DatasetName::Mnist, None).unwrap();
        let mut net = Net::new(
            &Cpu,
            NetSpec::mnist(Mode::Selective, 10),
            &mut ChaCha8Rng::seed_from_u64(2),
        );
        let act = Activations::new(&Cpu, &net.spec, N);
        let sharing = Sharing::start(cfg, 0, &Cpu, &mut net);
        Self {
            net,
            act,
            sharing,
            data,
            batches: 0,
            twins: false,
        }
    }

    /// Two training steps on the next real digits, then the end of `epoch`.
    fn epoch(&mut self, epoch: usize) -> Option<Decision> {
        let inputs = Inputs::new(&self.data.train);
        let (mut images, mut targets) = (Vec::new(), Vec::new());
        let step = OptimStep::Sgd {
            lr: 0.02,
            momentum: 0.5,
        };
        let mut task_loss = vec![0.0f64; 10];
        for _ in 0..2 {
            let idx: Vec<usize> = (self.batches * N..(self.batches + 1) * N).collect();
            self.batches += 1;
            inputs.gather(&idx, 10, &mut images, &mut targets);
            if self.twins {
                for row in targets.chunks_mut(10) {
                    row[8] = row[7];
                    row[9] = 1.0 - row[7];
                }
            }
            Cpu.write(&mut self.act.x, &images);
            Cpu.write(&mut self.act.targets, &targets);
            self.net.train_step(&Cpu, &mut self.act, N, &step);
            for (sum, l) in task_loss.iter_mut().zip(Cpu.download(&self.act.loss)) {
                *sum += l as f64;
            }
        }
        self.sharing
            .end_epoch(&Cpu, &mut self.net, epoch, &task_loss)
            .unwrap()
            .cloned()
    }
}

/// More than the 10 branches: HDBSCAN finds no cluster, so no decision changes
/// anything, whatever the gradients.
fn never_merging() -> SharingConfig {
    let mut cfg = SharingConfig::new(Criterion::Similarity);
    cfg.hdbscan.min_cluster_size = 11;
    cfg
}

#[test]
fn the_lock_comes_after_patience_epochs_without_a_change_counted_from_share_start() {
    let mut cfg = never_merging();
    cfg.share_start = 2;
    cfg.patience = 3;
    let mut s = Shared::new(cfg);
    // Before --share-start: no decision (the epoch's capture is dropped).
    assert!(s.epoch(1).is_none());
    assert!(s.sharing.decisions.is_empty() && !s.sharing.locked());
    // Epochs 2, 3, 4 decide, change nothing, and the third of them locks.
    for epoch in 2..=4 {
        let d = s.epoch(epoch).expect("a decision from --share-start on");
        assert_eq!(d.epoch, epoch);
        assert!(d.labels.iter().all(|&l| l == -1), "{:?}", d.labels);
        assert!(d.merged.is_empty());
        assert_eq!((d.params_before, d.params_after), (1_122_930, 1_122_930));
        assert_eq!(d.task_branch, (0..10).collect::<Vec<_>>());
        if epoch < 4 {
            assert_eq!(d.locked, None, "epoch {epoch}");
            assert_eq!(s.sharing.lock_epoch, None);
        } else {
            let why = d.locked.expect("locked after 3 unchanged epochs");
            assert!(why.contains("3 epochs without a change"), "{why}");
        }
    }
    assert_eq!(s.sharing.lock_epoch, Some(4));
    // Locked: nothing is captured any more and no decision runs.
    assert!(s.net.branches.capture().is_none(), "still capturing");
    assert!(s.epoch(5).is_none() && s.epoch(6).is_none());
    assert_eq!(s.sharing.decisions.len(), 3);
    assert_eq!(s.net.spec.branches, 10);
}

#[test]
fn a_change_restarts_the_patience_count() {
    let mut cfg = never_merging();
    cfg.patience = 2;
    let mut s = Shared::new(cfg);
    // Tasks 0–6 on one branch, 7, 8 and 9 alone. Tasks 7 and 8 train on the same
    // targets, so their branches, identical at the start, stay identical; task 9 on
    // the opposite ones, so its branch is far from theirs.
    s.net
        .prune(&Cpu, &[0, 7, 8, 9], vec![0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
    s.twins = true;
    let d = s.epoch(1).unwrap();
    assert!(d.merged.is_empty() && d.locked.is_none(), "{d:?}");
    // Epoch 2 changes the grouping without every task sharing: variance from
    // singletons with τ = 1 − 1e-9 merges the pair at distance ≈ 0, and nothing
    // that far from it.
    s.sharing.cfg.criterion = Criterion::Variance;
    s.sharing.cfg.variance_tau = 1.0 - 1e-9;
    let d = s.epoch(2).unwrap();
    assert_eq!(d.merged.len(), 1, "{d:?}");
    let group = &d.merged[0].group;
    assert!(
        group.contains(&7) && group.contains(&8) && !group.contains(&9),
        "{d:?}"
    );
    assert_eq!(d.locked, None, "task 9 still has a branch of its own");
    assert!(!merge::every_task_shares(&s.net.branches.task_branch));
    // Unchanged again: without the restart, epoch 3 would be the second unchanged
    // epoch and lock; with it, epoch 4 locks.
    s.sharing.cfg.criterion = Criterion::Similarity;
    assert_eq!(s.epoch(3).unwrap().locked, None);
    let why = s.epoch(4).unwrap().locked.expect("locked at epoch 4");
    assert!(why.contains("2 epochs without a change"), "{why}");
    assert_eq!(s.sharing.lock_epoch, Some(4));
}

#[test]
fn when_every_task_shares_its_branch_the_grouping_locks_at_once() {
    // Variance with τ = 0: Ward merges every group into one.
    let mut cfg = SharingConfig::new(Criterion::Variance);
    cfg.variance_tau = 0.0;
    let mut s = Shared::new(cfg);
    let d = s.epoch(1).unwrap();
    assert_eq!(d.groups, vec![(0..10).collect::<Vec<_>>()]);
    assert_eq!(d.merged.len(), 1);
    let kept = d.merged[0].kept;
    assert_eq!(d.task_branch, vec![kept; 10]);
    let why = d.locked.expect("every task shares its branch");
    assert!(why.contains("every task shares"), "{why}");
    assert_eq!(s.sharing.lock_epoch, Some(1));
    assert_eq!(s.net.spec.branches, 1);
    assert_eq!(s.net.branches.branch_origin, vec![kept]);
    assert_eq!(s.net.param_count(), params_with(1));
    assert_eq!(d.params_after, params_with(1));
    assert!(s.net.branches.capture().is_none(), "still capturing");
    assert!(s.epoch(2).is_none());
}

/// Each criterion inside a real end-of-epoch step: the decision's groups are what
/// the criterion makes of the decision's own distances, and the net is pruned to
/// them (branch count, parameters, every task on its group's kept branch).
#[test]
fn each_criterion_decides_from_the_logged_distances_and_the_net_follows() {
    for criterion in [
        Criterion::Similarity,
        Criterion::Dissimilarity,
        Criterion::Variance,
        Criterion::Random,
    ] {
        let cfg = SharingConfig::new(criterion);
        let mut s = Shared::new(cfg.clone());
        let d = s.epoch(1).unwrap();
        assert_eq!(d.criterion, criterion);
        assert_eq!(d.branches, (0..10).collect::<Vec<_>>());
        let n = d.distances.len();
        assert_eq!(n, 10);
        let flat: Vec<f64> = d.distances.concat();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let again = criteria::group(
            criterion,
            &flat,
            n,
            &cfg.hdbscan,
            cfg.variance_tau,
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            d.labels,
            again.clustering.as_ref().unwrap().labels,
            "{criterion:?}: labels (on d' for dissimilarity)"
        );
        let mut groups = d.groups.clone();
        groups.sort();
        let mut all = groups.concat();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..10).collect::<Vec<_>>(),
            "{criterion:?}: {groups:?}"
        );
        if criterion == Criterion::Random {
            // k = the number of similarity clusters of these distances.
            let similar =
                criteria::group(Criterion::Similarity, &flat, n, &cfg.hdbscan, 0.5, &mut rng)
                    .unwrap();
            let k = similar.groups.iter().filter(|g| g.len() >= 2).count();
            let most = if k == 0 { n } else { k };
            assert!(
                groups.len() <= most,
                "random: {} groups for k = {k}",
                groups.len()
            );
        } else {
            let mut expected = again.groups.clone();
            expected.sort();
            assert_eq!(groups, expected, "{criterion:?}");
        }
        // The net after the decision.
        assert_eq!(s.net.spec.branches, groups.len(), "{criterion:?}");
        assert_eq!(s.net.param_count(), params_with(groups.len()));
        assert_eq!(d.params_after, s.net.param_count());
        for g in &groups {
            let kept: Vec<usize> = g.iter().map(|&t| d.task_branch[t]).collect();
            assert!(
                kept.iter().all(|&b| b == kept[0] && g.contains(&b)),
                "{criterion:?}: tasks of {g:?} on branches {kept:?}"
            );
            let b = s.net.branches.task_branch[g[0]];
            assert!(g.iter().all(|&t| s.net.branches.task_branch[t] == b));
            assert_eq!(s.net.branches.branch_origin[b], kept[0]);
        }
    }
}
