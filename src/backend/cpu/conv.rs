//! Valid, stride-1 2-D convolution as im2col + GEMM.
//!
//! Per image n (P = OH·OW output pixels, CRR = C·R·R patch length):
//! - `col[CRR, P]`, `col[(c·R + i)·R + j, oy·OW + ox] = x[n, c, oy+i, ox+j]`
//! - forward:          `y[n] (K×P)   = W (K×CRR) · col (CRR×P) + b`
//! - backward-data:    `dcol (CRR×P) = Wᵀ (CRR×K) · dy[n] (K×P)`, then col2im → dx[n]
//! - backward-weights: `dW (K×CRR)  = Σ_n dy[n] (K×P) · colᵀ (P×CRR)`, `db[k] = Σ_{n,p} dy[n, k, p]`
//!
//! Forward and backward-data run one image per rayon task. The weight gradient is a
//! reduction over the batch: images are grouped into fixed chunks of `IMG_CHUNK`
//! (independent of the thread count); each chunk is one GEMM with k = IMG_CHUNK·P
//! over its stacked `colᵀ` and `dyᵀ` into its own partial, and the partials are
//! added in chunk order.
//!
//! Layouts are chosen so matrixmultiply packs both operands by plain copies (A
//! column-major, B row-major; see `gemm`): the forward reads W through a transposed
//! copy `Wᵀ[CRR, K]`, the weight gradient uses `colᵀ[P, CRR]` and `dyᵀ[P, K]`.

use super::gemm::{gemm, transpose, Mat, Split};
use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{Backward, Conv2dShape, ConvOps, Forward};
use rayon::prelude::*;

/// Images per partial sum of the weight gradient.
const IMG_CHUNK: usize = 8;

/// The input pixel that patch entry (i, j) of output (oy, ox) reads — `(iy, ix)`
/// of `[H, W]` — or None where it falls in the zero padding.
#[inline(always)]
fn source(s: &Conv2dShape, (oy, ox): (usize, usize), (i, j): (usize, usize)) -> Option<usize> {
    let iy = (oy * s.stride + i).checked_sub(s.pad)?;
    let ix = (ox * s.stride + j).checked_sub(s.pad)?;
    (iy < s.height && ix < s.width).then_some(iy * s.width + ix)
}

/// Every (c, i, j, oy, ox) in the order the patch matrix lists them, with the
/// pixel it reads: the general (padded, strided) im2col, im2col_t and col2im.
fn for_each_tap(s: &Conv2dShape, mut f: impl FnMut(usize, usize, Option<usize>)) {
    let (r, ow, p) = (s.kernel, s.out_width(), s.out_height() * s.out_width());
    for c in 0..s.in_channels {
        for ij in 0..r * r {
            for q in 0..p {
                let pixel = source(s, (q / ow, q % ow), (ij / r, ij % r));
                f(
                    c * r * r + ij,
                    q,
                    pixel.map(|px| c * s.height * s.width + px),
                );
            }
        }
    }
}

/// x_n: `[C, H, W]` → col: `[C·R·R, OH·OW]` (overwritten).
fn im2col<T: Real>(s: &Conv2dShape, x_n: &[T], col: &mut [T]) {
    if !s.is_valid_unit_stride() {
        let p = s.out_height() * s.out_width();
        for_each_tap(s, |crr, q, src| {
            col[crr * p + q] = src.map_or(T::ZERO, |i| x_n[i])
        });
        return;
    }
    let (h, w, r) = (s.height, s.width, s.kernel);
    let (oh, ow) = (s.out_height(), s.out_width());
    let p = oh * ow;
    for c in 0..s.in_channels {
        let x_c = &x_n[c * h * w..(c + 1) * h * w];
        for i in 0..r {
            for j in 0..r {
                let row = &mut col[((c * r + i) * r + j) * p..][..p];
                for oy in 0..oh {
                    row[oy * ow..(oy + 1) * ow].copy_from_slice(&x_c[(oy + i) * w + j..][..ow]);
                }
            }
        }
    }
}

/// x_n: `[C, H, W]` → col_t: `[OH·OW, C·R·R]` (overwritten), the transpose of `im2col`.
fn im2col_t<T: Real>(s: &Conv2dShape, x_n: &[T], col_t: &mut [T]) {
    if !s.is_valid_unit_stride() {
        let crr_n = s.in_channels * s.kernel * s.kernel;
        for_each_tap(s, |crr, q, src| {
            col_t[q * crr_n + crr] = src.map_or(T::ZERO, |i| x_n[i])
        });
        return;
    }
    let (h, w, r) = (s.height, s.width, s.kernel);
    let (oh, ow) = (s.out_height(), s.out_width());
    let crr = s.in_channels * r * r;
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut col_t[(oy * ow + ox) * crr..][..crr];
            for c in 0..s.in_channels {
                for i in 0..r {
                    let src = &x_n[(c * h + oy + i) * w + ox..][..r];
                    row[(c * r + i) * r..][..r].copy_from_slice(src);
                }
            }
        }
    }
}

