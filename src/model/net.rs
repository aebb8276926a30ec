//! The MNIST/Fashion network, forward and backward written out layer by layer
//! (no autograd: the order of operations is the program text).
//!
//! ```text
//! x [N,1,28,28] → conv1 5×5 → c1 [N,20,24,24] → bn1 → n1 → relu+pool → p1 [N,20,12,12]
//!   → conv2 5×5 → c2 [N,40,8,8] → bn2 → n2 → relu+pool → p2 [N,40,4,4] = [N,640]
//!   → fc 640→640 + relu → fr                                      (trunk, shared by all tasks)
//!   → fc1 [B,100,640] + relu → h1r [B,N,100]                      (branches, one launch for all B)
//!   → fc2 [B,50,100]  + relu → h2r [B,N,50]                       (ReLUs fused: LinearShape)
//!   → head [T,out,50] reading branch task_branch[t] → logits [T,N,out]
//! ```
//!
//! Every ReLU is fused into a neighbour (one launch fewer each on a kernel device,
//! the same float operations): into the linear layers' store and dx
//! (`LinearShape::relu_out` / `relu_in`), and into the max-pools
//! (`relu_maxpool2x2_forward` / `_backward`). In training each conv block's
//! batchnorm + ReLU + pool is one op, forward and backward
//! (`BatchNorm::forward_relu_pool` / `backward_relu_pool`).

use super::layer::{BatchNorm, BlockSaved, Layer};
use super::{Branched, Branches};
use super::{Loss, NetSpec, Param, StepState};
use crate::backend::{Backend, BatchStats, Conv2dShape, LinearShape, LossIo, Nchw, OptimStep};
use rand_chacha::ChaCha8Rng;

pub struct Net<B: Backend> {
    pub spec: NetSpec,
    conv1: Layer<B>,
    bn1: BatchNorm<B>,
    conv2: Layer<B>,
    bn2: BatchNorm<B>,
    fc: Layer<B>,
    /// The per-task branches (fc1, fc2), the task → branch map and the capture.
    pub branches: Branches<B>,
    head: Layer<B>,
    step_state: Option<StepState<B>>,
}

/// Every forward activation, backward gradient and saved statistic of one step,
/// allocated once for the largest batch.
pub struct Activations<B: Backend> {
    pub capacity: usize,
    /// Input images `[N, 1, H, W]`, pixel/255.
    pub x: B::Buf,
    /// One-hot targets `[N, classes]`.
    pub targets: B::Buf,
    /// `[T, N, head_out]`.
    pub logits: B::Buf,
    /// `[1]` (cross-entropy) or `[T]` (per-task BCE).
    pub loss: B::Buf,
    c1: B::Buf,
    n1: B::Buf,
    p1: B::Buf,
    c2: B::Buf,
    n2: B::Buf,
    p2: B::Buf,
    fr: B::Buf,
    h1r: B::Buf,
    h2r: B::Buf,
    mean1: B::Buf,
    inv_std1: B::Buf,
    mean2: B::Buf,
    inv_std2: B::Buf,
    // Gradients, named after the activation they belong to.
    dlogits: B::Buf,
    dh2: B::Buf,
    dh1: B::Buf,
    df: B::Buf,
    dp2: B::Buf,
    dn2: B::Buf,
    dc2: B::Buf,
    dp1: B::Buf,
    dn1: B::Buf,
    dc1: B::Buf,
}

/// The shapes of every layer at batch size `n`.
struct Shapes {
    conv1: Conv2dShape,
    act1: Nchw,
    conv2: Conv2dShape,
    act2: Nchw,
    fc: LinearShape,
    fc1: LinearShape,
    fc2: LinearShape,
    head: LinearShape,
}

