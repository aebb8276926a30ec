//! ReLU and 2×2 max-pooling (stride 2), PyTorch semantics.

use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{Nchw, PoolOps};
use rayon::prelude::*;

/// Elements per rayon task for elementwise ops.
const ELEM_CHUNK: usize = 1 << 14;

/// The element of a window `[a b / c d]` (row-major) that holds its first maximum, as
/// a one-hot mask: a later element wins only if strictly greater, or NaN (as
/// PyTorch's CPU kernel). Element i is it iff it replaces the running best and no
/// later element does. Selects and bit operations only: on real activations the
/// comparisons are unpredictable, and both a branchy index and a store through
/// the index compiled to branches that mispredicted.
#[inline(always)]
fn window_first_max<T: Real>(v: [T; 4]) -> [bool; 4] {
    let take = |x: T, best: T| (x > best) | x.is_nan();
    let t1 = take(v[1], v[0]);
    let m1 = T::select(t1, v[1], v[0]);
    let t2 = take(v[2], m1);
    let m2 = T::select(t2, v[2], m1);
    let t3 = take(v[3], m2);
    [!(t1 | t2 | t3), t1 & !(t2 | t3), t2 & !t3, t3]
}

/// The value at `window_first_max(v)` (same rule, same bits), for the forward: a
/// select chain on values vectorises, while an index chain plus a load through it
/// compiled to branches (pool1 forward 1.06 ms → 0.07 ms, batch 64, 2-core dev
/// machine).
#[inline(always)]
fn window_max<T: Real>(v: [T; 4]) -> T {
    let mut best = v[0];
    for &x in &v[1..] {
        best = if (x > best) | x.is_nan() { x } else { best };
    }
    best
}

impl<T: Real> PoolOps for CpuOf<T> {
    /// x, y: `[len]`; `y = max(x, 0)`.
    fn relu_forward(&self, len: usize, x: &Vec<T>, y: &mut Vec<T>) {
        let _span = profile::span("relu_forward", || len.to_string());
        debug_assert!(x.len() >= len && y.len() >= len);
        y[..len]
            .par_chunks_mut(ELEM_CHUNK)
            .zip(x[..len].par_chunks(ELEM_CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = if x > T::ZERO { x } else { T::ZERO };
                }
            });
    }

    /// y, dy, dx: `[len]`; `dx = dy` where the forward output y > 0, else 0.
    fn relu_backward(&self, len: usize, y: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) {
        let _span = profile::span("relu_backward", || len.to_string());
        debug_assert!(y.len() >= len && dy.len() >= len && dx.len() >= len);
        dx[..len]
            .par_chunks_mut(ELEM_CHUNK)
            .zip(
                y[..len]
                    .par_chunks(ELEM_CHUNK)
                    .zip(dy[..len].par_chunks(ELEM_CHUNK)),
            )
            .for_each(|(dx, (y, dy))| {
                for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
                    *d = if y > T::ZERO { g } else { T::ZERO };
                }
            });
    }

    /// x: `[N, C, H, W]` → y: `[N, C, H/2, W/2]` (an odd last row/column is dropped, as
    /// PyTorch's floor mode does).
    fn maxpool2x2_forward(&self, s: &Nchw, x: &Vec<T>, y: &mut Vec<T>) {
        let _span = profile::span("maxpool2x2_forward", || s.to_string());
        maxpool_forward::<T, false>(s, x, y);
    }

    /// x, dx: `[N, C, H, W]`; dy: `[N, C, H/2, W/2]`. Routes each dy to the first
    /// element of its window that holds the maximum (recomputed from x); every other
    /// dx element is 0.
    fn maxpool2x2_backward(&self, s: &Nchw, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) {
        let _span = profile::span("maxpool2x2_backward", || s.to_string());
        maxpool_backward::<T, false>(s, x, dy, dx);
    }

    fn relu_maxpool2x2_forward(&self, s: &Nchw, x: &Vec<T>, y: &mut Vec<T>) {
        let _span = profile::span("relu_maxpool2x2_forward", || s.to_string());
        maxpool_forward::<T, true>(s, x, y);
    }

    fn relu_maxpool2x2_backward(&self, s: &Nchw, x: &Vec<T>, dy: &Vec<T>, dx: &mut Vec<T>) {
        let _span = profile::span("relu_maxpool2x2_backward", || s.to_string());
        maxpool_backward::<T, true>(s, x, dy, dx);
    }

    fn global_avgpool_forward(&self, s: &Nchw, x: &Vec<T>, y: &mut Vec<T>) {
        let _span = profile::span("global_avgpool_forward", || s.to_string());
        let (hw, planes) = (s.height * s.width, s.batch * s.channels);
        debug_assert!(x.len() >= s.len() && y.len() >= planes);
        let scale = T::from_f64((1.0f32 / hw.max(1) as f32) as f64);
        for (p, y) in y[..planes].iter_mut().enumerate() {
            let mut sum = T::ZERO;
            for &v in &x[p * hw..(p + 1) * hw] {
                sum += v;
            }
            *y = sum * scale;
        }
    }

    fn global_avgpool_backward(&self, s: &Nchw, dy: &Vec<T>, dx: &mut Vec<T>) {
        let _span = profile::span("global_avgpool_backward", || s.to_string());
        let (hw, planes) = (s.height * s.width, s.batch * s.channels);
        debug_assert!(dy.len() >= planes && dx.len() >= s.len());
        let scale = T::from_f64((1.0f32 / hw.max(1) as f32) as f64);
        for (p, dx_p) in dx[..s.len()].chunks_mut(hw.max(1)).enumerate().take(planes) {
            dx_p.fill(dy[p] * scale);
        }
    }
}

