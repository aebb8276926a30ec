//! Plans of the parameter updates (kernels/optim.cu, memory.cu).

use super::{elementwise, i32_of, Arg, KernelDevice};
use crate::backend::{OptimOps, OptimStep, ParamBufs};

impl<D: KernelDevice> OptimOps for D {
    /// `state`: SGD `[velocity]`, Adam `[m, v]`. Adam's bias corrections are computed
    /// here in f64, as the CPU path (and PyTorch, in Python floats) does.
    fn optim_step(&self, step: &OptimStep, p: ParamBufs<D::Buf>) {
        step.check_state(p.state);
        let (len, param, grad, state) = (p.len, &*p.value, p.grad, &*p.state);
        let n = Arg::I32(i32_of(len, "len"));
        let plan = match *step {
            OptimStep::Sgd { lr, momentum } => {
                let args = vec![
                    Arg::Buf(param),
                    Arg::Buf(grad),
                    Arg::Buf(&state[0]),
                    Arg::F32(lr),
                    Arg::F32(momentum),
                    n,
                ];
                elementwise("sgd_step", len, args)
            }
            OptimStep::Adam {
                lr,
                beta1,
                beta2,
                eps,
                step: t,
            } => {
                assert!(t >= 1, "Adam steps count from 1");
                let t = t as i32;
                let bc1 = 1.0 - (beta1 as f64).powi(t);
                let bc2 = 1.0 - (beta2 as f64).powi(t);
                let args = vec![
                    Arg::Buf(param),
                    Arg::Buf(grad),
                    Arg::Buf(&state[0]),
                    Arg::Buf(&state[1]),
                    Arg::F32((lr as f64 / bc1) as f32),
                    Arg::F32(bc2.sqrt() as f32),
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
