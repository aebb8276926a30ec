//! The heterogeneous multi-task net (DESIGN.md §4, OmniArt / features, and the
//! image problems): a shared FC on precomputed features — or on the output of a
//! conv stack over images (`convs`: VGG-16 for CIFAR-10, the OmniGlot CNN) — one
//! branch per task (FC → FC → dropout), and one head per task of that task's kind:
//! softmax classification, sigmoid binary, linear regression, or a ranking score.
//! Forward and backward are written out layer by layer, as in `net.rs`.
//!
//! ```text
//! x [N, input] → (convs → [N, convs.out_features()])
//!   → trunk fc → f [N, shared] → relu → fr                              (shared by all)
//!   → fc1 [B, h1, shared] → h1 [B, N, h1] → relu → h1r                  (all branches)
//!   → fc2 [B, h2, h1]     → h2 [B, N, h2] → relu → h2r → dropout → h2d
//!   → head t [1, out_t, h2] reading branch task_branch[t] → logits_t [N, out_t]
//! ```
//!
//! Branches of different output kinds merge like any others (Selective Sharing
//! compares fc1's gradients): a merged branch then feeds several heads, each its
//! task's kind. The heads' input gradients into a shared branch are summed.

use super::{Branched, Branches, ConvActs, ConvStack, ConvStackSpec, Layer, Param, StepState};
use crate::backend::{dropout_hash, Backend, Dropout, LinearShape, LossIo, OptimStep};
use crate::data::TaskKind;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Every size of the heterogeneous net.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeteroSpec {
    /// Features per sample (with `convs`: the image's C·H·W values).
    pub input: usize,
    /// The conv stack in front of the shared FC, for image inputs.
    pub convs: Option<ConvStackSpec>,
    /// Width of the shared FC (the paper: 2048).
    pub shared: usize,
    /// Widths of the two hidden layers of every branch (the paper: 300, 300).
    pub branch_hidden: [usize; 2],
    /// Dropout probability after the second branch layer (the paper: 0.2).
    pub dropout: f32,
    /// One kind per task, in the data's task order.
    pub tasks: Vec<TaskKind>,
    /// Branches at the start: one per task.
    pub branches: usize,
    /// Start every branch from the same weights (Selective Sharing's default, see
    /// `NetSpec::identical_branches`); the heads differ in kind, so each is its own.
    pub identical_branches: bool,
}

impl HeteroSpec {
    /// The paper's OmniArt layout for `input` features and these tasks.
    pub fn omniart(input: usize, tasks: Vec<TaskKind>) -> Self {
        Self::on_features(input, 2048, [300, 300], 0.2, tasks)
    }

    /// The paper's UCSD-Birds layout: shared FC 2048, branches FC 512 → FC 256,
    /// one ranking score per task.
    pub fn birds(input: usize, tasks: Vec<TaskKind>) -> Self {
        Self::on_features(input, 2048, [512, 256], 0.0, tasks)
    }

    /// The paper's CIFAR-10 layout: VGG-16 (widths divided by `width_div`; 1 is the
    /// paper's) on 3×32×32 images, shared FC 1024, branches FC 100 → FC 100.
    pub fn cifar10(width_div: usize, tasks: Vec<TaskKind>) -> Self {
        let convs = ConvStackSpec::vgg16([3, 32, 32], width_div);
        Self::on_features(convs.input_len(), 1024, [100, 100], 0.0, tasks).behind(convs)
    }

    /// The paper's OmniGlot layout: the 3-layer CNN on 28×28 images, shared FC 300,
    /// branches FC 100 → FC 100 with dropout 0.2.
    pub fn omniglot(tasks: Vec<TaskKind>) -> Self {
        let convs = ConvStackSpec::omniglot();
        Self::on_features(convs.input_len(), 300, [100, 100], 0.2, tasks).behind(convs)
    }

    /// This net with `convs` in front of its shared FC.
    fn behind(self, convs: ConvStackSpec) -> Self {
        Self {
            convs: Some(convs),
            ..self
        }
    }

    fn on_features(
        input: usize,
        shared: usize,
        branch_hidden: [usize; 2],
        dropout: f32,
        tasks: Vec<TaskKind>,
    ) -> Self {
        Self {
            input,
            convs: None,
            shared,
            branch_hidden,
            dropout,
            branches: tasks.len(),
            tasks,
            identical_branches: true,
        }
    }

