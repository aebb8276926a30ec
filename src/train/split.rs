//! A split on the device (issue 13): the data uploaded once, the epoch's order and
//! cursor, the per-step loss log, and the host's reading of that log at the
//! progress bar's cadence instead of after every step.

use super::{progress::EpochBar, resume::Progress, Inputs};
use crate::backend::{Backend, DataBufs, Gather, DATA_STATE_LEN};
use std::time::{Duration, Instant};

/// How often the trainer reads the loss log back while an epoch runs (each read
/// is a device → host copy and a synchronisation): often enough for the progress
/// bar to move a few times a second. It also reads before every checkpoint and at
/// the end of the epoch, so the divergence guard fires at most this long (plus the
/// step in flight) after the loss stops being finite, and never after a write.
pub const READ_EVERY: Duration = Duration::from_millis(250);

/// A split on the device: pixel/255 and the label indices uploaded once per run
/// (f32: 4 bytes a pixel, 188 MB for MNIST's training split), the order once per
/// epoch (evaluation keeps the identity order it starts with). Each step gathers
/// its batch there (`DataOps::gather_batch`, the rows `Inputs::gather` builds) and
/// moves the cursor there (`advance_batch`), logging its losses, so a recorded step
/// copies nothing host → device and nothing comes back until [`Self::read_log`].
pub struct DeviceSplit<B: Backend> {
    pixels: B::Buf,
    labels: B::Buf,
    order: B::Buf,
    /// `backend::DataBufs::state`: the sample offset, the batch of the epoch.
    state: B::Buf,
    /// The epoch's losses, `[batches, losses]`, row b for batch b of the epoch.
    log: B::Buf,
    size: usize,
    classes: usize,
    batch: usize,
    /// Loss values per step (1 or the task count).
    losses: usize,
    /// The first batch of the epoch the host has not read from `log`.
    read: usize,
    read_at: Instant,
}

impl<B: Backend> DeviceSplit<B> {
    /// `losses` values per step (1 or the task count; 0 for evaluation), `batch`
    /// samples a step.
    pub fn new(be: &B, inputs: &Inputs, classes: usize, losses: usize, batch: usize) -> Self {
        let labels: Vec<f32> = inputs.split.labels.iter().map(|&l| l as f32).collect();
        let identity: Vec<f32> = (0..inputs.len()).map(|i| i as f32).collect();
        let batch = batch.max(1);
        Self {
            pixels: be.upload(&inputs.pixels),
            labels: be.upload(&labels),
            order: be.upload(&identity),
            state: be.zeros(DATA_STATE_LEN),
            log: be.zeros((losses * inputs.len().div_ceil(batch)).max(1)),
            size: inputs.split.image_len(),
            classes,
            batch,
            losses,
            read: 0,
            read_at: Instant::now(),
        }
    }

    /// Starts an epoch (or resumes one) at batch `first` of `order`: the order and
    /// the cursor go to the device, the only copies of the epoch.
    pub fn start_epoch(&mut self, be: &B, order: &[usize], first: usize) {
        let order: Vec<f32> = order.iter().map(|&i| i as f32).collect();
        be.write(&mut self.order, &order);
        self.rewind(be, first);
    }

    /// Moves the cursor to batch `first` of the order there (evaluation: 0).
    pub fn rewind(&mut self, be: &B, first: usize) {
        be.write(
            &mut self.state,
            &[(first * self.batch) as f32, first as f32],
        );
        self.read = first;
        self.read_at = Instant::now();
    }

    /// The next `n` samples of the order into `x` and `targets`.
    pub fn gather(&self, be: &B, n: usize, x: &mut B::Buf, targets: &mut B::Buf) {
        let g = Gather {
            batch: n,
            size: self.size,
            classes: self.classes,
        };
        let data = DataBufs {
            pixels: &self.pixels,
            labels: &self.labels,
            order: &self.order,
            state: &self.state,
        };
        be.gather_batch(&g, data, x, targets);
    }

    /// After a step of `n` samples: logs its `loss` (the split's `losses` values)
    /// and moves the cursor past them.
    pub fn advance(&mut self, be: &B, n: usize, loss: &B::Buf) {
        debug_assert_eq!(be.buf_len(loss), self.losses);
        be.advance_batch((self.losses, n), loss, &mut self.state, &mut self.log);
    }

    /// Moves the cursor past `n` samples, logging nothing (evaluation).
    pub fn skip(&mut self, be: &B, n: usize) {
        be.advance_batch((0, n), &self.labels, &mut self.state, &mut self.log);
    }

    /// Whether [`READ_EVERY`] has passed since the log was last read.
    pub fn read_due(&self) -> bool {
        self.read_at.elapsed() >= READ_EVERY
    }

    /// The log's rows of the batches since the last read up to batch `upto` of the
    /// epoch (`[upto − first, losses]`, and `first`): one device → host copy.
    pub fn read_log(&mut self, be: &B, upto: usize) -> (usize, Vec<f32>) {
        let first = self.read;
        self.read = upto;
        self.read_at = Instant::now();
        if upto <= first {
            return (first, Vec::new());
        }
        let log = be.download(&self.log);
        (first, log[first * self.losses..upto * self.losses].to_vec())
    }
}

