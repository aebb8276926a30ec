//! The end-of-epoch Selective Sharing step (DESIGN.md §5): captured branch
//! gradients → batched TT-SVD descriptors → distances (both on the device,
//! `TtSvdOps::branch_distances`; sharing::ttsvd on the CPU) → HDBSCAN → criterion →
//! merge and prune → lock. Every decision is kept for `grouping.json`.

use super::criteria::{self, Criterion};
use super::hdbscan::HdbscanParams;
use super::merge::{self, MergePlan, MergeRule};
use crate::backend::{profile, Backend, TtSvd};
use crate::model::Branched;
use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Settings of Selective Sharing.
#[derive(Clone, Debug, Serialize)]
pub struct SharingConfig {
    pub criterion: Criterion,
    /// Maximum TT rank R of the descriptors.
    pub tt_rank: usize,
    pub hdbscan: HdbscanParams,
    /// τ of the variance criterion: the between-group share of variance to keep.
    pub variance_tau: f64,
    /// First epoch (1-based) at whose end the grouping runs.
    pub share_start: usize,
    /// Lock after this many consecutive epochs without a change.
    pub patience: usize,
    /// What the kept branch of a merged group holds.
    pub merge: MergeRule,
    /// Initialise every branch (and head) independently instead of from the same
    /// weights; the comparison behind the default is in README.md.
    pub independent_branches: bool,
}

impl SharingConfig {
    pub fn new(criterion: Criterion) -> Self {
        Self {
            criterion,
            tt_rank: 4,
            hdbscan: HdbscanParams::new(2),
            variance_tau: 0.5,
            share_start: 1,
            patience: 3,
            merge: MergeRule::LowestLoss,
            independent_branches: false,
        }
    }
}

/// One grouping decision, as logged. Branches are named by the task they were
/// created for (`Net::branch_origin`), which stays stable while merges renumber.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decision {
    pub epoch: usize,
    pub criterion: Criterion,
    /// The active branches before the decision.
    pub branches: Vec<usize>,
    /// Each active branch's training loss of the epoch per task it serves
    /// (`merge::branch_loss`), which picks the kept branch.
    pub branch_loss: Vec<f64>,
    /// `[branches, branches]` distances between unit-norm TT descriptors.
    pub distances: Vec<Vec<f64>>,
    /// HDBSCAN's labels per active branch (−1 noise); empty with < 2 branches.
    pub labels: Vec<i64>,
    /// MST of the mutual-reachability graph: (branch, branch, weight).
    pub mst: Vec<(usize, usize, f64)>,
    /// Condensed tree: (parent, child, lambda, size); points are the branch positions.
    /// (JSON writes an infinite lambda, of points at distance 0, as null.)
    #[serde(deserialize_with = "null_lambda_is_infinite")]
    pub condensed_tree: Vec<(usize, usize, f64, usize)>,
    /// The criterion's groups.
    pub groups: Vec<Vec<usize>>,
    /// Each merged group and the branch kept for it.
    pub merged: Vec<MergedGroup>,
    /// Task → branch after the decision.
    pub task_branch: Vec<usize>,
    /// The tasks served by each branch after the decision.
    pub task_groups: Vec<Vec<usize>>,
    pub params_before: usize,
    pub params_after: usize,
    /// Set when this decision locked the grouping, with the reason.
    pub locked: Option<String>,
    /// The whole step's wall time: the sum of `breakdown`.
    pub seconds: f64,
    /// Where `seconds` went.
    #[serde(default)]
    pub breakdown: StepTimes,
}

/// Where one sharing step's wall time went, in seconds (log.jsonl's
/// `sharing_breakdown`, `--profile`'s `sharing …` rows). Each part ends when the
/// device has finished it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// Waiting for the capture, and restarting it (zeroed in place) once read.
    pub capture: f64,
    /// TT-SVD, the descriptors' distances and the `[B, B]` copy to the host
    /// (`TtSvdOps::branch_distances`).
    pub distances: f64,
    /// HDBSCAN and the criterion on the host, and the merge plan.
    pub grouping: f64,
    /// `--merge mean-weights`, the pruning (compaction on the device) and the lock.
    pub merge: f64,
}

impl StepTimes {
    pub fn total(&self) -> f64 {
        self.capture + self.distances + self.grouping + self.merge
    }

