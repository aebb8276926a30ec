//! A layer with a weight and a bias, the building block of every net here.

use super::Param;
use crate::backend::{
    Backend, Backward, BatchNorm2d, BatchStats, Forward, Grads, Nchw, RunningStats, TrainStats,
    WeightBias,
};
use rand_chacha::ChaCha8Rng;

/// A layer with a weight and a bias: a convolution, or a linear layer batched
/// across `branches` (1 for the trunk's FC).
pub struct Layer<B: Backend> {
    pub w: Param<B>,
    pub b: Param<B>,
}

impl<B: Backend> Layer<B> {
    pub fn conv(
        be: &B,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let fan_in = cin * k * k;
        Self {
            w: Param::uniform(
                be,
                &format!("{name}.weight"),
                &[cout, cin, k, k],
                fan_in,
                rng,
            ),
            b: Param::uniform(be, &format!("{name}.bias"), &[cout], fan_in, rng),
        }
    }

    /// `[branches, out, in]` weights, each branch initialised like its own nn.Linear.
    pub fn linear(
        be: &B,
        name: &str,
        branches: usize,
        fan_in: usize,
        out: usize,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        Self {
            w: Param::uniform(
                be,
                &format!("{name}.weight"),
                &[branches, out, fan_in],
                fan_in,
                rng,
            ),
            b: Param::uniform(be, &format!("{name}.bias"), &[branches, out], fan_in, rng),
        }
    }

    /// The forward's operands: `y = layer(x)`.
    pub fn forward_io<'a>(&'a self, x: &'a B::Buf, y: &'a mut B::Buf) -> Forward<'a, B::Buf> {
        let p = WeightBias {
            w: &self.w.value,
            b: &self.b.value,
        };
        Forward { x, p, y }
    }

    /// The backward's operands: it reads the forward's input `x`, the weight and
    /// `dy`, and writes the parameters' gradients and, when asked for, `dx`.
    pub fn backward_io<'a>(
        &'a mut self,
        x: &'a B::Buf,
        dy: &'a B::Buf,
        dx: Option<&'a mut B::Buf>,
    ) -> Backward<'a, B::Buf> {
        let g = Grads {
            dx,
            dw: &mut self.w.grad,
            db: &mut self.b.grad,
        };
        Backward {
            x,
            w: &self.w.value,
            dy,
            g,
        }
    }
}

/// PyTorch's BatchNorm2d defaults: running-statistic momentum and eps.
pub const BN_MOMENTUM: f32 = 0.1;
pub const BN_EPS: f32 = 1e-5;

/// What a conv block's training forward (`BatchNorm::forward_relu_pool`) keeps
/// for its backward: the batchnorm's input `x`, its output `n` (the pool's windows)
/// and the batch statistics.
pub struct BlockSaved<'a, B: Backend> {
    pub x: &'a B::Buf,
    pub n: &'a B::Buf,
    pub batch: BatchStats<&'a B::Buf>,
}

/// A 2-D batchnorm: γ (`weight`), β (`bias`) and the running statistics.
pub struct BatchNorm<B: Backend> {
    pub gamma: Param<B>,
    pub beta: Param<B>,
    pub running_mean: B::Buf,
    pub running_var: B::Buf,
}

impl<B: Backend> BatchNorm<B> {
    pub fn new(be: &B, name: &str, channels: usize) -> Self {
        Self {
            gamma: Param::constant(be, &format!("{name}.weight"), &[channels], 1.0),
            beta: Param::constant(be, &format!("{name}.bias"), &[channels], 0.0),
            running_mean: be.upload(&vec![0.0; channels]),
            running_var: be.upload(&vec![1.0; channels]),
        }
    }

    /// Batch statistics (and the running ones) in training, running ones otherwise.
    pub fn forward(
        &mut self,
        be: &B,
        s: &Nchw,
        x: &B::Buf,
        y: &mut B::Buf,
        batch: BatchStats<&mut B::Buf>,
        train: bool,
    ) {
        if !train {
            return self.forward_eval(be, s, x, y);
        }
        let p = WeightBias {
            w: &self.gamma.value,
            b: &self.beta.value,
        };
        let running = RunningStats {
            mean: &mut self.running_mean,
            var: &mut self.running_var,
        };
        let io = Forward { x, p, y };
        be.batchnorm2d_forward_train(&Self::shape(s), io, TrainStats { batch, running });
    }

