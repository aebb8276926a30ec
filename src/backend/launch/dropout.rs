//! Plans of dropout (kernels/dropout.cu).

use super::{elementwise, i32_of, Arg, KernelDevice};
use crate::backend::{dropout_threshold, Dropout, DropoutOps};

impl<D: KernelDevice> DropoutOps for D {
    /// The key and threshold travel as the bits of an int (the kernel reads them
    /// unsigned); the scale is computed in f32, as the CPU twin does.
    fn dropout_forward(
        &self,
        &Dropout { len, p, key }: &Dropout,
        x: &D::Buf,
        mask: &mut D::Buf,
        y: &mut D::Buf,
    ) {
        let args = vec![
            Arg::Buf(x),
            Arg::Buf(&*mask),
            Arg::Buf(&*y),
            Arg::I32(key as i32),
            Arg::I32(dropout_threshold(p) as i32),
            Arg::F32(1.0f32 / (1.0 - p)),
            Arg::I32(i32_of(len, "len")),
        ];
        self.execute(&elementwise("dropout_forward", len, args));
    }

    fn dropout_backward(&self, len: usize, mask: &D::Buf, dy: &D::Buf, dx: &mut D::Buf) {
        let n = Arg::I32(i32_of(len, "len"));
        let args = vec![Arg::Buf(mask), Arg::Buf(dy), Arg::Buf(&*dx), n];
        self.execute(&elementwise("dropout_backward", len, args));
    }
}
