//! Evaluation: 10-way accuracy (STL: argmax of the classifier; MTL: argmax over the
//! task outputs) and, for one-output-per-task heads, each task's binary accuracy.

use super::{DeviceSplit, Inputs};
use crate::backend::Backend;
use crate::model::{Activations, Net, NetSpec};

#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// 10-way accuracy, fraction in [0, 1].
    pub accuracy: f64,
    /// Per-task binary accuracy ("digit is t": logit > 0), when heads are binary.
    pub task_accuracy: Option<Vec<f64>>,
}

/// A split to evaluate: its images on the device, in order (uploaded once), its
/// labels on the host for the tally.
pub struct EvalSplit<'a, B: Backend> {
    inputs: &'a Inputs<'a>,
    device: DeviceSplit<B>,
}

impl<'a, B: Backend> EvalSplit<'a, B> {
    /// For a net of `classes` classes, evaluated `batch` samples at a time.
    pub fn new(be: &B, inputs: &'a Inputs<'a>, classes: usize, batch: usize) -> Self {
        Self {
            inputs,
            device: DeviceSplit::new(be, inputs, classes, 0, batch),
        }
    }
}

/// Runs the network in evaluation mode (running BN statistics) over every sample,
/// each batch gathered on the device; its logits come back for the tally.
pub fn evaluate<B: Backend>(
    be: &B,
    net: &mut Net<B>,
    act: &mut Activations<B>,
    split: &mut EvalSplit<B>,
    batch: usize,
) -> Evaluation {
    let spec = net.spec.clone();
    let mut tally = Tally::new(&spec);
    let labels = &split.inputs.split.labels;
    split.device.rewind(be, 0);
    for start in (0..labels.len()).step_by(batch.min(act.capacity)) {
        let n = batch.min(act.capacity).min(labels.len() - start);
        split.device.gather(be, n, &mut act.x, &mut act.targets);
        net.forward(be, act, n, false);
        split.device.skip(be, n);
        let logits = be.download(&act.logits);
        let labels: Vec<usize> = labels[start..start + n]
            .iter()
            .map(|&l| l as usize)
            .collect();
        tally.add(&spec, &logits, &labels);
    }
    tally.finish()
}

/// Running counts of correct predictions.
struct Tally {
    correct: usize,
    seen: usize,
    task_correct: Option<Vec<usize>>,
}

impl Tally {
    fn new(spec: &NetSpec) -> Self {
        Self {
            correct: 0,
            seen: 0,
            task_correct: (spec.head_out == 1).then(|| vec![0; spec.tasks]),
        }
    }

    /// logits: `[T, n, head_out]` for a batch of `n = labels.len()` samples.
    fn add(&mut self, spec: &NetSpec, logits: &[f32], labels: &[usize]) {
        let n = labels.len();
        for (i, &label) in labels.iter().enumerate() {
            let score = |c: usize| {
                if spec.head_out == 1 {
                    logits[c * n + i] // task c's logit for sample i
                } else {
                    logits[i * spec.head_out + c]
                }
            };
            let classes = if spec.head_out == 1 {
                spec.tasks
            } else {
                spec.head_out
            };
            // First maximum wins, as torch.argmax does.
            let predicted =
                (1..classes).fold(0, |best, c| if score(c) > score(best) { c } else { best });
            self.correct += usize::from(predicted == label);
            if let Some(task_correct) = &mut self.task_correct {
                for (t, count) in task_correct.iter_mut().enumerate() {
                    *count += usize::from((score(t) > 0.0) == (label == t));
                }
            }
        }
        self.seen += n;
    }

    fn finish(self) -> Evaluation {
        let seen = self.seen.max(1) as f64;
        Evaluation {
            accuracy: self.correct as f64 / seen,
            task_accuracy: self
                .task_correct
                .map(|c| c.iter().map(|&k| k as f64 / seen).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mode;

    #[test]
    fn mtl_tally_takes_argmax_over_tasks_and_thresholds_each_task() {
        let spec = NetSpec::mnist(Mode::Mtl, 3);
        let mut tally = Tally::new(&spec);
        // Two samples; logits are task-major [T=3, n=2].
        let logits = [-1.0, 2.0, 0.5, -3.0, 0.2, 1.0];
        tally.add(&spec, &logits, &[1, 2]);
        let e = tally.finish();
        // Sample 0: scores (-1, 0.5, 0.2) → 1, right. Sample 1: (2, -3, 1) → 0, wrong.
        assert_eq!(e.accuracy, 0.5);
        // Task 0: s0 neg/neg ok, s1 pos/neg wrong. Task 1: s0 pos/pos ok, s1 neg/neg ok.
        // Task 2: s0 pos/neg wrong, s1 pos/pos ok.
        assert_eq!(e.task_accuracy, Some(vec![0.5, 1.0, 0.5]));
    }

    #[test]
    fn stl_tally_takes_argmax_over_classes() {
        let spec = NetSpec::mnist(Mode::Stl, 3);
        let mut tally = Tally::new(&spec);
        let logits = [0.1, 0.9, 0.3, 2.0, 1.0, 1.0];
        tally.add(&spec, &logits, &[1, 1]);
        let e = tally.finish();
        assert_eq!(e.accuracy, 0.5);
        assert_eq!(e.task_accuracy, None);
    }
}