    /// Adds each part to `--profile`'s table (nothing when profiling is off).
    fn profile(&self) {
        for (part, s) in [
            ("capture", self.capture),
            ("distances", self.distances),
            ("grouping", self.grouping),
            ("merge", self.merge),
        ] {
            profile::record(format!("sharing {part}"), "host wall time".into(), s * 1e3);
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MergedGroup {
    pub group: Vec<usize>,
    pub kept: usize,
}

type CondensedEdge = (usize, usize, f64, usize);

fn null_lambda_is_infinite<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<CondensedEdge>, D::Error> {
    let edges: Vec<(usize, usize, Option<f64>, usize)> = Deserialize::deserialize(d)?;
    Ok(edges
        .into_iter()
        .map(|(p, c, l, n)| (p, c, l.unwrap_or(f64::INFINITY), n))
        .collect())
}

/// What a checkpoint keeps of [`Sharing`] (the decisions are in grouping.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharingState {
    /// The random criterion's generator: ChaCha8 words drawn (a u128 in decimal).
    rng: String,
    unchanged_epochs: usize,
    lock_epoch: Option<usize>,
}

/// Selective Sharing across a run: the decisions so far and the lock.
pub struct Sharing {
    pub cfg: SharingConfig,
    rng: ChaCha8Rng,
    unchanged_epochs: usize,
    pub lock_epoch: Option<usize>,
    pub decisions: Vec<Decision>,
}

impl Sharing {
    /// Starts capturing on `net`.
    pub fn start<B: Backend>(
        cfg: SharingConfig,
        seed: u64,
        be: &B,
        net: &mut impl Branched<B>,
    ) -> Self {
        net.branches_mut().start_capture(be);
        Self {
            cfg,
            // Its own stream, so the random criterion does not disturb shuffling.
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5a4e),
            unchanged_epochs: 0,
            lock_epoch: None,
            decisions: Vec::new(),
        }
    }

    pub fn state(&self) -> SharingState {
        SharingState {
            rng: self.rng.get_word_pos().to_string(),
            unchanged_epochs: self.unchanged_epochs,
            lock_epoch: self.lock_epoch,
        }
    }

    /// Continues from a checkpoint's `state` and the decisions made before it.
    pub fn restore(&mut self, state: &SharingState, decisions: Vec<Decision>) -> Result<()> {
        let words: u128 = state
            .rng
            .parse()
            .map_err(|_| anyhow::anyhow!("sharing rng {:?} is not a number", state.rng))?;
        self.rng.set_word_pos(words);
        self.unchanged_epochs = state.unchanged_epochs;
        self.lock_epoch = state.lock_epoch;
        self.decisions = decisions;
        Ok(())
    }

    pub fn locked(&self) -> bool {
        self.lock_epoch.is_some()
    }

    /// Runs at the end of `epoch` with each task's summed training loss over the
    /// epoch's steps. Returns the decision when a grouping ran.
    pub fn end_epoch<B: Backend>(
        &mut self,
        be: &B,
        net: &mut impl Branched<B>,
        epoch: usize,
        task_loss: &[f64],
    ) -> Result<Option<&Decision>> {
        if self.locked() {
            return Ok(None);
        }
        let mut clock = Instant::now();
        let mut lap = || {
            let now = Instant::now();
            std::mem::replace(&mut clock, now).elapsed().as_secs_f64()
        };
        let Some(grads) = net.branches().capture() else {
            return Ok(None);
        };
        if epoch < self.cfg.share_start {
            net.branches_mut().clear_capture(be);
            return Ok(None);
        }
        be.synchronize();
        let capture = lap();
        let n = net.branches().count();
        let (out, inp) = net.branches().capture_shape();
        let tt = TtSvd {
            branches: n,
            out,
            inp,
            max_rank: self.cfg.tt_rank,
        };
        // On the device: only the [n, n] distances come to the host.
        let distances = be.branch_distances(&tt, grads);
        let distances_s = lap();
        net.branches_mut().clear_capture(be);
        let capture = capture + lap();
        crate::crash::point("sharing");
        let branch_loss = merge::branch_loss(task_loss, &net.branches().task_branch, n);
        let grouping = criteria::group(
            self.cfg.criterion,
            &distances,
            n,
            &self.cfg.hdbscan,
            self.cfg.variance_tau,
            &mut self.rng,
        )?;
        let plan: MergePlan =
            merge::plan(&grouping.groups, &branch_loss, &net.branches().task_branch);
        let grouping_s = lap();

        let origin = net.branches().branch_origin.clone();
        let params_before = net.param_count();
        if plan.changed() {
            if self.cfg.merge == MergeRule::MeanWeights {
                net.branches_mut().average(be, &plan.merged);
            }
            net.prune(be, &plan.keep, plan.task_branch.clone());
            be.synchronize();
            self.unchanged_epochs = 0;
        } else {
            self.unchanged_epochs += 1;
        }
        let locked = if merge::every_task_shares(&net.branches().task_branch) {
            Some("every task shares its branch with another task".to_string())
        } else if self.unchanged_epochs >= self.cfg.patience {
            Some(format!("{} epochs without a change", self.cfg.patience))
        } else {
            None
        };
        if locked.is_some() {
            self.lock_epoch = Some(epoch);
            net.branches_mut().stop_capture();
        }
        let breakdown = StepTimes {
            capture,
            distances: distances_s,
            grouping: grouping_s,
            merge: lap(),
        };
        breakdown.profile();

        let name = |b: usize| origin[b];
        let clustering = grouping.clustering.as_ref();
        self.decisions.push(Decision {
            epoch,
            criterion: self.cfg.criterion,
            branches: origin.clone(),
            branch_loss,
            distances: distances.chunks(n).map(|row| row.to_vec()).collect(),
            labels: clustering.map(|c| c.labels.clone()).unwrap_or_default(),
            mst: clustering.map(|c| c.mst.clone()).unwrap_or_default(),
            condensed_tree: clustering
                .map(|c| {
                    c.condensed_tree
                        .iter()
                        .map(|e| (e.parent, e.child, e.lambda, e.size))
                        .collect()
                })
                .unwrap_or_default(),
            groups: grouping
                .groups
                .iter()
                .map(|g| g.iter().map(|&b| name(b)).collect())
                .collect(),
            merged: plan
                .merged
                .iter()
                .map(|(g, kept)| MergedGroup {
                    group: g.iter().map(|&b| name(b)).collect(),
                    kept: name(*kept),
                })
                .collect(),
            task_branch: net
                .branches()
                .task_branch
                .iter()
                .map(|&b| net.branches().branch_origin[b])
                .collect(),
            task_groups: task_groups(&net.branches().task_branch, net.branches().count()),
            params_before,
            params_after: net.param_count(),
            locked,
            seconds: breakdown.total(),
            breakdown,
        });
        Ok(self.decisions.last())
    }
}

/// Tasks grouped by the branch they use, each group named by its tasks.
pub fn task_groups(task_branch: &[usize], branches: usize) -> Vec<Vec<usize>> {
    (0..branches)
        .map(|b| {
            (0..task_branch.len())
                .filter(|&t| task_branch[t] == b)
                .collect()
        })
        .collect()
}
