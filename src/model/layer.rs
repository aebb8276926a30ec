//! A layer with a weight and a bias, the building block of every net here.

use super::Param;
use crate::backend::{Backend, Grads, WeightBias};
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

    pub fn params(&self) -> WeightBias<&B::Buf> {
        WeightBias {
            w: &self.w.value,
            b: &self.b.value,
        }
    }

    /// What the backward reads (the weight) and where it writes (the parameters'
    /// gradients and `dx`).
    pub fn for_backward<'a>(
        &'a mut self,
        dx: Option<&'a mut B::Buf>,
    ) -> (&'a B::Buf, Grads<'a, B::Buf>) {
        let g = Grads {
            dx,
            dw: &mut self.w.grad,
            db: &mut self.b.grad,
        };
        (&self.w.value, g)
    }
}
