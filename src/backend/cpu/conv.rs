//! 2-D convolution (zero padding, any stride) as im2col + GEMM.
//!
//! Per image n (P = OH·OW output pixels, CRR = C·R·R patch length):
//! - `col[CRR, P]`, `col[(c·R + i)·R + j, oy·OW + ox] = x[n, c, oy·S+i−pad, ox·S+j−pad]`
//!   (0 in the padding; the valid stride-1 case copies whole rows)
//! - forward:          `y[n] (K×P)   = W (K×CRR) · col (CRR×P) + b`
//! - backward-data:    `dcol (CRR×P) = Wᵀ (CRR×K) · dy[n] (K×P)`, then col2im → dx[n]
//! - backward-weights: `dW (K×CRR)  = Σ_n dy[n] (K×P) · colᵀ (P×CRR)`, `db[k] = Σ_{n,p} dy[n, k, p]`
//!
//! Forward and backward-data run one group of images per rayon task, the group's
//! patch matrices side by side in one GEMM (`images_per_gemm`: one image unless
//! its P is small). The weight gradient is a
//! reduction over the batch: images are grouped into fixed chunks of
//! `images_per_part` (independent of the thread count); each chunk is one GEMM with k = images·P
//! over its stacked `colᵀ` and its images' dy side by side into its own partial, and
//! the partials are added in chunk order.
//!
//! Layouts (see `gemm` on packing): the forward reads W through a transposed copy
//! `Wᵀ[CRR, K]` (small); the weight gradient's B is `colᵀ[P, CRR]`, built so by
//! `im2col_t`, and its A is dy as stored (`[K, P]` rows, gathered cheaply).

use super::gemm::{gemm, transpose, Mat, Split};
use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{Backward, Conv2dShape, ConvOps, Forward};
use rayon::prelude::*;

/// Images per partial sum of the weight gradient, at least.
const IMG_CHUNK: usize = 8;

/// Fewest rows (the GEMM's k: images × P) of a weight-gradient partial: for small
/// P, more images per partial, so each is a real GEMM rather than a rank-32 update
/// of the whole `[K, CRR]` (the MNIST nets' P of 576 and 64 keep `IMG_CHUNK`).
const MIN_PART_ROWS: usize = 256;

/// Images per weight-gradient partial: a function of the shape only, so the
/// summation order does not depend on the thread count.
fn images_per_part(s: &Conv2dShape) -> usize {
    let p = s.out_height() * s.out_width();
    IMG_CHUNK.max(MIN_PART_ROWS.div_ceil(p.max(1)))
}

/// Fewest columns of a forward or backward-data GEMM: images are stacked side by
/// side until their output pixels reach it (VGG's 2×2 and 4×4 layers would make
/// matrix-vector products image by image). The MNIST nets' P of 576 and 64 keep
/// one image per GEMM.
const MIN_GEMM_COLS: usize = 64;

/// Images per forward / backward-data GEMM: a function of the shape only, so the
/// result does not depend on the thread count.
fn images_per_gemm(s: &Conv2dShape) -> usize {
    let p = s.out_height() * s.out_width();
    MIN_GEMM_COLS.div_ceil(p.max(1)).clamp(1, s.batch.max(1))
}

/// The input pixel that patch entry (i, j) of output (oy, ox) reads — `(iy, ix)`
/// of `[H, W]` — or None where it falls in the zero padding.
#[inline(always)]
fn source(s: &Conv2dShape, (oy, ox): (usize, usize), (i, j): (usize, usize)) -> Option<usize> {
    let iy = (oy * s.stride + i).checked_sub(s.pad)?;
    let ix = (ox * s.stride + j).checked_sub(s.pad)?;
    (iy < s.height && ix < s.width).then_some(iy * s.width + ix)
}

/// Stride 1: the outputs `o` (of `out` along a side of `len` inputs) whose tap `t`
/// reads inside the input, `[lo, hi)`; output o then reads input `o + t − pad`.
fn tap_span(len: usize, pad: usize, out: usize, t: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(t).min(out);
    let hi = (len + pad).saturating_sub(t).clamp(lo, out);
    (lo, hi)
}

