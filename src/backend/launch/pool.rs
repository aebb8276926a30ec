//! Plans of ReLU and max-pooling (kernels/pool.cu).

use super::{elementwise, i32_of, Arg, KernelDevice, Plan};
use crate::backend::{Nchw, PoolOps};

/// The shape arguments of the pooling kernels: planes (N·C), H, W.
fn pool_dims<'a, B>(s: &Nchw) -> [Arg<'a, B>; 3] {
    [
        Arg::I32(i32_of(s.batch * s.channels, "planes")),
        Arg::I32(i32_of(s.height, "height")),
        Arg::I32(i32_of(s.width, "width")),
    ]
}

impl<D: KernelDevice> PoolOps for D {
    fn relu_forward(&self, len: usize, x: &D::Buf, y: &mut D::Buf) {
        let args = vec![Arg::Buf(x), Arg::Buf(&*y), Arg::I32(i32_of(len, "len"))];
        self.execute(&elementwise("relu_forward", len, args));
    }

    fn relu_backward(&self, len: usize, y: &D::Buf, dy: &D::Buf, dx: &mut D::Buf) {
        let n = Arg::I32(i32_of(len, "len"));
        let args = vec![Arg::Buf(y), Arg::Buf(dy), Arg::Buf(&*dx), n];
        self.execute(&elementwise("relu_backward", len, args));
    }

    fn maxpool2x2_forward(&self, s: &Nchw, x: &D::Buf, y: &mut D::Buf) {
        self.execute(&maxpool_forward(s, x, &*y, false));
    }

    fn maxpool2x2_backward(&self, s: &Nchw, x: &D::Buf, dy: &D::Buf, dx: &mut D::Buf) {
        self.execute(&maxpool_backward(s, x, dy, &*dx, false));
    }

    fn relu_maxpool2x2_forward(&self, s: &Nchw, x: &D::Buf, y: &mut D::Buf) {
        self.execute(&maxpool_forward(s, x, &*y, true));
    }

    fn relu_maxpool2x2_backward(&self, s: &Nchw, x: &D::Buf, dy: &D::Buf, dx: &mut D::Buf) {
        self.execute(&maxpool_backward(s, x, dy, &*dx, true));
    }

    /// One thread per plane (the planes are small where it is used: VGG's last map).
    fn global_avgpool_forward(&self, s: &Nchw, x: &D::Buf, y: &mut D::Buf) {
        let planes = s.batch * s.channels;
        let mut args = vec![Arg::Buf(x), Arg::Buf(&*y)];
        args.extend(avgpool_dims(s));
        self.execute(&elementwise("global_avgpool_forward", planes, args));
    }

    fn global_avgpool_backward(&self, s: &Nchw, dy: &D::Buf, dx: &mut D::Buf) {
        let mut args = vec![Arg::Buf(dy), Arg::Buf(&*dx)];
        args.extend(avgpool_dims(s));
        self.execute(&elementwise("global_avgpool_backward", s.len(), args));
    }
}

/// The max-pool forward, of relu(x) when `relu` (the fused ReLU before it).
fn maxpool_forward<'a, B>(s: &Nchw, x: &'a B, y: &'a B, relu: bool) -> Plan<'a, B> {
    let out = s.batch * s.channels * (s.height / 2) * (s.width / 2);
    let mut args = vec![Arg::Buf(x), Arg::Buf(y)];
    args.extend(pool_dims(s));
    args.push(Arg::I32(relu as i32));
    elementwise("maxpool2x2_forward", out, args)
}

/// The max-pool backward, through the fused ReLU when `relu`.
fn maxpool_backward<'a, B>(s: &Nchw, x: &'a B, dy: &'a B, dx: &'a B, relu: bool) -> Plan<'a, B> {
    let mut args = vec![Arg::Buf(x), Arg::Buf(dy), Arg::Buf(dx)];
    args.extend(pool_dims(s));
    args.push(Arg::I32(relu as i32));
    elementwise("maxpool2x2_backward", s.len(), args)
}

/// planes, H·W, and the 1/(H·W) scale in f32 (the CPU twin's).
fn avgpool_dims<'a, B>(s: &Nchw) -> [Arg<'a, B>; 3] {
    let hw = s.height * s.width;
    [
        Arg::I32(i32_of(s.batch * s.channels, "planes")),
        Arg::I32(i32_of(hw, "height·width")),
        Arg::F32(1.0f32 / hw.max(1) as f32),
    ]
}
