//! Batches from a split kept in device buffers (the twin of kernels/data.cu): the
//! same rows and one-hot targets `train::Inputs::gather` builds on the host.

use super::real::Real;
use super::CpuOf;
use crate::backend::profile;
use crate::backend::{DataBufs, DataOps, Gather};

/// A float that holds an index (order, label, offset), as an index.
fn index<T: Real>(v: T) -> usize {
    v.to_f64() as usize
}

impl<T: Real> DataOps for CpuOf<T> {
    fn gather_batch(
        &self,
        &Gather {
            batch,
            size,
            classes,
        }: &Gather,
        data: DataBufs<Vec<T>>,
        x: &mut Vec<T>,
        targets: &mut Vec<T>,
    ) {
        let _span = profile::span("gather_batch", || format!("{batch}×{size}"));
        let off = index(data.state[0]);
        for r in 0..batch {
            let i = index(data.order[off + r]);
            x[r * size..(r + 1) * size].copy_from_slice(&data.pixels[i * size..(i + 1) * size]);
            let row = &mut targets[r * classes..(r + 1) * classes];
            row.fill(T::ZERO);
            row[index(data.labels[i])] = T::ONE;
        }
    }

    fn advance_batch(
        &self,
        (tasks, batch): (usize, usize),
        loss: &Vec<T>,
        state: &mut Vec<T>,
        log: &mut Vec<T>,
    ) {
        let _span = profile::span("advance_batch", || tasks.to_string());
        let s = index(state[1]);
        log[s * tasks..(s + 1) * tasks].copy_from_slice(&loss[..tasks]);
        state[0] = T::from_f64((index(state[0]) + batch) as f64);
        state[1] = T::from_f64((s + 1) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Cpu;
    use super::*;
    use crate::backend::Memory;

    /// Two batches through gather and advance give the rows and one-hots of the
    /// order's samples, and the losses in the log, step after step.
    #[test]
    fn gathers_the_ordered_rows_and_logs_the_losses() {
        let (len, size, classes, batch) = (7, 3, 4, 2);
        let pixels: Vec<f32> = (0..len * size).map(|v| v as f32 + 0.5).collect();
        let labels: Vec<f32> = (0..len).map(|i| (i % classes) as f32).collect();
        let order: Vec<f32> = [6, 2, 5, 0, 1, 3, 4].map(|i| i as f32).to_vec();
        let (mut state, mut log) = (vec![0.0f32; 2], vec![f32::NAN; 2 * 2]);
        let g = Gather {
            batch,
            size,
            classes,
        };
        for step in 0..2 {
            let (mut x, mut t) = (
                vec![f32::NAN; batch * size],
                vec![f32::NAN; batch * classes],
            );
            let data = DataBufs {
                pixels: &pixels,
                labels: &labels,
                order: &order,
                state: &state,
            };
            Cpu.gather_batch(&g, data, &mut x, &mut t);
            for r in 0..batch {
                let i = order[step * batch + r] as usize;
                assert_eq!(
                    x[r * size..(r + 1) * size],
                    pixels[i * size..(i + 1) * size]
                );
                let hot: Vec<f32> = (0..classes)
                    .map(|c| (c == i % classes) as u8 as f32)
                    .collect();
                assert_eq!(t[r * classes..(r + 1) * classes], hot[..]);
            }
            let loss = Cpu.upload(&[step as f32 + 0.25, -1.0]);
            Cpu.advance_batch((2, batch), &loss, &mut state, &mut log);
        }
        assert_eq!(state, [4.0, 2.0]);
        assert_eq!(log, [0.25, -1.0, 1.25, -1.0]);
    }
}