    /// Width of the shared FC's input: the conv stack's output, else the features.
    pub fn trunk_input(&self) -> usize {
        self.convs
            .as_ref()
            .map_or(self.input, ConvStackSpec::out_features)
    }
}

pub struct HeteroNet<B: Backend> {
    pub spec: HeteroSpec,
    convs: Option<ConvStack<B>>,
    trunk: Layer<B>,
    pub branches: Branches<B>,
    heads: Vec<Layer<B>>,
    /// Dropout's mask key: the run's seed and the step count, so each step drops
    /// anew and a rerun drops the same.
    seed: u32,
    steps: u32,
    step_state: Option<StepState<B>>,
}

/// Every buffer of one step, allocated once for batches of up to `capacity`.
pub struct HeteroActs<B: Backend> {
    pub capacity: usize,
    /// Inputs `[N, input]`.
    pub x: B::Buf,
    /// Per task: targets as its loss reads them — class: one-hot rows `[N, C]`
    /// (all zero when missing); other kinds: `[N]` (NaN when missing; regression
    /// standardised).
    pub targets: Vec<B::Buf>,
    /// Per task: `[N, out_t]` and its `[1]` loss.
    pub logits: Vec<B::Buf>,
    pub loss: Vec<B::Buf>,
    convs: Option<ConvActs<B>>,
    f: B::Buf,
    fr: B::Buf,
    h1: B::Buf,
    h1r: B::Buf,
    h2: B::Buf,
    h2r: B::Buf,
    mask: B::Buf,
    h2d: B::Buf,
    dlogits: Vec<B::Buf>,
    dh2d: B::Buf,
    dhead: B::Buf,
    dh2r: B::Buf,
    dh2: B::Buf,
    dh1r: B::Buf,
    dh1: B::Buf,
    dfr: B::Buf,
    df: B::Buf,
}

impl<B: Backend> HeteroActs<B> {
    pub fn new(be: &B, spec: &HeteroSpec, capacity: usize) -> Self {
        let [h1, h2] = spec.branch_hidden;
        let b = spec.branches;
        let z = |len: usize| be.zeros(len);
        let per_task = |width: &dyn Fn(&TaskKind) -> usize| -> Vec<B::Buf> {
            spec.tasks.iter().map(|k| z(width(k))).collect()
        };
        Self {
            capacity,
            x: z(capacity * spec.input),
            targets: per_task(&|k| capacity * k.outputs()),
            logits: per_task(&|k| capacity * k.outputs()),
            loss: per_task(&|_| 1),
            convs: spec.convs.as_ref().map(|c| ConvActs::new(be, c, capacity)),
            f: z(capacity * spec.shared),
            fr: z(capacity * spec.shared),
            h1: z(b * capacity * h1),
            h1r: z(b * capacity * h1),
            h2: z(b * capacity * h2),
            h2r: z(b * capacity * h2),
            mask: z(b * capacity * h2),
            h2d: z(b * capacity * h2),
            dlogits: per_task(&|k| capacity * k.outputs()),
            dh2d: z(b * capacity * h2),
            dhead: z(b * capacity * h2),
            dh2r: z(b * capacity * h2),
            dh2: z(b * capacity * h2),
            dh1r: z(b * capacity * h1),
            dh1: z(b * capacity * h1),
            dfr: z(capacity * spec.shared),
            df: z(capacity * spec.shared),
        }
    }
}

impl<B: Backend> HeteroNet<B> {
    /// A resumed run's optimiser steps so far (each drew one dropout mask and
    /// advanced the optimiser's step counter).
    pub fn set_steps(&mut self, be: &B, steps: usize) {
        self.steps = steps as u32;
        self.step_state(be).set_steps(be, steps);
    }

