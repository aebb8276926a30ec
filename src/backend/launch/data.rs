//! Plans of the device-side batches (kernels/data.cu).

use super::{elementwise, i32_of, one_thread, Arg, KernelDevice};
use crate::backend::{DataBufs, DataOps, Gather};

impl<D: KernelDevice> DataOps for D {
    /// One grid-stride launch over the batch's pixels and targets.
    fn gather_batch(&self, g: &Gather, data: DataBufs<D::Buf>, x: &mut D::Buf, t: &mut D::Buf) {
        let args = vec![
            Arg::Buf(data.pixels),
            Arg::Buf(data.labels),
            Arg::Buf(data.order),
            Arg::Buf(data.state),
            Arg::Buf(&*x),
            Arg::Buf(&*t),
            Arg::I32(i32_of(g.batch, "batch")),
            Arg::I32(i32_of(g.size, "size")),
            Arg::I32(i32_of(g.classes, "classes")),
        ];
        let n = g.batch * (g.size + g.classes);
        i32_of(n, "batch·(size + classes)");
        self.execute(&elementwise("gather_batch", n, args));
    }

    /// One thread.
    fn advance_batch(
        &self,
        (tasks, batch): (usize, usize),
        loss: &D::Buf,
        state: &mut D::Buf,
        log: &mut D::Buf,
    ) {
        let args = vec![
            Arg::Buf(loss),
            Arg::Buf(&*state),
            Arg::Buf(&*log),
            Arg::I32(i32_of(tasks, "tasks")),
            Arg::I32(i32_of(batch, "batch")),
        ];
        self.execute(&one_thread("advance_batch", args));
    }
}
