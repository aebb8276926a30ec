//! A stack of convolution blocks — conv → batchnorm → ReLU → (2×2 max-pool) — in
//! front of a net's shared FC: VGG-16 for CIFAR-10, the 3-layer CNN for OmniGlot
//! (DESIGN.md §4). Its output is the last block's activation flattened, or its
//! global average (VGG's average-pool cut-off). Forward and backward are written out
//! block by block, as in `net.rs`.
//!
//! ```text
//! x [N, C, H, W] → block 0 → … → block k−1 → [N, C', H', W'] → flatten | GAP → [N, out]
//! block: conv (pad, stride 1) → c → bn → n → relu → r, or with a pool
//!        c → bn → n → relu+maxpool → p (bn, ReLU and pool one op in training)
//! ```

use super::layer::{BatchNorm, BlockSaved, Layer};
use super::Param;
use crate::backend::{Backend, BatchStats, Conv2dShape, Nchw};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One block: a square convolution with `out_channels` filters of side `kernel`,
/// `pad` zeros around (stride 1), batchnorm, ReLU, then a 2×2 max-pool if `pool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConvBlock {
    pub out_channels: usize,
    pub kernel: usize,
    pub pad: usize,
    pub pool: bool,
}

/// What becomes of the last block's activation `[N, C, H, W]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConvEnd {
    /// `[N, C·H·W]`, as stored.
    Flatten,
    /// `[N, C]`, the mean of each plane.
    GlobalAvgPool,
}

/// Every size of a conv stack: its input image and its blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConvStackSpec {
    /// `[channels, height, width]` of an input image.
    pub input: [usize; 3],
    pub blocks: Vec<ConvBlock>,
    pub end: ConvEnd,
}

impl ConvStackSpec {
    /// VGG-16's 13 conv layers (configuration D of Simonyan & Zisserman: 3×3, pad 1,
    /// widths 64-64-P-128-128-P-256×3-P-512×3-P-512×3-P) with batchnorm, ending in a
    /// global average pool instead of VGG's FC layers (the paper's cut-off).
    /// `width_div` divides every width (1: the paper's; tests use narrower nets).
    pub fn vgg16(input: [usize; 3], width_div: usize) -> Self {
        let groups: [(usize, usize); 5] = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)];
        let blocks = groups
            .iter()
            .flat_map(|&(width, layers)| {
                (0..layers).map(move |i| ConvBlock {
                    out_channels: (width / width_div).max(1),
                    kernel: 3,
                    pad: 1,
                    pool: i + 1 == layers,
                })
            })
            .collect();
        Self {
            input,
            blocks,
            end: ConvEnd::GlobalAvgPool,
        }
    }

    /// The OmniGlot CNN on 28×28 grey images: three 3×3 pad-1 blocks of 32, 64 and
    /// 64 filters, max-pooling after the first two (28 → 14 → 7), flattened:
    /// 64·7·7 = 3136 features.
    pub fn omniglot() -> Self {
        let block = |out_channels, pool| ConvBlock {
            out_channels,
            kernel: 3,
            pad: 1,
            pool,
        };
        Self {
            input: [1, 28, 28],
            blocks: vec![block(32, true), block(64, true), block(64, false)],
            end: ConvEnd::Flatten,
        }
    }

    /// Elements of one input image.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Each block's shapes for a batch of `n`, checking that every layer fits.
    pub fn shapes(&self, n: usize) -> Vec<BlockShapes> {
        let [mut c, mut h, mut w] = self.input;
        self.blocks
            .iter()
            .map(|b| {
                let conv = Conv2dShape {
                    batch: n,
                    in_channels: c,
                    out_channels: b.out_channels,
                    height: h,
                    width: w,
                    kernel: b.kernel,
                    pad: b.pad,
                    stride: 1,
                };
                assert!(
                    h + 2 * b.pad >= b.kernel && w + 2 * b.pad >= b.kernel,
                    "conv stack: a {h}×{w} input is smaller than a {k}×{k} kernel",
                    k = b.kernel
                );
                let act = Nchw {
                    batch: n,
                    channels: b.out_channels,
                    height: conv.out_height(),
                    width: conv.out_width(),
                };
                // An odd last row or column is dropped (PyTorch's floor mode).
                let out = if b.pool {
                    Nchw {
                        height: act.height / 2,
                        width: act.width / 2,
                        ..act
                    }
                } else {
                    act
                };
                (c, h, w) = (out.channels, out.height, out.width);
                BlockShapes { conv, act, out }
            })
            .collect()
    }

    /// Features per sample of the stack's output.
    pub fn out_features(&self) -> usize {
        let last = self.shapes(1).last().map(|s| s.out);
        match (last, self.end) {
            (None, _) => self.input_len(),
            (Some(o), ConvEnd::Flatten) => o.channels * o.height * o.width,
            (Some(o), ConvEnd::GlobalAvgPool) => o.channels,
        }
    }

    /// Trainable parameters: per block the conv's `k·k·cin·cout + cout` and
    /// batchnorm's `2·cout`.
    pub fn param_count(&self) -> usize {
        self.shapes(1)
            .iter()
            .map(|s| s.conv.w_len() + s.conv.out_channels + 2 * s.conv.out_channels)
            .sum()
    }
}