    pub fn new(be: &B, spec: HeteroSpec, seed: u64, rng: &mut ChaCha8Rng) -> Self {
        let convs = spec
            .convs
            .clone()
            .map(|c| ConvStack::new(be, "trunk.convs", c, rng));
        let trunk = Layer::linear(be, "trunk.fc", 1, spec.trunk_input(), spec.shared, rng);
        let branches = Branches::new(
            be,
            spec.branches,
            spec.tasks.len(),
            (spec.shared, spec.branch_hidden),
            spec.identical_branches,
            rng,
        );
        let h2 = spec.branch_hidden[1];
        let heads = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(t, k)| Layer::linear(be, &format!("heads.{t}"), 1, h2, k.outputs(), rng))
            .collect();
        Self {
            spec,
            convs,
            trunk,
            branches,
            heads,
            seed: seed as u32 ^ (seed >> 32) as u32,
            steps: 0,
            step_state: None,
        }
    }

    /// Head t's shape: one output branch reading branch `task_branch[t]` of the
    /// `[B, N, h2]` hidden layer.
    fn head_shape(&self, t: usize, n: usize) -> LinearShape {
        LinearShape {
            branches: 1,
            x_branches: self.branches.count(),
            batch: n,
            in_features: self.spec.branch_hidden[1],
            out_features: self.spec.tasks[t].outputs(),
            x_of: vec![self.branches.task_branch[t]],
            relu_out: false,
            relu_in: false,
        }
    }

    fn shapes(&self, n: usize) -> [LinearShape; 3] {
        let b = self.branches.count();
        let [h1, h2] = self.spec.branch_hidden;
        [
            LinearShape::single(n, self.spec.trunk_input(), self.spec.shared),
            LinearShape {
                branches: b,
                x_branches: 1,
                batch: n,
                in_features: self.spec.shared,
                out_features: h1,
                x_of: vec![0; b],
                relu_out: false,
                relu_in: false,
            },
            LinearShape {
                branches: b,
                x_branches: b,
                batch: n,
                in_features: h1,
                out_features: h2,
                x_of: (0..b).collect(),
                relu_out: false,
                relu_in: false,
            },
        ]
    }

    /// Forward of the first `n` rows of `act.x`; writes every task's logits.
    /// `train` applies dropout (a fresh mask each step).
    pub fn forward(&mut self, be: &B, a: &mut HeteroActs<B>, n: usize, train: bool) {
        debug_assert!(n <= a.capacity);
        let [trunk, fc1, fc2] = self.shapes(n);
        let trunk_in = match (&mut self.convs, &mut a.convs) {
            (Some(stack), Some(ca)) => {
                stack.forward(be, ca, &a.x, n, train);
                stack.output(ca)
            }
            _ => &a.x,
        };
        be.linear_forward(&trunk, self.trunk.forward_io(trunk_in, &mut a.f));
        be.relu_forward(trunk.y_len(), &a.f, &mut a.fr);
        be.linear_forward(&fc1, self.branches.fc1.forward_io(&a.fr, &mut a.h1));
        be.relu_forward(fc1.y_len(), &a.h1, &mut a.h1r);
        be.linear_forward(&fc2, self.branches.fc2.forward_io(&a.h1r, &mut a.h2));
        be.relu_forward(fc2.y_len(), &a.h2, &mut a.h2r);
        let head_in = if train && self.spec.dropout > 0.0 {
            self.steps = self.steps.wrapping_add(1);
            let key = dropout_hash(self.seed, self.steps);
            let d = Dropout {
                len: fc2.y_len(),
                p: self.spec.dropout,
                key,
            };
            be.dropout_forward(&d, &a.h2r, &mut a.mask, &mut a.h2d);
            &a.h2d
        } else {
            &a.h2r
        };
        for (t, head) in self.heads.iter().enumerate() {
            let io = head.forward_io(head_in, &mut a.logits[t]);
            be.linear_forward(&self.head_shape(t, n), io);
        }
    }

    /// Every task's loss of the last forward against `a.targets`: `a.loss[t]` and
    /// the gradient w.r.t. its logits.
    pub fn loss(&self, be: &B, a: &mut HeteroActs<B>, n: usize) {
        for (t, kind) in self.spec.tasks.iter().enumerate() {
            let io = LossIo {
                logits: &a.logits[t],
                targets: &a.targets[t],
                loss: &mut a.loss[t],
                dlogits: &mut a.dlogits[t],
            };
            match *kind {
                TaskKind::Class { classes } => be.softmax_cross_entropy(n, classes, io),
                TaskKind::Binary => be.sigmoid_bce(1, n, io),
                TaskKind::Regression => be.mse(n, io),
                TaskKind::Rank => be.pairwise_rank(n, io),
            }
        }
    }

    /// Backward after `forward(train = true)` and `loss`: every parameter's `grad`
    /// (overwritten), the training loss being the sum of the task losses.
    pub fn backward(&mut self, be: &B, a: &mut HeteroActs<B>, n: usize) {
        let [trunk, fc1, fc2] = self.shapes(n);
        let dropped = self.spec.dropout > 0.0;
        let head_in = if dropped { &a.h2d } else { &a.h2r };
        // Heads: each writes dx for every branch (0 where it does not read); the
        // first into dh2d, the others through dhead, added in task order.
        for t in 0..self.heads.len() {
            let s = self.head_shape(t, n);
            let dx = if t == 0 { &mut a.dh2d } else { &mut a.dhead };
            be.linear_backward(
                &s,
                self.heads[t].backward_io(head_in, &a.dlogits[t], Some(dx)),
            );
            if t > 0 {
                be.axpy(1.0, &a.dhead, &mut a.dh2d, fc2.y_len());
            }
        }
        let dh2r = if dropped {
            be.dropout_backward(fc2.y_len(), &a.mask, &a.dh2d, &mut a.dh2r);
            &a.dh2r
        } else {
            &a.dh2d
        };
        be.relu_backward(fc2.y_len(), &a.h2r, dh2r, &mut a.dh2);
        be.linear_backward(
            &fc2,
            self.branches
                .fc2
                .backward_io(&a.h1r, &a.dh2, Some(&mut a.dh1r)),
        );
        be.relu_backward(fc1.y_len(), &a.h1r, &a.dh1r, &mut a.dh1);
        be.linear_backward(
            &fc1,
            self.branches
                .fc1
                .backward_io(&a.fr, &a.dh1, Some(&mut a.dfr)),
        );
        // Selective Sharing's signal, the moment it exists (DESIGN.md §5.1).
        self.branches.capture_step(be);
        be.relu_backward(trunk.y_len(), &a.fr, &a.dfr, &mut a.df);
        match (&mut self.convs, &mut a.convs) {
            (Some(stack), Some(ca)) => {
                let (out, dout) = stack.output_and_grad(ca);
                be.linear_backward(&trunk, self.trunk.backward_io(out, &a.df, Some(dout)));
                stack.backward(be, ca, &a.x, n);
            }
            _ => be.linear_backward(&trunk, self.trunk.backward_io(&a.x, &a.df, None)),
        }
    }

    /// One optimiser update of every parameter from its gradient.
    pub fn optim_step(&mut self, be: &B, step: &OptimStep) {
        let mut state = self.step_state.take().unwrap_or_else(|| StepState::new(be));
        state.update(be, step, self.params_mut());
        self.step_state = Some(state);
    }

    /// The optimiser's step state (created on first use); its counter is the
    /// number of optimiser steps taken.
    pub fn step_state(&mut self, be: &B) -> &mut StepState<B> {
        self.step_state.get_or_insert_with(|| StepState::new(be))
    }
}