/// relu_forward's operation when RELU, else the identity.
#[inline(always)]
fn relu_if<T: Real, const RELU: bool>(x: T) -> T {
    T::select(!RELU | (x > T::ZERO), x, T::ZERO)
}

/// The max-pool forward (trait doc), of relu(x) when RELU: the window's values go
/// through relu_forward's operation as they are read, so the result is
/// relu_forward then the pool, bit for bit.
fn maxpool_forward<T: Real, const RELU: bool>(s: &Nchw, x: &[T], y: &mut [T]) {
    let (h, w) = (s.height, s.width);
    let (oh, ow) = (h / 2, w / 2);
    let planes = s.batch * s.channels;
    debug_assert!(x.len() >= s.len() && y.len() >= planes * oh * ow);
    if oh * ow == 0 {
        return;
    }
    y[..planes * oh * ow]
        .par_chunks_mut(oh * ow)
        .zip(x[..s.len()].par_chunks(h * w))
        .for_each(|(y_p, x_p)| {
            // Row pairs of x against rows of y, all as slices: no index arithmetic
            // or bounds checks in the inner loop.
            for (y_r, x_rr) in y_p.chunks_exact_mut(ow).zip(x_p.chunks_exact(2 * w)) {
                let (r0, r1) = x_rr.split_at(w);
                for ((y, a), b) in y_r
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    *y = window_max([a[0], a[1], b[0], b[1]].map(relu_if::<T, RELU>));
                }
            }
        });
}

/// Windows per block of [`windows_backward`].
const WINDOWS: usize = 8;

/// One row of windows: `x_rows` the two input rows (their first 2·len elements),
/// `dy_row` the len gradients, `dx_rows` the two output rows. Runs in blocks of
/// [`WINDOWS`] windows taken apart into one array per window position, the per-window
/// rule applied lane by lane, and put back: a loop over windows as they lie
/// (interleaved) compiled to scalar code whose selects LLVM turned into branches,
/// mispredicted on real activations (pool1 backward 3.2 → 0.8 ms, one core).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane-indexed loops: the form that vectorised
fn windows_backward<T: Real, const RELU: bool>(
    x_rows: [&[T]; 2],
    dy_row: &[T],
    dx_rows: [&mut [T]; 2],
) {
    let len = dy_row.len();
    let [r0, r1] = x_rows.map(|r| &r[..2 * len]);
    let [d0, d1] = dx_rows;
    let (d0, d1) = (&mut d0[..2 * len], &mut d1[..2 * len]);
    for b0 in (0..len).step_by(WINDOWS) {
        let n = WINDOWS.min(len - b0);
        // v[k][i]: window b0 + i's element k (row-major [a b / c d]).
        let mut v = [[T::ZERO; WINDOWS]; 4];
        let mut g = [T::ZERO; WINDOWS];
        for i in 0..n {
            let at = 2 * (b0 + i);
            v[0][i] = r0[at];
            v[1][i] = r0[at + 1];
            v[2][i] = r1[at];
            v[3][i] = r1[at + 1];
            g[i] = dy_row[b0 + i];
        }
        let mut out = [[T::ZERO; WINDOWS]; 4];
        for i in 0..WINDOWS {
            let x: [T; 4] = std::array::from_fn(|k| v[k][i]);
            let first = window_first_max(x.map(relu_if::<T, RELU>));
            // `&` and `|`, not `&&` / `||`: no branch on the data.
            for k in 0..4 {
                out[k][i] = T::select(first[k] & (!RELU | (x[k] > T::ZERO)), g[i], T::ZERO);
            }
        }
        for i in 0..n {
            let at = 2 * (b0 + i);
            d0[at] = out[0][i];
            d0[at + 1] = out[1][i];
            d1[at] = out[2][i];
            d1[at + 1] = out[3][i];
        }
    }
}