/// One block's shapes: its conv, its activation (conv, bn and relu outputs) and
/// its output (pooled or the activation itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShapes {
    pub conv: Conv2dShape,
    pub act: Nchw,
    pub out: Nchw,
}

struct Block<B: Backend> {
    conv: Layer<B>,
    bn: BatchNorm<B>,
    pool: bool,
}

/// The stack's parameters; its activations live in [`ConvActs`].
pub struct ConvStack<B: Backend> {
    pub spec: ConvStackSpec,
    blocks: Vec<Block<B>>,
    /// Checkpoint names of the running statistics, `[mean, var]` per block.
    running_names: Vec<[String; 2]>,
}

/// One block's buffers for a batch of up to the capacity: forward c → n → r (no
/// pool) or c → n → p (ReLU and pool fused) and the batch statistics; backward dout
/// (∂L/∂output) → dn → dc.
struct BlockActs<B: Backend> {
    pool: bool,
    c: B::Buf,
    n: B::Buf,
    /// relu(n), the output without a pool (empty with one).
    r: B::Buf,
    /// The pooled output (empty without a pool).
    p: B::Buf,
    mean: B::Buf,
    inv_std: B::Buf,
    dout: B::Buf,
    dn: B::Buf,
    dc: B::Buf,
}

impl<B: Backend> BlockActs<B> {
    fn out(&self) -> &B::Buf {
        if self.pool {
            &self.p
        } else {
            &self.r
        }
    }

    /// The output and its gradient, borrowed together.
    fn out_and_grad(&mut self) -> (&B::Buf, &mut B::Buf) {
        let out = if self.pool { &self.p } else { &self.r };
        (out, &mut self.dout)
    }
}

/// Every buffer of the stack for batches of up to `capacity`.
pub struct ConvActs<B: Backend> {
    blocks: Vec<BlockActs<B>>,
    /// The global average `[N, C]` and its gradient (empty when flattening).
    gap: B::Buf,
    dgap: B::Buf,
}

impl<B: Backend> ConvActs<B> {
    pub fn new(be: &B, spec: &ConvStackSpec, capacity: usize) -> Self {
        let shapes = spec.shapes(capacity);
        let blocks = spec
            .blocks
            .iter()
            .zip(&shapes)
            .map(|(b, s)| {
                let (act, chans) = (s.act.len(), s.act.channels);
                let (r, pooled) = if b.pool { (0, s.out.len()) } else { (act, 0) };
                BlockActs {
                    pool: b.pool,
                    c: be.zeros(act),
                    n: be.zeros(act),
                    r: be.zeros(r),
                    p: be.zeros(pooled),
                    mean: be.zeros(chans),
                    inv_std: be.zeros(chans),
                    dout: be.zeros(s.out.len()),
                    dn: be.zeros(act),
                    dc: be.zeros(act),
                }
            })
            .collect();
        let gap = match spec.end {
            ConvEnd::GlobalAvgPool => capacity * spec.out_features(),
            ConvEnd::Flatten => 0,
        };
        Self {
            blocks,
            gap: be.zeros(gap),
            dgap: be.zeros(gap),
        }
    }
}

impl<B: Backend> ConvStack<B> {
    /// Every conv initialised as PyTorch's nn.Conv2d, batchnorm γ = 1, β = 0;
    /// parameters named `{name}.{i}.conv.weight`, `{name}.{i}.bn.weight`, ….
    pub fn new(be: &B, name: &str, spec: ConvStackSpec, rng: &mut ChaCha8Rng) -> Self {
        let mut blocks = Vec::new();
        let mut running_names = Vec::new();
        for (i, (b, s)) in spec.blocks.iter().zip(spec.shapes(1)).enumerate() {
            let (cin, cout) = (s.conv.in_channels, s.conv.out_channels);
            let conv = Layer::conv(be, &format!("{name}.{i}.conv"), cin, cout, b.kernel, rng);
            let bn = BatchNorm::new(be, &format!("{name}.{i}.bn"), cout);
            blocks.push(Block {
                conv,
                bn,
                pool: b.pool,
            });
            running_names
                .push(["running_mean", "running_var"].map(|s| format!("{name}.{i}.bn.{s}")));
        }
        Self {
            spec,
            blocks,
            running_names,
        }
    }

