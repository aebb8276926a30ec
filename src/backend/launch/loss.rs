//! Plans of the losses (kernels/loss.cu).

use super::{block_per, i32_of, Arg, KernelDevice, Plan};
use crate::backend::{LossIo, LossOps};

/// A loss kernel's arguments: its four buffers, then `dims` (value, name).
fn loss_args<'a, B>(io: &'a LossIo<B>, dims: [(usize, &str); 2]) -> Vec<Arg<'a, B>> {
    let mut args = vec![
        Arg::Buf(io.logits),
        Arg::Buf(io.targets),
        Arg::Buf(&*io.loss),
        Arg::Buf(&*io.dlogits),
    ];
    args.extend(dims.map(|(v, name)| Arg::I32(i32_of(v, name))));
    args
}

impl<D: KernelDevice> LossOps for D {
    /// One block: the batch is small and the mean is summed in a fixed order.
    fn softmax_cross_entropy(&self, batch: usize, classes: usize, io: LossIo<D::Buf>) {
        let args = loss_args(&io, [(batch, "batch"), (classes, "classes")]);
        self.execute(&Plan::one(block_per("softmax_cross_entropy", 1, 0, args)));
    }

    /// One block per task.
    fn sigmoid_bce(&self, tasks: usize, batch: usize, io: LossIo<D::Buf>) {
        let args = loss_args(&io, [(tasks, "tasks"), (batch, "batch")]);
        self.execute(&Plan::one(block_per("sigmoid_bce", tasks, 0, args)));
    }
}