/// col: `[C·R·R, OH·OW]` → dx_n: `[C, H, W]`, the sum of every patch entry that reads
/// each pixel (overwrites dx_n; fixed summation order).
fn col2im<T: Real>(s: &Conv2dShape, col: &[T], dx_n: &mut [T]) {
    let (h, w, r) = (s.height, s.width, s.kernel);
    let (oh, ow) = (s.out_height(), s.out_width());
    let p = oh * ow;
    dx_n[..s.in_channels * h * w].fill(T::ZERO);
    if !s.is_valid_unit_stride() {
        for_each_tap(s, |crr, q, dst| {
            if let Some(i) = dst {
                dx_n[i] += col[crr * p + q];
            }
        });
        return;
    }
    for c in 0..s.in_channels {
        let dx_c = &mut dx_n[c * h * w..(c + 1) * h * w];
        for i in 0..r {
            for j in 0..r {
                let row = &col[((c * r + i) * r + j) * p..][..p];
                for oy in 0..oh {
                    let dst = &mut dx_c[(oy + i) * w + j..][..ow];
                    for (d, &v) in dst.iter_mut().zip(&row[oy * ow..(oy + 1) * ow]) {
                        *d += v;
                    }
                }
            }
        }
    }
}

fn forward<T: Real>(s: &Conv2dShape, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    debug_assert!(x.len() >= s.x_len() && w.len() >= s.w_len() && y.len() >= s.y_len());
    debug_assert!(b.len() >= s.out_channels);
    let (k, crr) = (s.out_channels, s.in_channels * s.kernel * s.kernel);
    let p = s.out_height() * s.out_width();
    let x_img = s.in_channels * s.height * s.width;
    if p == 0 || k == 0 {
        return;
    }
    // Wᵀ[CRR, K], so that A = W is column-major.
    let mut w_t = vec![T::ZERO; crr * k];
    transpose(&w[..k * crr], k, crr, &mut w_t);
    let w = Mat::row_major(&w_t, crr, k).t();
    y[..s.y_len()]
        .par_chunks_mut(k * p)
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; crr * p],
            |col, (n, y_n)| {
                im2col(s, &x[n * x_img..(n + 1) * x_img], col);
                for (y_k, &b_k) in y_n.chunks_mut(p).zip(b) {
                    y_k.fill(b_k);
                }
                gemm(
                    T::ONE,
                    w,
                    Mat::row_major(col, crr, p),
                    T::ONE,
                    y_n,
                    p,
                    Split::Serial,
                );
            },
        );
}

/// Backward-data. w: `[K, C, R, R]`, dy: `[N, K, OH, OW]` → dx: `[N, C, H, W]`.
fn backward_data<T: Real>(s: &Conv2dShape, w: &[T], dy: &[T], dx: &mut [T]) {
    debug_assert!(w.len() >= s.w_len() && dy.len() >= s.y_len() && dx.len() >= s.x_len());
    let (k, crr) = (s.out_channels, s.in_channels * s.kernel * s.kernel);
    let p = s.out_height() * s.out_width();
    let x_img = s.in_channels * s.height * s.width;
    if x_img == 0 {
        return;
    }
    let wt = Mat::row_major(&w[..k * crr], k, crr).t();
    dx[..s.x_len()]
        .par_chunks_mut(x_img)
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; crr * p],
            |dcol, (n, dx_n)| {
                let dy_n = Mat::row_major(&dy[n * k * p..(n + 1) * k * p], k, p);
                gemm(T::ONE, wt, dy_n, T::ZERO, dcol, p, Split::Serial);
                col2im(s, dcol, dx_n);
            },
        );
}