    /// Evaluation mode: the running statistics.
    fn forward_eval(&self, be: &B, s: &Nchw, x: &B::Buf, y: &mut B::Buf) {
        let p = WeightBias {
            w: &self.gamma.value,
            b: &self.beta.value,
        };
        let running = RunningStats {
            mean: &self.running_mean,
            var: &self.running_var,
        };
        be.batchnorm2d_forward_eval(&Self::shape(s), Forward { x, p, y }, running);
    }

    /// The rest of a conv block after its conv: this batchnorm into `y` (kept for
    /// the backward), then ReLU and 2×2 max-pool into `pooled`. With `batch`
    /// (training: the batch statistics go there, the running ones are updated) one
    /// fused op, `batchnorm2d_relu_maxpool_train`; without, the running statistics,
    /// then `relu_maxpool2x2_forward`.
    pub fn forward_relu_pool(
        &mut self,
        be: &B,
        s: &Nchw,
        x: &B::Buf,
        y: &mut B::Buf,
        pooled: &mut B::Buf,
        batch: Option<BatchStats<&mut B::Buf>>,
    ) {
        let Some(batch) = batch else {
            self.forward_eval(be, s, x, y);
            return be.relu_maxpool2x2_forward(s, y, pooled);
        };
        let p = WeightBias {
            w: &self.gamma.value,
            b: &self.beta.value,
        };
        let running = RunningStats {
            mean: &mut self.running_mean,
            var: &mut self.running_var,
        };
        let io = Forward { x, p, y };
        let stats = TrainStats { batch, running };
        be.batchnorm2d_relu_maxpool_train(&Self::shape(s), io, pooled, stats);
    }

    /// Backward of `forward_relu_pool` in training, one fused op
    /// (`relu_maxpool_batchnorm2d_backward`): the pooled gradient `dpooled` through
    /// the pool and ReLU into `dn`, then through this batchnorm into `dx`; γ's and
    /// β's gradients written.
    pub fn backward_relu_pool(
        &mut self,
        be: &B,
        s: &Nchw,
        saved: BlockSaved<'_, B>,
        dpooled: &B::Buf,
        dn: &mut B::Buf,
        dx: &mut B::Buf,
    ) {
        let g = Grads {
            dx: Some(dx),
            dw: &mut self.gamma.grad,
            db: &mut self.beta.grad,
        };
        let io = Backward {
            x: saved.x,
            w: &self.gamma.value,
            dy: dpooled,
            g,
        };
        be.relu_maxpool_batchnorm2d_backward(s, io, saved.n, dn, saved.batch);
    }

    fn shape(s: &Nchw) -> BatchNorm2d {
        BatchNorm2d {
            shape: *s,
            momentum: BN_MOMENTUM,
            eps: BN_EPS,
        }
    }

    pub fn backward(
        &mut self,
        be: &B,
        s: &Nchw,
        x: &B::Buf,
        batch: BatchStats<&B::Buf>,
        dy: &B::Buf,
        dx: &mut B::Buf,
    ) {
        let g = Grads {
            dx: Some(dx),
            dw: &mut self.gamma.grad,
            db: &mut self.beta.grad,
        };
        let io = Backward {
            x,
            w: &self.gamma.value,
            dy,
            g,
        };
        be.batchnorm2d_backward(s, io, batch);
    }

    /// Backward of the evaluation-mode forward with respect to its input only:
    /// y = γ(x − μ)/√(σ² + eps) + β with the running μ, σ² is affine per channel, so
    /// dx = γ·dy/√(σ² + eps), which is the eval forward applied to dy with μ = 0 and
    /// β = 0 (no new op). What `sskernel explain` backpropagates through.
    pub fn backward_eval_input(&self, be: &B, s: &Nchw, dy: &B::Buf, dx: &mut B::Buf) {
        let bn = Self::shape(s);
        let zeros = be.zeros(s.channels);
        let p = WeightBias {
            w: &self.gamma.value,
            b: &zeros,
        };
        let running = RunningStats {
            mean: &zeros,
            var: &self.running_var,
        };
        be.batchnorm2d_forward_eval(&bn, Forward { x: dy, p, y: dx }, running);
    }
}