/// A training loss that stopped being finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diverged {
    /// The run's optimiser step (1-based) whose loss it was.
    pub step: usize,
    /// Which of the step's loss values (the task, for per-task losses).
    pub task: usize,
    pub value: f32,
}

/// Brings the epoch's tally and progress bar up to the device: the losses logged
/// since the last read, up to the batch `run` is at, are added step by step in
/// step order — the same sums, in the same order, as reading every step, so the
/// same bits. The first non-finite loss stops it (the steps after it are not
/// added): the error names its step, though later steps may have run on the
/// device; nothing was written from them.
pub fn tally_logged<B: Backend>(
    be: &B,
    split: &mut DeviceSplit<B>,
    run: &mut Progress,
    bar: &EpochBar,
) -> Result<(), Diverged> {
    let (first, log) = split.read_log(be, run.at.batch);
    // The run's steps before batch `first` of the epoch.
    let steps_before = run.at.steps - (run.at.batch - first);
    let batch = split.batch;
    for (k, row) in log.chunks(split.losses.max(1)).enumerate() {
        if let Some(task) = row.iter().position(|l| !l.is_finite()) {
            return Err(Diverged {
                step: steps_before + k + 1,
                task,
                value: row[task],
            });
        }
        let losses: Vec<f64> = row.iter().map(|&l| l as f64).collect();
        let n = run.batch(first + k, batch).len();
        bar.advance(run.at.tally.add(&losses, n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::backend::Memory;
    use crate::data::Split;
    use crate::model::{Mode, Net, NetSpec};
    use crate::run::EpochRecord;
    use crate::train::Tally;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const TASKS: usize = 10;

    /// Steps with these losses logged on the device as a trainer logs them, the
    /// host reading the log twice: after step 2, then after step 6 — a window whose
    /// third step's loss (task 4) is NaN. The first read adds steps 1–2 to the
    /// tally exactly as step-by-step adding does; the second stops at the NaN,
    /// naming its step, and adds nothing after it.
    #[test]
    fn a_nan_inside_a_read_window_is_caught_at_its_step() {
        let dir = tempfile::tempdir().unwrap();
        let split = Split {
            images: (0..20 * 4).map(|v| (v * 37 % 251) as u8).collect(),
            labels: (0..20).map(|i| (i % 10) as u8).collect(),
            channels: 1,
            rows: 2,
            cols: 2,
        };
        let inputs = Inputs::new(&split);
        let (batch, seed) = (3, 11);
        let mut net = Net::new(
            &Cpu,
            NetSpec::mnist(Mode::Mtl, 10),
            &mut ChaCha8Rng::seed_from_u64(seed),
        );
        let (mut run, _) = Progress::start::<_, EpochRecord>(
            (&Cpu, &mut net, None),
            (ChaCha8Rng::seed_from_u64(seed), (0..20).collect()),
            dir.path(),
            false,
        )
        .unwrap();
        run.at.steps = 40; // steps of earlier epochs
        let batches = run.epoch_batches(batch);
        let bar = EpochBar::new(1, 1, batches.end);
        let mut device = DeviceSplit::new(&Cpu, &inputs, 10, TASKS, batch);
        device.start_epoch(&Cpu, &run.order, 0);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut step_losses = Vec::new();
        let mut expected = Tally::new(TASKS);
        for step in 1..=6 {
            let mut loss: Vec<f32> = (0..TASKS).map(|_| rng.random_range(0.1..3.0)).collect();
            if step == 5 {
                loss[4] = f32::NAN;
            }
            let n = run.batch(run.at.batch, batch).len();
            device.advance(&Cpu, n, &Cpu.upload(&loss));
            step_losses.push(loss);
            run.at.steps += 1;
            run.at.batch += 1;
            if step <= 2 {
                let l: Vec<f64> = step_losses[step - 1].iter().map(|&l| l as f64).collect();
                expected.add(&l, n);
            }
            if step == 2 {
                tally_logged(&Cpu, &mut device, &mut run, &bar).unwrap();
                assert_eq!(run.at.tally.batches, 2);
                assert_eq!(run.at.tally.samples, 2 * batch);
                assert_eq!(run.at.tally.loss_sum.to_bits(), expected.loss_sum.to_bits());
                for (a, b) in run.at.tally.task_loss.iter().zip(&expected.task_loss) {
                    assert_eq!(a.to_bits(), b.to_bits());
                }
            }
        }
        let d = tally_logged(&Cpu, &mut device, &mut run, &bar).unwrap_err();
        assert_eq!(d.step, 40 + 5, "the run's step of the NaN");
        assert_eq!(d.task, 4);
        assert!(d.value.is_nan());
        // Steps 3 and 4 (finite) were added; the NaN step and the one after not.
        assert_eq!(run.at.tally.batches, 4);
    }
}