impl<B: Backend> Branched<B> for HeteroNet<B> {
    fn branches(&self) -> &Branches<B> {
        &self.branches
    }
    fn branches_mut(&mut self) -> &mut Branches<B> {
        &mut self.branches
    }
    /// Every trainable tensor: conv stack, trunk, branches, heads in task order.
    fn params(&self) -> Vec<&Param<B>> {
        let mut v = self.convs.as_ref().map_or(Vec::new(), ConvStack::params);
        v.extend([&self.trunk.w, &self.trunk.b]);
        v.extend(self.branches.params());
        v.extend(self.heads.iter().flat_map(|h| [&h.w, &h.b]));
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = self
            .convs
            .as_mut()
            .map_or(Vec::new(), ConvStack::params_mut);
        v.extend([&mut self.trunk.w, &mut self.trunk.b]);
        v.extend(self.branches.params_mut());
        v.extend(self.heads.iter_mut().flat_map(|h| [&mut h.w, &mut h.b]));
        v
    }

    /// The non-trainable buffers (the conv stack's batchnorm running statistics)
    /// under their checkpoint names.
    fn buffers(&self) -> Vec<(&str, &B::Buf)> {
        self.convs.as_ref().map_or(Vec::new(), ConvStack::buffers)
    }

    fn buffers_mut(&mut self) -> Vec<(&str, &mut B::Buf)> {
        self.convs
            .as_mut()
            .map_or(Vec::new(), ConvStack::buffers_mut)
    }
}