/// Stride 1: the input row tap `i` of output row `oy` reads, None in the padding.
#[inline(always)]
fn tap_row(s: &Conv2dShape, oy: usize, i: usize) -> Option<usize> {
    (oy + i).checked_sub(s.pad).filter(|&iy| iy < s.height)
}

/// Every (c, i, j, oy, ox) in the order the patch matrix lists them, with the
/// pixel it reads: the strided im2col, im2col_t and col2im.
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

/// `dst = src` (equal lengths) in fixed 8-element moves plus a short tail. The
/// patch rows are short (conv2's 8 floats, conv1's 24), and `copy_from_slice`
/// called memmove for each: 2.7× slower on conv2's im2col (one core).
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    let (mut d8, mut s8) = (dst.chunks_exact_mut(8), src.chunks_exact(8));
    for (d, s) in (&mut d8).zip(&mut s8) {
        // As arrays: a slice copy of runtime length 8 would still call memmove.
        let s: &[T; 8] = s.try_into().expect("8 elements");
        <&mut [T; 8]>::try_from(d)
            .expect("8 elements")
            .clone_from(s);
    }
    for (d, &s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d = s;
    }
}

/// x_n: `[C, H, W]` → col: `[C·R·R, OH·OW]` (overwritten), row i at `col[i·ld..]`
/// (`ld` ≥ OH·OW: several images' patch matrices side by side).
fn im2col<T: Real>(s: &Conv2dShape, x_n: &[T], col: &mut [T], ld: usize) {
    if s.stride != 1 {
        for_each_tap(s, |crr, q, src| {
            col[crr * ld + q] = src.map_or(T::ZERO, |i| x_n[i])
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
                let row = &mut col[((c * r + i) * r + j) * ld..][..p];
                // Outputs (oy, ox) in [y_lo, y_hi) × [lo, hi) read inside x; the
                // rest of the row is padding.
                let (y_lo, y_hi) = tap_span(h, s.pad, oh, i);
                let (lo, hi) = tap_span(w, s.pad, ow, j);
                if y_lo > 0 || y_hi < oh {
                    row[..y_lo * ow].fill(T::ZERO);
                    row[y_hi * ow..].fill(T::ZERO);
                }
                if y_lo == y_hi || lo == hi {
                    row[y_lo * ow..y_hi * ow].fill(T::ZERO);
                    continue;
                }
                let first = (y_lo + i - s.pad) * w + lo + j - s.pad;
                let rows = row[y_lo * ow..y_hi * ow].chunks_exact_mut(ow).enumerate();
                if lo == 0 && hi == ow {
                    // No padding columns (always, unpadded): the common case,
                    // kept free of the slicing below (2× faster on conv2).
                    let src = &x_c[first..];
                    for (y, dst) in rows {
                        copy_short(dst, &src[y * w..][..ow]);
                    }
                    continue;
                }
                for (y, dst) in rows {
                    dst[..lo].fill(T::ZERO);
                    dst[hi..].fill(T::ZERO);
                    copy_short(&mut dst[lo..hi], &x_c[first + y * w..][..hi - lo]);
                }
            }
        }
    }
}

/// x_n: `[C, H, W]` → col_t: `[OH·OW, C·R·R]` (overwritten), the transpose of `im2col`.
fn im2col_t<T: Real>(s: &Conv2dShape, x_n: &[T], col_t: &mut [T]) {
    match (s.stride, s.kernel) {
        (1, 3) => im2col_t_stride1::<T, 3>(s, x_n, col_t),
        (1, 5) => im2col_t_stride1::<T, 5>(s, x_n, col_t),
        (1, _) => im2col_t_stride1::<T, 0>(s, x_n, col_t),
        _ => {
            let crr_n = s.in_channels * s.kernel * s.kernel;
            for_each_tap(s, |crr, q, src| {
                col_t[q * crr_n + crr] = src.map_or(T::ZERO, |i| x_n[i])
            });
        }
    }
}