    /// Forward of the first `n` images of `x` `[N, C, H, W]`; the output is
    /// [`Self::output`]. `train` selects batch statistics (updating the running
    /// ones) over the running ones.
    pub fn forward(&mut self, be: &B, a: &mut ConvActs<B>, x: &B::Buf, n: usize, train: bool) {
        let shapes = self.spec.shapes(n);
        for (i, (blk, s)) in self.blocks.iter_mut().zip(&shapes).enumerate() {
            let (done, rest) = a.blocks.split_at_mut(i);
            let input = done.last().map_or(x, BlockActs::out);
            let ba = &mut rest[0];
            be.conv2d_forward(&s.conv, blk.conv.forward_io(input, &mut ba.c));
            let stats = BatchStats {
                mean: &mut ba.mean,
                inv_std: &mut ba.inv_std,
            };
            if blk.pool {
                // bn → ReLU → pool: one fused op in training.
                let stats = train.then_some(stats);
                blk.bn
                    .forward_relu_pool(be, &s.act, &ba.c, &mut ba.n, &mut ba.p, stats);
            } else {
                blk.bn.forward(be, &s.act, &ba.c, &mut ba.n, stats, train);
                be.relu_forward(s.act.len(), &ba.n, &mut ba.r);
            }
        }
        if let (ConvEnd::GlobalAvgPool, Some(last)) = (self.spec.end, shapes.last()) {
            let top = a.blocks.last().expect("a shape per block");
            be.global_avgpool_forward(&last.out, top.out(), &mut a.gap);
        }
    }

    /// The last forward's output `[N, out_features]`.
    pub fn output<'a>(&self, a: &'a ConvActs<B>) -> &'a B::Buf {
        match self.spec.end {
            ConvEnd::GlobalAvgPool => &a.gap,
            ConvEnd::Flatten => a.blocks.last().expect("at least one block").out(),
        }
    }

    /// The output and where its gradient goes, for the layer that reads it (the
    /// shared FC: it reads the first and writes its input gradient into the second).
    pub fn output_and_grad<'a>(&self, a: &'a mut ConvActs<B>) -> (&'a B::Buf, &'a mut B::Buf) {
        match self.spec.end {
            ConvEnd::GlobalAvgPool => (&a.gap, &mut a.dgap),
            ConvEnd::Flatten => a
                .blocks
                .last_mut()
                .expect("at least one block")
                .out_and_grad(),
        }
    }

    /// Backward after `forward(train = true)`, from the output gradient written
    /// through [`Self::output_and_grad`]: every parameter's `grad` (overwritten).
    /// The input gradient is not computed (the images are not trained).
    pub fn backward(&mut self, be: &B, a: &mut ConvActs<B>, x: &B::Buf, n: usize) {
        let shapes = self.spec.shapes(n);
        if let (ConvEnd::GlobalAvgPool, Some(last)) = (self.spec.end, shapes.last()) {
            let top = a.blocks.last_mut().expect("a shape per block");
            be.global_avgpool_backward(&last.out, &a.dgap, &mut top.dout);
        }
        for i in (0..self.blocks.len()).rev() {
            let (done, rest) = a.blocks.split_at_mut(i);
            let (blk, s) = (&mut self.blocks[i], &shapes[i]);
            let ba = &mut rest[0];
            let stats = BatchStats {
                mean: &ba.mean,
                inv_std: &ba.inv_std,
            };
            if blk.pool {
                let saved = BlockSaved {
                    x: &ba.c,
                    n: &ba.n,
                    batch: stats,
                };
                blk.bn
                    .backward_relu_pool(be, &s.act, saved, &ba.dout, &mut ba.dn, &mut ba.dc);
            } else {
                be.relu_backward(s.act.len(), &ba.r, &ba.dout, &mut ba.dn);
                blk.bn
                    .backward(be, &s.act, &ba.c, stats, &ba.dn, &mut ba.dc);
            }
            let (input, dx) = match done.last_mut() {
                Some(prev) => {
                    let (out, dout) = prev.out_and_grad();
                    (out, Some(dout))
                }
                None => (x, None),
            };
            be.conv2d_backward(&s.conv, blk.conv.backward_io(input, &ba.dc, dx));
        }
    }

    pub fn params(&self) -> Vec<&Param<B>> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.conv.w, &b.conv.b, &b.bn.gamma, &b.bn.beta])
            .collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        self.blocks
            .iter_mut()
            .flat_map(|b| {
                [
                    &mut b.conv.w,
                    &mut b.conv.b,
                    &mut b.bn.gamma,
                    &mut b.bn.beta,
                ]
            })
            .collect()
    }

    /// The batchnorm running statistics under their checkpoint names.
    pub fn buffers(&self) -> Vec<(&str, &B::Buf)> {
        self.blocks
            .iter()
            .zip(&self.running_names)
            .flat_map(|(b, [m, v])| {
                [
                    (m.as_str(), &b.bn.running_mean),
                    (v.as_str(), &b.bn.running_var),
                ]
            })
            .collect()
    }

    pub fn buffers_mut(&mut self) -> Vec<(&str, &mut B::Buf)> {
        self.blocks
            .iter_mut()
            .zip(&self.running_names)
            .flat_map(|(b, [m, v])| {
                [
                    (m.as_str(), &mut b.bn.running_mean),
                    (v.as_str(), &mut b.bn.running_var),
                ]
            })
            .collect()
    }
}
