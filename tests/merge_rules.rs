//! The merge rules inside a real `end_epoch`, checked against the weights read
//! before the decision: `lowest-loss` keeps the branch with the lowest mean loss
//! per task unchanged, `mean-weights` stores the element-wise mean of the group
//! (weights and momentum); `--selection leaf` reaches the grouping.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sskernel::backend::cpu::Cpu;
use sskernel::backend::{ops::*, OptimStep};
use sskernel::data::{self, DatasetName};
use sskernel::model::Branched;
use sskernel::model::{Activations, Mode, Net, NetSpec};
use sskernel::sharing::criteria::{self, Criterion};
use sskernel::sharing::hdbscan::{hdbscan_precomputed, Selection};
use sskernel::sharing::merge::MergeRule;
use sskernel::sharing::selective::{Sharing, SharingConfig};
use sskernel::train::Inputs;

const BATCH: usize = 32;
const BRANCH_PARAMS: [&str; 4] = [
    "branches.fc1.weight",
    "branches.fc1.bias",
    "branches.fc2.weight",
    "branches.fc2.bias",
];

/// A selective net after three training steps with the capture on, its sharing
/// state, and each task's summed loss over those steps.
fn trained(cfg: SharingConfig) -> (Net<Cpu>, Sharing, Vec<f64>) {
    let data = data::load(DatasetName::Mnist, None).unwrap();
    let inputs = Inputs::new(&data.train);
    let mut net = Net::new(
        &Cpu,
        NetSpec::mnist(Mode::Selective, 10),
        &mut ChaCha8Rng::seed_from_u64(9),
    );
    let sharing = Sharing::start(cfg, 9, &Cpu, &mut net);
    let mut act = Activations::new(&Cpu, &net.spec, BATCH);
    let step = OptimStep::Sgd {
        lr: 0.02,
        momentum: 0.5,
    };
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    let mut task_loss = vec![0.0; 10];
    for k in 0..3 {
        // Strided through the split, which is ordered by digit.
        let idx: Vec<usize> = (0..BATCH)
            .map(|i| (k * BATCH + i) * 37 % inputs.len())
            .collect();
        inputs.gather(&idx, 10, &mut images, &mut targets);
        Cpu.write(&mut act.x, &images);
        Cpu.write(&mut act.targets, &targets);
        net.train_step(&Cpu, &mut act, BATCH, &step);
        for (sum, l) in task_loss.iter_mut().zip(Cpu.download(&act.loss)) {
            *sum += l as f64;
        }
    }
    (net, sharing, task_loss)
}

/// `(value, momentum)` of a parameter, as `[branches][row]`.
fn rows(net: &Net<Cpu>, name: &str) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let p = net.params().into_iter().find(|p| p.name == name).unwrap();
    let row = p.len() / p.shape[0];
    let split = |buf: &Vec<f32>| buf[..p.len()].chunks(row).map(<[f32]>::to_vec).collect();
    (split(&p.value), split(&p.state[0]))
}

/// Variance with τ = 0 merges every branch into one group.
fn merge_all(rule: MergeRule) -> SharingConfig {
    let mut cfg = SharingConfig::new(Criterion::Variance);
    cfg.variance_tau = 0.0;
    cfg.merge = rule;
    cfg
}

#[test]
fn lowest_loss_keeps_the_best_branch_per_task_unchanged() {
    let (mut net, mut sharing, task_loss) = trained(merge_all(MergeRule::LowestLoss));
    let before: Vec<_> = BRANCH_PARAMS.iter().map(|n| rows(&net, n)).collect();
    // One task per branch: the kept branch is the task with the lowest loss.
    let best = (0..10)
        .min_by(|&a, &b| task_loss[a].total_cmp(&task_loss[b]))
        .unwrap();
    let d = sharing
        .end_epoch(&Cpu, &mut net, 1, &task_loss)
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(d.groups, vec![(0..10).collect::<Vec<_>>()]);
    assert_eq!(d.merged[0].kept, best);
    assert_eq!(net.spec.branches, 1);
    for (name, (value, momentum)) in BRANCH_PARAMS.iter().zip(&before) {
        let (after, after_m) = rows(&net, name);
        assert_eq!(after[0], value[best], "{name}");
        assert_eq!(after_m[0], momentum[best], "{name} momentum");
    }
}

#[test]
fn mean_weights_stores_the_groups_elementwise_mean() {
    let (mut net, mut sharing, task_loss) = trained(merge_all(MergeRule::MeanWeights));
    let before: Vec<_> = BRANCH_PARAMS.iter().map(|n| rows(&net, n)).collect();
    sharing.end_epoch(&Cpu, &mut net, 1, &task_loss).unwrap();
    assert_eq!(net.spec.branches, 1);
    let mean = |rows: &[Vec<f32>]| -> Vec<f32> {
        (0..rows[0].len())
            .map(|i| (rows.iter().map(|r| r[i] as f64).sum::<f64>() / rows.len() as f64) as f32)
            .collect()
    };
    for (name, (value, momentum)) in BRANCH_PARAMS.iter().zip(&before) {
        // The branches started identical and saw different targets: they differ.
        assert_ne!(value[0], value[1], "{name}");
        let (after, after_m) = rows(&net, name);
        assert_eq!(after[0], mean(value), "{name}");
        assert_eq!(after_m[0], mean(momentum), "{name} momentum");
    }
}

/// Ten branches on a line: two tight pairs close together, then a far group. Excess
/// of mass and leaf selection disagree on them.
fn nested_distances() -> Vec<f64> {
    let x = [0.0, 0.05, 0.5, 0.55, 1.0, 1.05, 9.0, 9.1, 9.2, 9.3];
    x.iter()
        .flat_map(|a| x.iter().map(move |b| f64::abs(a - b)))
        .collect()
}

#[test]
fn leaf_selection_reaches_the_grouping() {
    let dist = nested_distances();
    let mut params = SharingConfig::new(Criterion::Similarity).hdbscan;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let eom = criteria::group(Criterion::Similarity, &dist, 10, &params, 0.5, &mut rng).unwrap();
    params.selection = Selection::Leaf;
    let leaf = criteria::group(Criterion::Similarity, &dist, 10, &params, 0.5, &mut rng).unwrap();
    // eom: {0..5}, {6..9}; leaf: {6..9} and the tight pairs inside {0..5}.
    assert_ne!(eom.groups, leaf.groups);
    let direct = hdbscan_precomputed(&dist, 10, &params).unwrap();
    assert_eq!(leaf.clustering.unwrap().labels, direct.labels);
}
