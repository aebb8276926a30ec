//! Plans of the parameter updates (kernels/optim.cu, memory.cu).

use super::{elementwise, i32_of, one_thread, Arg, KernelDevice};
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

    /// `state`: SGD `[velocity]`, Adam `[m, v]`; the step size and Adam's bias
    /// correction are read from `p.hyper`.
    fn optim_step(&self, step: &OptimStep, p: ParamBufs<D::Buf>) {
        step.check_state(p.state);
        let (len, param, grad, state) = (p.len, &*p.value, p.grad, &*p.state);
        let n = Arg::I32(i32_of(len, "len"));
        let plan = match *step {
            OptimStep::Sgd { momentum, .. } => {
                let args = vec![
                    Arg::Buf(param),
                    Arg::Buf(grad),
                    Arg::Buf(&state[0]),
                    Arg::Buf(p.hyper),
                    Arg::F32(momentum),
                    n,
                ];
                elementwise("sgd_step", len, args)
            }
            OptimStep::Adam {
                beta1, beta2, eps, ..
            } => {
                let args = vec![
                    Arg::Buf(param),
                    Arg::Buf(grad),
                    Arg::Buf(&state[0]),
                    Arg::Buf(&state[1]),
                    Arg::Buf(p.hyper),
                    Arg::F32(beta1),
                    Arg::F32(beta2),
                    Arg::F32(eps),
                    n,
                ];
                elementwise("adam_step", len, args)
            }
        };
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