impl Shapes {
    fn new(spec: &NetSpec, task_branch: &[usize], n: usize) -> Self {
        let k = spec.kernel;
        let conv1 = Conv2dShape {
            batch: n,
            in_channels: 1,
            out_channels: spec.conv1_channels,
            height: spec.image_height,
            width: spec.image_width,
            kernel: k,
            pad: 0,
            stride: 1,
        };
        let act1 = Nchw {
            batch: n,
            channels: spec.conv1_channels,
            height: conv1.out_height(),
            width: conv1.out_width(),
        };
        let (h1, w1) = spec.pool1_size();
        let conv2 = Conv2dShape {
            batch: n,
            in_channels: spec.conv1_channels,
            out_channels: spec.conv2_channels,
            height: h1,
            width: w1,
            kernel: k,
            pad: 0,
            stride: 1,
        };
        let act2 = Nchw {
            batch: n,
            channels: spec.conv2_channels,
            height: conv2.out_height(),
            width: conv2.out_width(),
        };
        let flat = spec.flat_features();
        let [hid1, hid2] = spec.branch_hidden;
        let b = spec.branches;
        Self {
            conv1,
            act1,
            conv2,
            act2,
            fc: LinearShape::single(n, flat, spec.shared).with_relu(false, true),
            fc1: LinearShape {
                branches: b,
                x_branches: 1,
                batch: n,
                in_features: spec.shared,
                out_features: hid1,
                x_of: vec![0; b],
                relu_out: true,
                relu_in: true,
            },
            fc2: LinearShape {
                branches: b,
                x_branches: b,
                batch: n,
                in_features: hid1,
                out_features: hid2,
                x_of: (0..b).collect(),
                relu_out: true,
                relu_in: true,
            },
            head: LinearShape {
                branches: spec.tasks,
                x_branches: b,
                batch: n,
                in_features: hid2,
                out_features: spec.head_out,
                x_of: task_branch.to_vec(),
                relu_out: false,
                relu_in: true,
            },
        }
    }
}

impl<B: Backend> Net<B> {
    /// A freshly initialised network; every task starts on its own branch
    /// (STL: the single task on the single branch).
    pub fn new(be: &B, spec: NetSpec, rng: &mut ChaCha8Rng) -> Self {
        let k = spec.kernel;
        let hid2 = spec.branch_hidden[1];
        let b = spec.branches;
        let conv1 = Layer::conv(be, "trunk.conv1", 1, spec.conv1_channels, k, rng);
        let bn1 = BatchNorm::new(be, "trunk.bn1", spec.conv1_channels);
        let conv2 = Layer::conv(
            be,
            "trunk.conv2",
            spec.conv1_channels,
            spec.conv2_channels,
            k,
            rng,
        );
        let bn2 = BatchNorm::new(be, "trunk.bn2", spec.conv2_channels);
        let fc = Layer::linear(be, "trunk.fc", 1, spec.flat_features(), spec.shared, rng);
        let branches = Branches::new(
            be,
            b,
            spec.tasks,
            (spec.shared, spec.branch_hidden),
            spec.identical_branches,
            rng,
        );
        let mut head = Layer::linear(be, "heads", spec.tasks, hid2, spec.head_out, rng);
        if spec.identical_branches {
            head.w.copy_first_branch(be);
            head.b.copy_first_branch(be);
        }
        Self {
            spec,
            conv1,
            bn1,
            conv2,
            bn2,
            fc,
            branches,
            head,
            step_state: None,
        }
    }

    /// Forward pass of the first `n` samples of `act.x`; writes `act.logits`.
    /// `train` selects batch statistics (and updates the running ones) over running ones.
    pub fn forward(&mut self, be: &B, act: &mut Activations<B>, n: usize, train: bool) {
        debug_assert!(n <= act.capacity);
        let s = Shapes::new(&self.spec, &self.branches.task_branch, n);
        let a = act;
        // Trunk.
        be.conv2d_forward(&s.conv1, self.conv1.forward_io(&a.x, &mut a.c1));
        let stats1 = train.then_some(BatchStats {
            mean: &mut a.mean1,
            inv_std: &mut a.inv_std1,
        });
        self.bn1
            .forward_relu_pool(be, &s.act1, &a.c1, &mut a.n1, &mut a.p1, stats1);
        be.conv2d_forward(&s.conv2, self.conv2.forward_io(&a.p1, &mut a.c2));
        let stats2 = train.then_some(BatchStats {
            mean: &mut a.mean2,
            inv_std: &mut a.inv_std2,
        });
        self.bn2
            .forward_relu_pool(be, &s.act2, &a.c2, &mut a.n2, &mut a.p2, stats2);
        // The linear layers' ReLUs are fused into them (LinearShape::relu_out).
        be.linear_forward(&s.fc, self.fc.forward_io(&a.p2, &mut a.fr));
        // Branches: every branch in one call per layer.
        be.linear_forward(&s.fc1, self.branches.fc1.forward_io(&a.fr, &mut a.h1r));
        be.linear_forward(&s.fc2, self.branches.fc2.forward_io(&a.h1r, &mut a.h2r));
        // Heads: task t reads branch task_branch[t].
        be.linear_forward(&s.head, self.head.forward_io(&a.h2r, &mut a.logits));
    }

