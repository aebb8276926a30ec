//! The per-task branches every multi-task net here shares the shape of: two hidden
//! linear layers batched across branches (`[branches, out, in]`), the task → branch
//! map the heads read through, and Selective Sharing's state on them — the capture
//! of the first layer's gradient, merging and pruning (DESIGN.md §5).

use super::{Layer, Param};
use crate::backend::Backend;
use rand_chacha::ChaCha8Rng;

pub struct Branches<B: Backend> {
    /// `[branches, hidden1, input]`: its gradient is Selective Sharing's signal.
    pub fc1: Layer<B>,
    /// `[branches, hidden2, hidden1]`.
    pub fc2: Layer<B>,
    /// Head t reads the hidden layer of branch `task_branch[t]`.
    pub task_branch: Vec<usize>,
    /// The task each branch was created for: a stable name for a branch in logs,
    /// while merges renumber the branches.
    pub branch_origin: Vec<usize>,
    /// Σ over the epoch's steps of ∂L/∂W of fc1, `[branches, hidden1, input]`,
    /// while Selective Sharing is capturing.
    capture: Option<B::Buf>,
}

impl<B: Backend> Branches<B> {
    /// `count` branches of `input → hidden[0] → hidden[1]`, task t on branch
    /// `t % count`; `identical` starts every branch from branch 0's weights.
    pub fn new(
        be: &B,
        count: usize,
        tasks: usize,
        (input, hidden): (usize, [usize; 2]),
        identical: bool,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let mut fc1 = Layer::linear(be, "branches.fc1", count, input, hidden[0], rng);
        let mut fc2 = Layer::linear(be, "branches.fc2", count, hidden[0], hidden[1], rng);
        if identical {
            for p in [&mut fc1.w, &mut fc1.b, &mut fc2.w, &mut fc2.b] {
                p.copy_first_branch(be);
            }
        }
        Self {
            fc1,
            fc2,
            task_branch: (0..tasks).map(|t| t % count).collect(),
            branch_origin: (0..count).collect(),
            capture: None,
        }
    }

    pub fn count(&self) -> usize {
        self.branch_origin.len()
    }

    /// `[hidden1, input]`: the shape of one branch's captured gradient.
    pub fn capture_shape(&self) -> (usize, usize) {
        let s = &self.fc1.w.shape;
        (s[1], s[2])
    }

    /// Starts (or restarts) accumulating fc1's gradients.
    pub fn start_capture(&mut self, be: &B) {
        self.capture = Some(be.zeros(self.fc1.w.len()));
    }

    /// Stops capturing for good (the grouping is locked).
    pub fn stop_capture(&mut self) {
        self.capture = None;
    }

    /// The capture so far (the sharing step, checkpoints), `fc1.w.len()` values at
    /// the front.
    pub fn capture(&self) -> Option<&B::Buf> {
        self.capture.as_ref()
    }

    /// A resumed run's capture (`[branches, hidden1, input]`), or none.
    pub fn set_capture(&mut self, capture: Option<B::Buf>) {
        self.capture = capture;
    }

    /// Adds this step's fc1 gradient to the capture, if capturing: called by the
    /// backward the moment the gradient exists (never by an evaluation).
    pub fn capture_step(&mut self, be: &B) {
        if let Some(capture) = &mut self.capture {
            be.axpy(1.0, &self.fc1.w.grad, capture, self.fc1.w.len());
        }
    }

    /// Restarts the capture from zero in place, if capturing: the buffer stays where
    /// the recorded step program's accumulation points (the sharing step reads the
    /// capture, then clears it).
    pub fn clear_capture(&mut self, be: &B) {
        let len = self.fc1.w.len();
        if let Some(capture) = &mut self.capture {
            be.write(capture, &vec![0.0; len]);
        }
    }

    /// Merges branches: keeps the branches `keep` (strictly increasing old indices)
    /// and points task t at new branch `task_branch[t]`. Every `[branches, …]`
    /// buffer — weights, gradients, optimiser state, capture — is compacted in
    /// place; each task keeps its own head.
    pub fn prune(&mut self, be: &B, keep: &[usize], task_branch: Vec<usize>) {
        assert!(task_branch.iter().all(|&b| b < keep.len()));
        let capture_row = self.fc1.w.len() / self.count();
        for p in self.params_mut() {
            p.compact_branches(be, keep);
        }
        if let Some(capture) = &mut self.capture {
            be.compact_rows(capture, capture_row, keep);
        }
        self.branch_origin = keep.iter().map(|&k| self.branch_origin[k]).collect();
        self.task_branch = task_branch;
    }

    /// `--merge mean-weights`: for every `(group, kept)` of old branch indices, the
    /// kept branch's layers become the element-wise mean of the group's (weights
    /// and optimiser state); `prune` then drops the others.
    pub fn average(&mut self, be: &B, groups: &[(Vec<usize>, usize)]) {
        for p in self.params_mut() {
            p.average_branches(be, groups);
        }
    }

    pub fn params(&self) -> [&Param<B>; 4] {
        [&self.fc1.w, &self.fc1.b, &self.fc2.w, &self.fc2.b]
    }

    pub fn params_mut(&mut self) -> [&mut Param<B>; 4] {
        [
            &mut self.fc1.w,
            &mut self.fc1.b,
            &mut self.fc2.w,
            &mut self.fc2.b,
        ]
    }
}
