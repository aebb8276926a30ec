//! Plans of the parameter updates (kernels/optim.cu, memory.cu).

use super::{dim, elementwise, i32_of, one_thread, Arg, KernelDevice, Launch, Plan, BLOCK};
use crate::backend::kernels::geometry::{SSK_CHUNK, SSK_MAX_TENSORS as MAX_TENSORS};
use crate::backend::{OptimOps, OptimStep, ParamBufs};

impl<D: KernelDevice> OptimOps for D {
    /// optim.cu: optim_prepare, one thread.
    fn optim_prepare(&self, step: &OptimStep, hyper: &mut D::Buf) {
        let (beta1, beta2, adam) = match *step {
            OptimStep::Sgd { .. } => (0.0, 0.0, 0),
            OptimStep::Adam { beta1, beta2, .. } => (beta1, beta2, 1),
        };
        let args = vec![
            Arg::Buf(&*hyper),
            Arg::F32(beta1),
            Arg::F32(beta2),
            Arg::I32(adam),
        ];
        self.execute(&one_thread("optim_prepare", args));
    }

    /// One multi-tensor launch per [`MAX_TENSORS`] tensors (`sgd_step` / `adam_step`);
    /// `state`: SGD `[velocity]`, Adam `[m, v]`; the step size and Adam's bias
    /// correction are read from `hyper`.
    fn optim_step(&self, step: &OptimStep, hyper: &D::Buf, params: &mut [ParamBufs<D::Buf>]) {
        let mut plan = Plan::new();
        for group in params.chunks(MAX_TENSORS) {
            let (table, blocks) = tensor_list(self, step, group);
            let mut args = vec![table, Arg::Buf(hyper)];
            args.extend(match *step {
                OptimStep::Sgd { momentum, .. } => vec![Arg::F32(momentum)],
                OptimStep::Adam {
                    beta1, beta2, eps, ..
                } => vec![Arg::F32(beta1), Arg::F32(beta2), Arg::F32(eps)],
            });
            plan.push(Launch {
                kernel: match step {
                    OptimStep::Sgd { .. } => "sgd_step",
                    OptimStep::Adam { .. } => "adam_step",
                },
                grid: [dim(blocks), 1, 1],
                block: [BLOCK, 1, 1],
                shared_bytes: 0,
                args,
            });
        }
        self.execute(&plan);
    }

    /// memory.cu: ssk_axpy.
    fn axpy(&self, alpha: f32, x: &D::Buf, y: &mut D::Buf, len: usize) {
        let args = vec![
            Arg::Buf(&*y),
            Arg::Buf(x),
            Arg::F32(alpha),
            Arg::I32(i32_of(len, "len")),
        ];
        self.execute(&elementwise("ssk_axpy", len, args));
    }
}

/// common.cuh's `SskTensorList` of up to [`MAX_TENSORS`] tensors, as an argument
/// (its bytes in C layout: four pointer arrays, `len`, `first_block`, `count`),
/// and the blocks of the launch: [`SSK_CHUNK`] elements a block, every tensor
/// starting a block of its own.
fn tensor_list<'a, D: KernelDevice>(
    dev: &D,
    step: &OptimStep,
    group: &[ParamBufs<D::Buf>],
) -> (Arg<'a, D::Buf>, usize) {
    assert!(group.len() <= MAX_TENSORS);
    let mut bufs = Vec::new();
    let mut slot = |b: Option<&D::Buf>| {
        b.map_or(0, |b| {
            bufs.push((dev.address(b), dev.buf_len(b)));
            dev.address(b)
        })
    };
    let mut pointers = [[0u64; MAX_TENSORS]; 4];
    let (mut len, mut first_block) = ([0i32; MAX_TENSORS], [0i32; MAX_TENSORS + 1]);
    let mut blocks = 0;
    for (t, p) in group.iter().enumerate() {
        step.check_state(p.state);
        pointers[0][t] = slot(Some(&*p.value));
        pointers[1][t] = slot(Some(p.grad));
        pointers[2][t] = slot(p.state.first());
        pointers[3][t] = slot(p.state.get(1));
        len[t] = i32_of(p.len, "len");
        first_block[t] = i32_of(blocks, "blocks");
        blocks += p.len.div_ceil(SSK_CHUNK);
    }
    first_block[group.len()..].fill(i32_of(blocks, "blocks"));
    let mut bytes = Vec::with_capacity(40 * MAX_TENSORS + 8);
    for a in pointers.iter().flatten() {
        bytes.extend(a.to_ne_bytes());
    }
    for v in len.iter().chain(&first_block) {
        bytes.extend(v.to_ne_bytes());
    }
    bytes.extend(i32_of(group.len(), "count").to_ne_bytes());
    bytes.resize(bytes.len().next_multiple_of(8), 0); // the struct's alignment
    (Arg::Table { bytes, bufs }, blocks)
}