    /// Loss of the last forward against `act.targets`; writes `act.loss` and the
    /// gradient of the loss with respect to the logits.
    pub fn loss(&self, be: &B, act: &mut Activations<B>, n: usize) {
        let spec = &self.spec;
        let io = LossIo {
            logits: &act.logits,
            targets: &act.targets,
            loss: &mut act.loss,
            dlogits: &mut act.dlogits,
        };
        match spec.loss {
            Loss::SoftmaxCrossEntropy => be.softmax_cross_entropy(n, spec.head_out, io),
            Loss::SigmoidBce => be.sigmoid_bce(spec.tasks, n, io),
        }
    }

    /// Backward pass after `forward(train = true)` and `loss`: writes every
    /// parameter's `grad` (overwritten, not accumulated).
    pub fn backward(&mut self, be: &B, act: &mut Activations<B>, n: usize) {
        self.backward_pass(be, act, n, None);
    }

    /// The outputs `input_gradient` can select: the tasks' logits (MTL), or the
    /// classes' (STL, one softmax head).
    pub fn outputs(&self) -> usize {
        if self.spec.head_out == 1 {
            self.spec.tasks
        } else {
            self.spec.head_out
        }
    }

    /// After `forward(train = false)` of `n` images: the gradient of output
    /// `output`'s logit (task t's for MTL, class t's for STL) of each image with
    /// respect to that image, `[n, H·W]`. Batch normalisation is backpropagated in its
    /// evaluation form (running statistics), so images do not interact. Parameter
    /// gradients are overwritten on the way and nothing is captured: no optimiser
    /// step may follow (what `sskernel explain` runs).
    pub fn input_gradient(
        &mut self,
        be: &B,
        act: &mut Activations<B>,
        n: usize,
        output: usize,
    ) -> Vec<f32> {
        assert!(
            output < self.outputs(),
            "output {output} of {}",
            self.outputs()
        );
        // dlogits `[T, N, head_out]`: 1 at the selected logit of every image.
        let head_out = self.spec.head_out;
        let mut select = vec![0.0; self.spec.tasks * n * head_out];
        for i in 0..n {
            match head_out {
                1 => select[output * n + i] = 1.0,
                _ => select[i * head_out + output] = 1.0,
            }
        }
        be.write(&mut act.dlogits, &select);
        let mut dx = be.zeros(be.buf_len(&act.x));
        self.backward_pass(be, act, n, Some(&mut dx));
        let pixels = self.spec.image_height * self.spec.image_width;
        be.download(&dx)[..n * pixels].to_vec()
    }

    /// The backward pass: of a training step (`input_grad` None: batch-statistics
    /// batch norm, the capture), or of an evaluation forward down to the input
    /// (`input_grad`: running-statistics batch norm, dx of the first conv).
    fn backward_pass(
        &mut self,
        be: &B,
        act: &mut Activations<B>,
        n: usize,
        input_grad: Option<&mut B::Buf>,
    ) {
        let eval = input_grad.is_some();
        let s = Shapes::new(&self.spec, &self.branches.task_branch, n);
        let a = act;
        // Heads and branches; each dx is already through the ReLU before the layer
        // (LinearShape::relu_in).
        be.linear_backward(
            &s.head,
            self.head.backward_io(&a.h2r, &a.dlogits, Some(&mut a.dh2)),
        );
        be.linear_backward(
            &s.fc2,
            self.branches
                .fc2
                .backward_io(&a.h1r, &a.dh2, Some(&mut a.dh1)),
        );
        be.linear_backward(
            &s.fc1,
            self.branches
                .fc1
                .backward_io(&a.fr, &a.dh1, Some(&mut a.df)),
        );
        // Selective Sharing's signal (DESIGN.md §5.1): this step's ∂L/∂W1, added
        // the moment it exists. Only a training step runs backward, so evaluation
        // never reaches the capture.
        if !eval {
            self.branches.capture_step(be);
        }
        // Trunk.
        be.linear_backward(&s.fc, self.fc.backward_io(&a.p2, &a.df, Some(&mut a.dp2)));
        if eval {
            be.relu_maxpool2x2_backward(&s.act2, &a.n2, &a.dp2, &mut a.dn2);
            self.bn2
                .backward_eval_input(be, &s.act2, &a.dn2, &mut a.dc2);
        } else {
            let saved2 = BlockSaved {
                x: &a.c2,
                n: &a.n2,
                batch: BatchStats {
                    mean: &a.mean2,
                    inv_std: &a.inv_std2,
                },
            };
            self.bn2
                .backward_relu_pool(be, &s.act2, saved2, &a.dp2, &mut a.dn2, &mut a.dc2);
        }
        be.conv2d_backward(
            &s.conv2,
            self.conv2.backward_io(&a.p1, &a.dc2, Some(&mut a.dp1)),
        );
        if eval {
            be.relu_maxpool2x2_backward(&s.act1, &a.n1, &a.dp1, &mut a.dn1);
            self.bn1
                .backward_eval_input(be, &s.act1, &a.dn1, &mut a.dc1);
        } else {
            let saved1 = BlockSaved {
                x: &a.c1,
                n: &a.n1,
                batch: BatchStats {
                    mean: &a.mean1,
                    inv_std: &a.inv_std1,
                },
            };
            self.bn1
                .backward_relu_pool(be, &s.act1, saved1, &a.dp1, &mut a.dn1, &mut a.dc1);
        }
        be.conv2d_backward(&s.conv1, self.conv1.backward_io(&a.x, &a.dc1, input_grad));
    }