/// `im2col_t` for stride 1. `R` is the kernel size when it is a compile-time
/// constant (0: read it from `s`): each patch row of a window is then one fixed-size
/// move, and a window inside the image is copied with no padding checks — this
/// was 5× faster than a checked, length-dispatched copy per row (conv2, one core).
fn im2col_t_stride1<T: Real, const R: usize>(s: &Conv2dShape, x_n: &[T], col_t: &mut [T]) {
    let (h, w) = (s.height, s.width);
    let r = if R > 0 { R } else { s.kernel };
    let (oh, ow) = (s.out_height(), s.out_width());
    let crr = s.in_channels * r * r;
    let taps = |dst: &mut [T], src: &[T]| {
        if R > 0 {
            let src: &[T; R] = src[..R].try_into().expect("R taps");
            <&mut [T; R]>::try_from(&mut dst[..R])
                .expect("R taps")
                .clone_from(src);
        } else {
            dst[..r].copy_from_slice(&src[..r]);
        }
    };
    for (q, row) in col_t[..oh * ow * crr].chunks_exact_mut(crr).enumerate() {
        let (oy, ox) = (q / ow, q % ow);
        let inside = oy >= s.pad && ox >= s.pad && oy + r <= h + s.pad && ox + r <= w + s.pad;
        if inside {
            let corner = (oy - s.pad) * w + ox - s.pad;
            for (c, row_c) in row.chunks_exact_mut(r * r).enumerate() {
                let x_c = &x_n[c * h * w + corner..];
                for (i, dst) in row_c.chunks_exact_mut(r).enumerate() {
                    taps(dst, &x_c[i * w..]);
                }
            }
            continue;
        }
        // Taps j in [lo, hi) read inside the row.
        let lo = s.pad.saturating_sub(ox).min(r);
        let hi = (w + s.pad).saturating_sub(ox).clamp(lo, r);
        for c in 0..s.in_channels {
            for i in 0..r {
                let dst = &mut row[(c * r + i) * r..][..r];
                let Some(iy) = tap_row(s, oy, i) else {
                    dst.fill(T::ZERO);
                    continue;
                };
                dst[..lo].fill(T::ZERO);
                dst[hi..].fill(T::ZERO);
                let src = &x_n[(c * h + iy) * w + ox + lo - s.pad..][..hi - lo];
                dst[lo..hi].copy_from_slice(src);
            }
        }
    }
}