/// Backward-weights. x: `[N, C, H, W]`, dy: `[N, K, OH, OW]` → dw: `[K, C, R, R]`, db: `[K]`.
fn backward_weights<T: Real>(s: &Conv2dShape, x: &[T], dy: &[T], dw: &mut [T], db: &mut [T]) {
    debug_assert!(x.len() >= s.x_len() && dy.len() >= s.y_len());
    debug_assert!(dw.len() >= s.w_len() && db.len() >= s.out_channels);
    let (k, crr) = (s.out_channels, s.in_channels * s.kernel * s.kernel);
    let p = s.out_height() * s.out_width();
    let x_img = s.in_channels * s.height * s.width;
    let w_len = k * crr;
    let part_len = w_len + k;
    let n_chunks = s.batch.div_ceil(IMG_CHUNK);
    // One partial [dW | db] per chunk of images.
    let mut parts = vec![T::ZERO; n_chunks * part_len];
    parts.par_chunks_mut(part_len).enumerate().for_each_init(
        || {
            (
                vec![T::ZERO; IMG_CHUNK * p * crr],
                vec![T::ZERO; IMG_CHUNK * p * k],
            )
        },
        |(col_t, dy_t), (chunk, part)| {
            let (pdw, pdb) = part.split_at_mut(w_len);
            let images = chunk * IMG_CHUNK..s.batch.min((chunk + 1) * IMG_CHUNK);
            let rows = images.len() * p;
            for (i, n) in images.enumerate() {
                im2col_t(s, &x[n * x_img..(n + 1) * x_img], &mut col_t[i * p * crr..]);
                let dy_n = &dy[n * k * p..(n + 1) * k * p];
                for (d, dy_k) in pdb.iter_mut().zip(dy_n.chunks(p)) {
                    *d += dy_k.iter().copied().sum::<T>();
                }
                transpose(dy_n, k, p, &mut dy_t[i * p * k..(i + 1) * p * k]);
            }
            // dW_chunk (K×CRR) = [dy_n…] (K × rows) · [colᵀ_n…] (rows × CRR)
            let a = Mat::row_major(&dy_t[..rows * k], rows, k).t();
            let b = Mat::row_major(&col_t[..rows * crr], rows, crr);
            gemm(T::ONE, a, b, T::ZERO, pdw, crr, Split::Serial);
        },
    );
    let (dw, db) = (&mut dw[..w_len], &mut db[..k]);
    dw.fill(T::ZERO);
    db.fill(T::ZERO);
    for part in parts.chunks(part_len) {
        for (d, &v) in dw.iter_mut().chain(db.iter_mut()).zip(part) {
            *d += v;
        }
    }
}

impl<T: Real> ConvOps for CpuOf<T> {
    fn conv2d_forward(&self, s: &Conv2dShape, Forward { x, p, y }: Forward<Vec<T>>) {
        let _span = profile::span("conv2d_forward", || s.to_string());
        forward(s, x, p.w, p.b, y);
    }

    fn conv2d_backward(&self, s: &Conv2dShape, Backward { x, w, dy, g }: Backward<Vec<T>>) {
        let _span = profile::span("conv2d_backward", || s.to_string());
        if let Some(dx) = g.dx {
            backward_data(s, w, dy, dx);
        }
        backward_weights(s, x, dy, g.dw, g.db);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn shape(batch: usize, c: usize, k: usize, h: usize, w: usize, r: usize) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_channels: c,
            out_channels: k,
            height: h,
            width: w,
            kernel: r,
            pad: 0,
            stride: 1,
        }
    }

    /// The same with padding and stride.
    fn padded(s: Conv2dShape, pad: usize, stride: usize) -> Conv2dShape {
        Conv2dShape { pad, stride, ..s }
    }

    /// Direct 7-deep loop.
    fn naive_forward(s: &Conv2dShape, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (c_, h, w_, r) = (s.in_channels, s.height, s.width, s.kernel);
        let (oh, ow) = (s.out_height(), s.out_width());
        let mut y = vec![0.0; s.y_len()];
        for n in 0..s.batch {
            for k in 0..s.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = b[k];
                        for c in 0..c_ {
                            for i in 0..r {
                                for j in 0..r {
                                    // Signed: the window may start in the padding.
                                    let iy = (oy * s.stride + i) as isize - s.pad as isize;
                                    let ix = (ox * s.stride + j) as isize - s.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w_ as isize {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    acc += x[((n * c_ + c) * h + iy) * w_ + ix]
                                        * w[((k * c_ + c) * r + i) * r + j];
                                }
                            }
                        }
                        y[((n * s.out_channels + k) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    impl WeightBiasLayer for Conv2dShape {
        fn run_forward<T: Real>(&self, io: Forward<V<T>>) {
            CpuOf::<T>::default().conv2d_forward(self, io)
        }
        fn lens(&self) -> [usize; 4] {
            [self.x_len(), self.w_len(), self.out_channels, self.y_len()]
        }
        fn run_backward<T: Real>(&self, io: Backward<V<T>>) {
            CpuOf::<T>::default().conv2d_backward(self, io)
        }
    }

    /// Odd sizes; batch 10 > IMG_CHUNK exercises several partial sums; VGG's 3×3
    /// pad 1, and strides 2 with and without padding (a window that ends early).
    fn small_shapes() -> [Conv2dShape; 6] {
        [
            shape(3, 2, 3, 5, 7, 3),
            shape(10, 2, 2, 4, 5, 2),
            shape(2, 3, 2, 6, 5, 1),
            padded(shape(3, 2, 3, 5, 7, 3), 1, 1),
            padded(shape(2, 2, 3, 7, 6, 3), 1, 2),
            padded(shape(2, 3, 2, 6, 5, 2), 0, 2),
        ]
    }

    // f32 vs f64: sums of ≤ 500 products, within the 1e-5 of check_forward.
    weight_bias_layer_tests! {
        forward: small_shapes()
            .into_iter()
            .chain([shape(4, 3, 5, 9, 8, 5), shape(2, 20, 40, 12, 12, 5)]),
        naive: naive_forward,
        backward: small_shapes(),
        deterministic: shape(19, 3, 8, 14, 13, 5),
    }
}