/// The max-pool backward (trait doc); when RELU, x is the fused ReLU's input: the
/// windows are of relu(x), and dx is 0 where x is not > 0 (relu_backward's rule,
/// since relu(x) > 0 exactly where x > 0).
fn maxpool_backward<T: Real, const RELU: bool>(s: &Nchw, x: &[T], dy: &[T], dx: &mut [T]) {
    let (h, w) = (s.height, s.width);
    let (oh, ow) = (h / 2, w / 2);
    let planes = s.batch * s.channels;
    debug_assert!(x.len() >= s.len() && dx.len() >= s.len());
    debug_assert!(dy.len() >= planes * oh * ow);
    if oh * ow == 0 {
        dx[..s.len()].fill(T::ZERO);
        return;
    }
    dx[..s.len()]
        .par_chunks_mut(h * w)
        .zip(x[..s.len()].par_chunks(h * w))
        .zip(dy[..planes * oh * ow].par_chunks(oh * ow))
        .for_each(|((dx_p, x_p), dy_p)| {
            // Every element of each window written, dy or 0, in row order: no
            // zero-fill pass and no store through a computed index.
            for ((dx_rr, x_rr), dy_r) in dx_p
                .chunks_exact_mut(2 * w)
                .zip(x_p.chunks_exact(2 * w))
                .zip(dy_p.chunks_exact(ow))
            {
                let (d0, d1) = dx_rr.split_at_mut(w);
                let (r0, r1) = x_rr.split_at(w);
                windows_backward::<T, RELU>([r0, r1], dy_r, [&mut *d0, &mut *d1]);
                if w % 2 == 1 {
                    d0[w - 1] = T::ZERO;
                    d1[w - 1] = T::ZERO;
                }
            }
            if h % 2 == 1 {
                dx_p[(h - 1) * w..].fill(T::ZERO);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Cpu, Cpu64};
    use super::*;

    #[test]
    fn relu_forward_backward() {
        let mut g = rng(4);
        let len = 3 * ELEM_CHUNK + 17; // several chunks, ragged end
        let x = rand_vec(&mut g, len); // |x| ≥ 0.1: no kink within FD_H
        let r = rand_vec(&mut g, len);
        let mut y = poisoned(len + 3);
        Cpu64.relu_forward(len, &x, &mut y);
        assert!(y[..len].iter().zip(&x).all(|(&y, &x)| y == x.max(0.0)));
        assert!(y[len..].iter().all(|v| v.is_nan()));
        let mut dx = poisoned(len);
        Cpu64.relu_backward(len, &y, &r, &mut dx);
        // FD on a prefix (the op is elementwise).
        let n = 300;
        let fx = fd_grad(&x[..n], FD_H, |x| {
            let mut y = vec![0.0; n];
            Cpu64.relu_forward(n, &x.to_vec(), &mut y);
            dot(&r[..n], &y)
        });
        assert!(rel_err(&dx[..n], &fx) < GRAD_TOL);
        assert!(dx.iter().all(|v| !v.is_nan()));
    }

    #[test]
    fn maxpool_forward_and_finite_differences() {
        for s in [nchw(3, 2, 6, 8), nchw(2, 3, 5, 7), nchw(1, 1, 2, 2)] {
            let mut g = rng(8);
            let x = rand_vec(&mut g, s.len());
            let (oh, ow) = (s.height / 2, s.width / 2);
            let ylen = s.batch * s.channels * oh * ow;
            let r = rand_vec(&mut g, ylen);
            let mut y = poisoned(ylen);
            Cpu64.maxpool2x2_forward(&s, &x, &mut y);
            for p in 0..s.batch * s.channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = |i: usize, j: usize| {
                            x[(p * s.height + 2 * oy + i) * s.width + 2 * ox + j]
                        };
                        let m = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                        assert_eq!(y[(p * oh + oy) * ow + ox], m);
                    }
                }
            }
            let mut dx = poisoned(s.len());
            Cpu64.maxpool2x2_backward(&s, &x, &r, &mut dx);
            let fx = fd_grad(&x, FD_H, |x| {
                let mut y = vec![0.0; ylen];
                Cpu64.maxpool2x2_forward(&s, &x.to_vec(), &mut y);
                dot(&r, &y)
            });
            assert!(rel_err(&dx, &fx) < GRAD_TOL, "{s:?}");
        }
    }

    #[test]
    fn maxpool_ties_go_to_the_first_maximum() {
        let s = nchw(1, 1, 2, 6);
        // Windows (row-major): [1 3 / 3 2], [5 5 / 5 5], [0 -1 / 2 2].
        let x = vec![
            1.0f32, 3.0, 5.0, 5.0, 0.0, -1.0, 3.0, 2.0, 5.0, 5.0, 2.0, 2.0,
        ];
        let mut y = poisoned(3);
        Cpu.maxpool2x2_forward(&s, &x, &mut y);
        assert_eq!(y, [3.0, 5.0, 2.0]);
        let mut dx = poisoned(12);
        Cpu.maxpool2x2_backward(&s, &x, &vec![10.0, 20.0, 30.0], &mut dx);
        let want = [
            0.0, 10.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 30.0, 0.0,
        ];
        assert_eq!(dx, want);
    }

    /// Both backwards (plain and with the fused ReLU) against a per-window loop
    /// with PyTorch's index rule, on rows of more than one block of windows (odd
    /// sizes, ties and non-positive values included).
    #[test]
    fn maxpool_backward_is_the_per_window_rule() {
        let s = nchw(2, 3, 7, 2 * WINDOWS + 5);
        let mut g = rng(9);
        // Values on a coarse grid: ties, zeros and negatives are common.
        let x: Vec<f32> = rand_vec(&mut g, s.len())
            .iter()
            .map(|v| (v * 3.0).round() as f32)
            .collect();
        let (oh, ow) = (s.height / 2, s.width / 2);
        let dy = to_f32(&rand_vec(&mut g, s.batch * s.channels * oh * ow));
        for relu in [false, true] {
            let mut want = vec![0.0f32; s.len()];
            for p in 0..s.batch * s.channels {
                for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                    let at = |k: usize| (p * s.height + 2 * oy + k / 2) * s.width + 2 * ox + k % 2;
                    let val = |k: usize| if relu { x[at(k)].max(0.0) } else { x[at(k)] };
                    let mut best = 0;
                    for k in 1..4 {
                        if val(k) > val(best) || val(k).is_nan() {
                            best = k;
                        }
                    }
                    if !relu || x[at(best)] > 0.0 {
                        want[at(best)] = dy[(p * oh + oy) * ow + ox];
                    }
                }
            }
            let mut dx = poisoned(s.len());
            if relu {
                Cpu.relu_maxpool2x2_backward(&s, &x, &dy, &mut dx);
            } else {
                Cpu.maxpool2x2_backward(&s, &x, &dy, &mut dx);
            }
            assert!(same_bits(&dx, &want), "relu {relu}");
        }
    }

    /// The one-hot mask against PyTorch's loop (`val > max || isnan(val)` moves the
    /// index) on every window over {NaN, 0, 1, 2}: ties, NaNs first and last.
    #[test]
    fn window_first_max_is_pytorchs_index_on_every_window() {
        let vals = [f32::NAN, 0.0, 1.0, 2.0];
        for code in 0..4usize.pow(4) {
            let v: [f32; 4] = std::array::from_fn(|i| vals[code / 4usize.pow(i as u32) % 4]);
            let (mut best, mut at) = (v[0], 0);
            for (i, &x) in v.iter().enumerate().skip(1) {
                if x > best || x.is_nan() {
                    (best, at) = (x, i);
                }
            }
            let want: [bool; 4] = std::array::from_fn(|i| i == at);
            assert_eq!(window_first_max(v), want, "{v:?}");
        }
    }

    /// The mean of each plane, and its gradient against central differences.
    #[test]
    fn global_avgpool_forward_and_finite_differences() {
        for s in [nchw(3, 2, 5, 7), nchw(2, 3, 1, 1), nchw(1, 4, 2, 2)] {
            let mut g = rng(21);
            let x = rand_vec(&mut g, s.len());
            let planes = s.batch * s.channels;
            let r = rand_vec(&mut g, planes);
            let mut y = poisoned(planes);
            Cpu64.global_avgpool_forward(&s, &x, &mut y);
            let hw = s.height * s.width;
            for p in 0..planes {
                let want = x[p * hw..(p + 1) * hw].iter().sum::<f64>() / hw as f64;
                assert!((y[p] - want).abs() < 1e-6 * want.abs().max(1.0), "{s:?}");
            }
            let mut dx = poisoned(s.len());
            Cpu64.global_avgpool_backward(&s, &r, &mut dx);
            let fx = fd_grad(&x, FD_H, |x| {
                let mut y = vec![0.0; planes];
                Cpu64.global_avgpool_forward(&s, &x.to_vec(), &mut y);
                dot(&r, &y)
            });
            // The scale is 1/(H·W) in f32 (as the kernel): within its rounding.
            assert!(rel_err(&dx, &fx) < 1e-6, "{s:?}");
        }
    }
}