    /// One training step on the first `n` samples already in `act.x` and
    /// `act.targets`: forward (batch statistics), loss, backward, optimiser update.
    /// The batch loss is left in `act.loss`.
    pub fn train_step(&mut self, be: &B, act: &mut Activations<B>, n: usize, step: &OptimStep) {
        use crate::backend::profile::phase;
        phase("forward").run(|| self.forward(be, act, n, true));
        phase("loss").run(|| self.loss(be, act, n));
        phase("backward").run(|| self.backward(be, act, n));
        phase("optimiser").run(|| self.optim_step(be, step));
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

/// Training steps of a [`Net`] recorded once as a launch program
/// (`backend::ProgramOps`; on `cuda` a CUDA graph) and replayed: the first step of
/// each batch size and task → branch map records (and runs) a program for it, kept
/// until [`Self::forget`] (an epoch's short last batch and the full batches each
/// keep theirs). On the CPU every step runs its ops as they come.
pub struct StepProgram<B: Backend> {
    recorded: Vec<(StepKey, B::Program)>,
    recordings: usize,
}

/// What a recorded step depends on besides its buffers: the batch size and the
/// task → branch map (the heads' `x_of`).
pub type StepKey = (usize, Vec<usize>);

/// Programs kept at most (the oldest goes first): a run needs two, the full batch
/// and an epoch's short last one.
const KEPT_PROGRAMS: usize = 4;

impl<B: Backend> Default for StepProgram<B> {
    fn default() -> Self {
        Self {
            recorded: Vec::new(),
            recordings: 0,
        }
    }
}

impl<B: Backend> StepProgram<B> {
    /// [`Net::train_step`], by replaying the program recorded for this batch size
    /// and branch map, else recording one.
    ///
    /// # Safety
    /// `net` and `act` are those of every earlier call since the last
    /// [`Self::forget`], and no buffer of theirs has been reallocated since (pruning
    /// and a restarted gradient capture do: call `forget` after them).
    pub unsafe fn train_step(
        &mut self,
        be: &B,
        net: &mut Net<B>,
        act: &mut Activations<B>,
        n: usize,
        step: &OptimStep,
    ) {
        let key = (n, net.branches.task_branch.clone());
        // SAFETY: the contract above.
        unsafe { self.run(be, key, &mut || net.train_step(be, act, n, step)) }
    }

    /// Replays the program recorded for `key`, else runs `step` (a training step
    /// and whatever travels with it, such as the batch's gather), recording it.
    ///
    /// # Safety
    /// As [`Self::train_step`]: `step` touches the buffers of every earlier call
    /// since the last [`Self::forget`], none of them reallocated since; `key` is the
    /// step's batch size and task → branch map.
    pub unsafe fn run(&mut self, be: &B, key: StepKey, step: &mut dyn FnMut()) {
        if let Some((_, program)) = self.recorded.iter().find(|(k, _)| *k == key) {
            // SAFETY: recorded on these buffers, still alive (the contract above).
            return unsafe { be.replay(program) };
        }
        self.recordings += 1;
        if let Some(program) = be.record(step) {
            if self.recorded.len() == KEPT_PROGRAMS {
                self.recorded.remove(0);
            }
            self.recorded.push((key, program));
        }
    }

    /// Drops the programs: the net's buffers were reallocated.
    pub fn forget(&mut self) {
        self.recorded.clear();
    }

    /// Kernel launches of the program recorded last, if one is.
    pub fn launches(&self) -> Option<usize> {
        self.recorded.last().map(|(_, p)| B::program_launches(p))
    }

    /// Steps recorded so far (a program each on a kernel device).
    pub fn recordings(&self) -> usize {
        self.recordings
    }
}

impl<B: Backend> Branched<B> for Net<B> {
    fn branches(&self) -> &Branches<B> {
        &self.branches
    }
    fn branches_mut(&mut self) -> &mut Branches<B> {
        &mut self.branches
    }
    fn params(&self) -> Vec<&Param<B>> {
        vec![
            &self.conv1.w,
            &self.conv1.b,
            &self.bn1.gamma,
            &self.bn1.beta,
            &self.conv2.w,
            &self.conv2.b,
            &self.bn2.gamma,
            &self.bn2.beta,
            &self.fc.w,
            &self.fc.b,
            &self.branches.fc1.w,
            &self.branches.fc1.b,
            &self.branches.fc2.w,
            &self.branches.fc2.b,
            &self.head.w,
            &self.head.b,
        ]
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![
            &mut self.conv1.w,
            &mut self.conv1.b,
            &mut self.bn1.gamma,
            &mut self.bn1.beta,
            &mut self.conv2.w,
            &mut self.conv2.b,
            &mut self.bn2.gamma,
            &mut self.bn2.beta,
            &mut self.fc.w,
            &mut self.fc.b,
            &mut self.branches.fc1.w,
            &mut self.branches.fc1.b,
            &mut self.branches.fc2.w,
            &mut self.branches.fc2.b,
            &mut self.head.w,
            &mut self.head.b,
        ]
    }

    fn buffers(&self) -> Vec<(&str, &B::Buf)> {
        vec![
            ("trunk.bn1.running_mean", &self.bn1.running_mean),
            ("trunk.bn1.running_var", &self.bn1.running_var),
            ("trunk.bn2.running_mean", &self.bn2.running_mean),
            ("trunk.bn2.running_var", &self.bn2.running_var),
        ]
    }

    fn buffers_mut(&mut self) -> Vec<(&str, &mut B::Buf)> {
        vec![
            ("trunk.bn1.running_mean", &mut self.bn1.running_mean),
            ("trunk.bn1.running_var", &mut self.bn1.running_var),
            ("trunk.bn2.running_mean", &mut self.bn2.running_mean),
            ("trunk.bn2.running_var", &mut self.bn2.running_var),
        ]
    }

    /// Also the spec's branch count, which sizes the activations' shapes.
    fn prune(&mut self, be: &B, keep: &[usize], task_branch: Vec<usize>) {
        self.branches.prune(be, keep, task_branch);
        self.spec.branches = keep.len();
    }
}

impl<B: Backend> Activations<B> {
    /// Buffers for batches of up to `capacity` samples of `spec`'s network.
    pub fn new(be: &B, spec: &NetSpec, capacity: usize) -> Self {
        let task_branch: Vec<usize> = (0..spec.tasks).map(|t| t % spec.branches).collect();
        let s = Shapes::new(spec, &task_branch, capacity);
        let (ph, pw) = spec.pool1_size();
        let p1 = capacity * spec.conv1_channels * ph * pw;
        let p2 = capacity * spec.flat_features();
        let loss = match spec.loss {
            Loss::SoftmaxCrossEntropy => 1,
            Loss::SigmoidBce => spec.tasks,
        };
        let z = |len: usize| be.zeros(len);
        Self {
            capacity,
            x: z(s.conv1.x_len()),
            targets: z(capacity * spec.classes),
            logits: z(s.head.y_len()),
            loss: z(loss),
            c1: z(s.act1.len()),
            n1: z(s.act1.len()),
            p1: z(p1),
            c2: z(s.act2.len()),
            n2: z(s.act2.len()),
            p2: z(p2),
            fr: z(s.fc.y_len()),
            h1r: z(s.fc1.y_len()),
            h2r: z(s.fc2.y_len()),
            mean1: z(spec.conv1_channels),
            inv_std1: z(spec.conv1_channels),
            mean2: z(spec.conv2_channels),
            inv_std2: z(spec.conv2_channels),
            dlogits: z(s.head.y_len()),
            dh2: z(s.fc2.y_len()),
            dh1: z(s.fc1.y_len()),
            df: z(s.fc.y_len()),
            dp2: z(p2),
            dn2: z(s.act2.len()),
            dc2: z(s.act2.len()),
            dp1: z(p1),
            dn1: z(s.act1.len()),
            dc1: z(s.act1.len()),
        }
    }
}
