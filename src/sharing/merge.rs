//! Merge planning (DESIGN.md §5 step 6): in every group of two or more branches the
//! branch with the lowest training loss *per task it serves* is kept, the others are
//! pruned, and their tasks move to the kept branch. Pure: `Net::prune` (and, for
//! `--merge mean-weights`, `Net::average_branches`) carries the plan out.

use serde::Serialize;

/// What the kept branch of a merged group holds (the paper names both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MergeRule {
    /// The weights of the group's branch with the lowest mean loss per task.
    #[default]
    LowestLoss,
    /// The element-wise mean of the group's branches (weights and optimiser state),
    /// stored in the lowest-loss branch's slot.
    MeanWeights,
}

impl MergeRule {
    pub fn name(self) -> &'static str {
        match self {
            MergeRule::LowestLoss => "lowest-loss",
            MergeRule::MeanWeights => "mean-weights",
        }
    }
}

/// Each branch's training loss of the epoch per task it serves: the mean over its
/// tasks of `task_loss`. A sum would grow with the task count and so keep, in a
/// mixed group, the branch serving the fewest tasks. A branch serving no task
/// (none after a prune) gets +∞.
pub fn branch_loss(task_loss: &[f64], task_branch: &[usize], branches: usize) -> Vec<f64> {
    let mut sum = vec![0.0; branches];
    let mut tasks = vec![0usize; branches];
    for (&loss, &b) in task_loss.iter().zip(task_branch) {
        sum[b] += loss;
        tasks[b] += 1;
    }
    sum.iter()
        .zip(&tasks)
        .map(|(&s, &k)| if k == 0 { f64::INFINITY } else { s / k as f64 })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MergePlan {
    /// Old indices of the surviving branches, increasing.
    pub keep: Vec<usize>,
    /// New task→branch map (indices into `keep`).
    pub task_branch: Vec<usize>,
    /// For every merged group (≥ 2 branches): the group and its kept branch (old indices).
    pub merged: Vec<(Vec<usize>, usize)>,
}

impl MergePlan {
    /// True when some group merged.
    pub fn changed(&self) -> bool {
        !self.merged.is_empty()
    }
}

/// Plans the merge of `groups` (every branch exactly once) given each branch's
/// loss per task ([`branch_loss`]) and the current task→branch map. Ties in loss
/// keep the lower branch index.
pub fn plan(groups: &[Vec<usize>], branch_loss: &[f64], task_branch: &[usize]) -> MergePlan {
    let branches = branch_loss.len();
    let mut survivor: Vec<usize> = (0..branches).collect();
    let mut merged = Vec::new();
    for group in groups.iter().filter(|g| g.len() >= 2) {
        let kept = *group
            .iter()
            .min_by(|&&a, &&b| branch_loss[a].total_cmp(&branch_loss[b]).then(a.cmp(&b)))
            .expect("the group is not empty");
        for &b in group {
            survivor[b] = kept;
        }
        merged.push((group.clone(), kept));
    }
    let keep: Vec<usize> = (0..branches).filter(|&b| survivor[b] == b).collect();
    let new_index = |old: usize| {
        keep.binary_search(&survivor[old])
            .expect("survivors are kept")
    };
    MergePlan {
        task_branch: task_branch.iter().map(|&b| new_index(b)).collect(),
        keep,
        merged,
    }
}

/// DESIGN.md §5 step 7, first rule: every task shares its branch with another task.
pub fn every_task_shares(task_branch: &[usize]) -> bool {
    task_branch
        .iter()
        .all(|&b| task_branch.iter().filter(|&&o| o == b).count() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_lowest_loss_branch_of_each_group_and_renumbers() {
        // Five branches, one task each; groups {0, 3} and {1, 2, 4}.
        let loss = [0.5, 0.9, 0.2, 0.4, 0.3];
        let p = plan(&[vec![0, 3], vec![1, 2, 4]], &loss, &[0, 1, 2, 3, 4]);
        assert_eq!(p.keep, vec![2, 3]);
        assert_eq!(p.task_branch, vec![1, 0, 0, 1, 0]);
        assert_eq!(p.merged, vec![(vec![0, 3], 3), (vec![1, 2, 4], 2)]);
        assert!(p.changed());
    }

    #[test]
    fn singletons_change_nothing() {
        let p = plan(
            &[vec![0], vec![1], vec![2]],
            &[1.0, 1.0, 1.0],
            &[0, 1, 2, 2],
        );
        assert_eq!(p.keep, vec![0, 1, 2]);
        assert_eq!(p.task_branch, vec![0, 1, 2, 2]);
        assert!(!p.changed());
    }

    #[test]
    fn ties_keep_the_lower_index() {
        let p = plan(&[vec![1, 0]], &[0.5, 0.5], &[0, 1]);
        assert_eq!(p.keep, vec![0]);
        assert_eq!(p.task_branch, vec![0, 0]);
    }

    #[test]
    fn branch_loss_is_the_mean_over_the_tasks_served() {
        // Branch 0 serves tasks 0, 1, 2 (sum 6, mean 2); branch 1 serves task 3.
        let loss = branch_loss(&[1.0, 2.0, 3.0, 2.5], &[0, 0, 0, 1], 2);
        assert_eq!(loss, vec![2.0, 2.5]);
        // A group of the two keeps branch 0, which a summed loss would have lost.
        let p = plan(&[vec![0, 1]], &loss, &[0, 0, 0, 1]);
        assert_eq!(p.merged, vec![(vec![0, 1], 0)]);
    }

    #[test]
    fn lock_rule_needs_every_task_to_share() {
        assert!(every_task_shares(&[0, 0, 1, 1, 1]));
        assert!(!every_task_shares(&[0, 0, 1]));
    }
}
