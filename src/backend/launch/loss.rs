//! Plans of the losses (kernels/loss.cu).

use super::{block_per, i32_of, Arg, KernelDevice, Plan};
use crate::backend::{LossIo, LossOps};

/// The four buffers every loss kernel takes first, in order.
fn loss_args<'a, B>(io: &'a LossIo<B>) -> Vec<Arg<'a, B>> {
    vec![
        Arg::Buf(io.logits),
        Arg::Buf(io.targets),
        Arg::Buf(&*io.loss),
        Arg::Buf(&*io.dlogits),
    ]
}

/// `dims` as int arguments (value, name for the overflow message).
fn dims<'a, B>(dims: [(usize, &str); 2]) -> [Arg<'a, B>; 2] {
    dims.map(|(v, name)| Arg::I32(i32_of(v, name)))
}

impl<D: KernelDevice> LossOps for D {
    /// One block: the batch is small and the mean is summed in a fixed order.
    fn softmax_cross_entropy(&self, batch: usize, classes: usize, io: LossIo<D::Buf>) {
        let mut args = loss_args(&io);
        args.extend(dims([(batch, "batch"), (classes, "classes")]));
        self.execute(&Plan::one(block_per("softmax_cross_entropy", 1, 0, args)));
    }

    /// One block per task.
    fn sigmoid_bce(&self, tasks: usize, batch: usize, io: LossIo<D::Buf>) {
        let mut args = loss_args(&io);
        args.extend(dims([(tasks, "tasks"), (batch, "batch")]));
        self.execute(&Plan::one(block_per("sigmoid_bce", tasks, 0, args)));
    }

    /// One block.
    fn mse(&self, batch: usize, io: LossIo<D::Buf>) {
        let mut args = loss_args(&io);
        args.push(Arg::I32(i32_of(batch, "batch")));
        self.execute(&Plan::one(block_per("mse", 1, 0, args)));
    }

    /// One block; each thread loops over every pair of its samples.
    fn pairwise_rank(&self, batch: usize, io: LossIo<D::Buf>) {
        let mut args = loss_args(&io);
        args.push(Arg::I32(i32_of(batch, "batch")));
        self.execute(&Plan::one(block_per("pairwise_rank", 1, 0, args)));
    }
}