/// col: `[C·R·R, OH·OW]`, row i at `col[i·ld..]` → dx_n: `[C, H, W]`, the sum of
/// every patch entry that reads each pixel (overwrites dx_n; fixed summation order).
fn col2im<T: Real>(s: &Conv2dShape, col: &[T], ld: usize, dx_n: &mut [T]) {
    let (h, w, r) = (s.height, s.width, s.kernel);
    let (oh, ow) = (s.out_height(), s.out_width());
    dx_n[..s.in_channels * h * w].fill(T::ZERO);
    if s.stride != 1 {
        for_each_tap(s, |crr, q, dst| {
            if let Some(i) = dst {
                dx_n[i] += col[crr * ld + q];
            }
        });
        return;
    }
    for c in 0..s.in_channels {
        let dx_c = &mut dx_n[c * h * w..(c + 1) * h * w];
        for i in 0..r {
            for j in 0..r {
                let row = &col[((c * r + i) * r + j) * ld..][..oh * ow];
                // As im2col: outputs in [y_lo, y_hi) × [lo, hi) read inside x.
                let (y_lo, y_hi) = tap_span(h, s.pad, oh, i);
                let (lo, hi) = tap_span(w, s.pad, ow, j);
                if y_lo == y_hi || lo == hi {
                    continue;
                }
                let first = (y_lo + i - s.pad) * w + lo + j - s.pad;
                for y in 0..y_hi - y_lo {
                    let src = &row[(y_lo + y) * ow + lo..][..hi - lo];
                    let dst = &mut dx_c[first + y * w..][..hi - lo];
                    for (d, &v) in dst.iter_mut().zip(src) {
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
    // Per group of G images: col [CRR, G·P] (image i's columns i·P…), then
    // out [K, G·P] = b + W · col, then out's image blocks into y [G, K, P]; one image
    // (G = 1, the MNIST nets) is its own out, written in place.
    let g_max = images_per_gemm(s);
    y[..s.y_len()]
        .par_chunks_mut(g_max * k * p)
        .enumerate()
        .for_each_init(
            || {
                let stacked = if g_max > 1 { k * g_max * p } else { 0 };
                (vec![T::ZERO; crr * g_max * p], vec![T::ZERO; stacked])
            },
            |(col, stacked), (group, y_g)| {
                let g = y_g.len() / (k * p);
                let ld = g * p;
                for i in 0..g {
                    let n = group * g_max + i;
                    im2col(s, &x[n * x_img..(n + 1) * x_img], &mut col[i * p..], ld);
                }
                let out = if g == 1 {
                    &mut *y_g
                } else {
                    &mut stacked[..k * ld]
                };
                for (out_k, &b_k) in out.chunks_mut(ld).zip(b) {
                    out_k.fill(b_k);
                }
                let col = Mat::row_major(&col[..crr * ld], crr, ld);
                gemm(T::ONE, w, col, T::ONE, out, ld, Split::Serial);
                if g > 1 {
                    for (i, y_n) in y_g.chunks_mut(k * p).enumerate() {
                        for (y_k, out_k) in y_n.chunks_mut(p).zip(stacked.chunks(ld)) {
                            y_k.copy_from_slice(&out_k[i * p..(i + 1) * p]);
                        }
                    }
                }
            },
        );
}

/// Backward-data. w: `[K, C, R, R]`, dy: `[N, K, OH, OW]` → dx: `[N, C, H, W]`.
/// Per group of G images (as the forward): dy's blocks side by side, dy_g [K, G·P],
/// then dcol [CRR, G·P] = Wᵀ · dy_g, then col2im of each image's columns.
fn backward_data<T: Real>(s: &Conv2dShape, w: &[T], dy: &[T], dx: &mut [T]) {
    debug_assert!(w.len() >= s.w_len() && dy.len() >= s.y_len() && dx.len() >= s.x_len());
    let (k, crr) = (s.out_channels, s.in_channels * s.kernel * s.kernel);
    let p = s.out_height() * s.out_width();
    let x_img = s.in_channels * s.height * s.width;
    if x_img == 0 {
        return;
    }
    let wt = Mat::row_major(&w[..k * crr], k, crr).t();
    let g_max = images_per_gemm(s);
    dx[..s.x_len()]
        .par_chunks_mut(g_max * x_img)
        .enumerate()
        .for_each_init(
            || {
                let stacked = if g_max > 1 { k * g_max * p } else { 0 };
                (vec![T::ZERO; stacked], vec![T::ZERO; crr * g_max * p])
            },
            |(dy_g, dcol), (group, dx_g)| {
                let g = dx_g.len() / x_img;
                let ld = g * p;
                let first = group * g_max;
                let dy_group = &dy[first * k * p..(first + g) * k * p];
                // One image: its dy [K, P] is already the operand.
                let dy_g = if g == 1 {
                    Mat::row_major(dy_group, k, p)
                } else {
                    for (i, dy_n) in dy_group.chunks(k * p).enumerate() {
                        for (row, dy_k) in dy_g.chunks_mut(ld).zip(dy_n.chunks(p)) {
                            row[i * p..(i + 1) * p].copy_from_slice(dy_k);
                        }
                    }
                    Mat::row_major(&dy_g[..k * ld], k, ld)
                };
                gemm(
                    T::ONE,
                    wt,
                    dy_g,
                    T::ZERO,
                    &mut dcol[..crr * ld],
                    ld,
                    Split::Serial,
                );
                for (i, dx_n) in dx_g.chunks_mut(x_img).enumerate() {
                    col2im(s, &dcol[i * p..], ld, dx_n);
                }
            },
        );
}

/// `sums[k] += Σ rows[k]` for the `[K, len]` rows, each row summed in order from
/// `Iterator::sum`'s identity (so the same bits as a `sum()` per row), but `ROWS`
/// rows side by side: one running sum is a chain of dependent adds (latency-bound,
/// ≈ 4 cycles each), independent chains run at throughput. conv1's bias gradient
/// (64 × 20 rows of 576) 0.65 → 0.25 ms a step (one core).
fn add_row_sums<T: Real>(sums: &mut [T], rows: &[T], len: usize) {
    const ROWS: usize = 4;
    let identity: T = std::iter::empty().sum();
    if len == 0 {
        sums.iter_mut().for_each(|s| *s += identity);
        return;
    }
    for (sums, block) in sums.chunks_mut(ROWS).zip(rows.chunks(ROWS * len)) {
        let mut acc = [identity; ROWS];
        if sums.len() == ROWS {
            // Rows as slices of known length: no bounds check in the loop.
            let rows: [&[T]; ROWS] = std::array::from_fn(|j| &block[j * len..][..len]);
            // Indexed: the zipped form measured 2× slower.
            #[allow(clippy::needless_range_loop)]
            for q in 0..len {
                for j in 0..ROWS {
                    acc[j] += rows[j][q];
                }
            }
        } else {
            for (a, row) in acc.iter_mut().zip(block.chunks(len)) {
                *a = row.iter().fold(identity, |s, &v| s + v);
            }
        }
        for (s, a) in sums.iter_mut().zip(acc) {
            *s += a;
        }
    }
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
    let per_part = images_per_part(s);
    let n_chunks = s.batch.div_ceil(per_part);
    // One partial [dW | db] per chunk of images.
    let mut parts = vec![T::ZERO; n_chunks * part_len];
    parts.par_chunks_mut(part_len).enumerate().for_each_init(
        || {
            let images = per_part.min(s.batch);
            (
                vec![T::ZERO; images * p * crr],
                vec![T::ZERO; images * p * k],
            )
        },
        |(col_t, dy_g), (chunk, part)| {
            let (pdw, pdb) = part.split_at_mut(w_len);
            let images = chunk * per_part..s.batch.min((chunk + 1) * per_part);
            let rows = images.len() * p;
            for (i, n) in images.enumerate() {
                im2col_t(s, &x[n * x_img..(n + 1) * x_img], &mut col_t[i * p * crr..]);
                let dy_n = &dy[n * k * p..(n + 1) * k * p];
                add_row_sums(pdb, dy_n, p);
                // dy_g [K, rows]: image i's [K, P] in columns i·P…
                for (row, dy_k) in dy_g.chunks_mut(rows).zip(dy_n.chunks(p)) {
                    row[i * p..(i + 1) * p].copy_from_slice(dy_k);
                }
            }
            // dW_chunk (K×CRR) = dy_g (K × rows) · [colᵀ_n…] (rows × CRR)
            let a = Mat::row_major(&dy_g[..k * rows], k, rows);
            let b = Mat::row_major(&col_t[..rows * crr], rows, crr);
            gemm(T::ONE, a, b, T::ZERO, pdw, crr, Split::for_tasks(n_chunks));
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

    /// `add_row_sums` gives `sum()`'s bits per row: random rows (a full block of
    /// four and a partial one), rows of −0.0 (the sum's identity decides the sign).
    #[test]
    fn row_sums_are_iterator_sums_bit_for_bit() {
        let mut g = rng(3);
        let len = 37;
        let mut rows = to_f32(&rand_vec(&mut g, 5 * len));
        rows[2 * len..3 * len].fill(-0.0);
        let start = [0.5f32, -0.0, -0.0, 2.0, 0.0];
        let mut got = start;
        add_row_sums(&mut got, &rows, len);
        let mut want = start;
        for (w, row) in want.iter_mut().zip(rows.chunks(len)) {
            *w += row.iter().copied().sum::<f32>();
        }
        assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits));
    }

    /// Odd sizes; several images per GEMM (P of 12 and 35: groups of 6 and 2 with
    /// a partial last group); batch 10 with P = 64 makes two weight-gradient
    /// partials (8 + 2 images); VGG's 3×3 pad 1, and strides 2 with and without
    /// padding (a window that ends early); 5×5 and 4×4 with padding (the fixed-size
    /// and the runtime-size patch copies, inside windows and edge windows).
    fn small_shapes() -> [Conv2dShape; 9] {
        [
            shape(3, 2, 3, 5, 7, 3),
            shape(10, 2, 2, 4, 5, 2),
            shape(10, 2, 3, 9, 9, 2),
            shape(2, 3, 2, 6, 5, 1),
            padded(shape(3, 2, 3, 5, 7, 3), 1, 1),
            padded(shape(2, 2, 3, 7, 6, 3), 1, 2),
            padded(shape(2, 3, 2, 6, 5, 2), 0, 2),
            padded(shape(2, 2, 3, 8, 7, 5), 2, 1),
            padded(shape(2, 2, 2, 7, 6, 4), 1, 1),
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
