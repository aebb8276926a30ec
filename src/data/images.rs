//! Labelled image data sets as heterogeneous problems. The paper trains CIFAR-10
//! and OmniGlot as one binary task per class — "is this image of class c" (a
//! CIFAR-10 category, an OmniGlot alphabet) — so `one_vs_rest` turns a `Dataset`
//! into a `HeteroData` of such tasks over its images; [`Pixels`] serves the images
//! as `pixel/255 − mean[channel]` rows, `[C, H, W]` each, the layout a conv net reads.

use super::split::{Dataset, Split};
use super::tasks::{FeatureRows, HeteroData, TaskKind, TaskSpec};

/// The images of several splits, one after another, served as f32 rows.
pub struct Pixels {
    bytes: Vec<u8>,
    /// Values per image (C·H·W).
    dim: usize,
    /// Values per channel plane (H·W).
    plane: usize,
    /// Subtracted from every value of channel c (pixel/255 units).
    mean: Vec<f32>,
}

impl Pixels {
    /// The images of `parts` in order, `mean[c]` subtracted from channel c (an
    /// empty `mean`: nothing subtracted).
    pub fn new(parts: [&Split; 3], mean: Vec<f32>) -> Pixels {
        let s = parts[0];
        let mean = if mean.is_empty() {
            vec![0.0; s.channels]
        } else {
            mean
        };
        assert_eq!(mean.len(), s.channels, "a mean per channel");
        Pixels {
            bytes: parts
                .iter()
                .flat_map(|s| s.images.iter().copied())
                .collect(),
            dim: s.image_len(),
            plane: s.rows * s.cols,
            mean,
        }
    }
}

impl FeatureRows for Pixels {
    fn rows(&self) -> usize {
        self.bytes.len() / self.dim.max(1)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn gather(&self, idx: &[usize], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            idx.len() * self.dim,
            "out is not [idx.len(), dim]"
        );
        for (&r, row) in idx.iter().zip(out.chunks_exact_mut(self.dim)) {
            let image = &self.bytes[r * self.dim..(r + 1) * self.dim];
            let planes = row
                .chunks_exact_mut(self.plane.max(1))
                .zip(image.chunks_exact(self.plane.max(1)));
            for ((o, px), &mean) in planes.zip(&self.mean) {
                for (o, &b) in o.iter_mut().zip(px) {
                    *o = f32::from(b) / 255.0 - mean;
                }
            }
        }
    }
}

/// One binary task per class of `data` (task c: "label == c"), named by
/// `class_names`; rows are train, then validation, then test images. With
/// `subtract_mean`, each channel's mean over the training split is subtracted
/// (CIFAR-10's normalisation in the paper).
pub fn one_vs_rest(data: &Dataset, class_names: &[String], subtract_mean: bool) -> HeteroData {
    assert_eq!(class_names.len(), data.classes, "a name per class");
    let parts = [&data.train, &data.val, &data.test];
    let mean = if subtract_mean {
        data.train.channel_mean()
    } else {
        Vec::new()
    };
    let t = data.classes;
    let targets = parts
        .iter()
        .flat_map(|s| s.labels.iter())
        .flat_map(|&label| (0..t).map(move |c| f32::from(u8::from(label as usize == c))))
        .collect();
    let (ntr, nv, nte) = (data.train.len(), data.val.len(), data.test.len());
    HeteroData {
        name: data.name.clone(),
        tasks: class_names
            .iter()
            .map(|name| TaskSpec {
                name: name.clone(),
                kind: TaskKind::Binary,
                labels: Vec::new(),
            })
            .collect(),
        inputs: Box::new(Pixels::new(parts, mean)),
        targets,
        train: (0..ntr).collect(),
        val: (ntr..ntr + nv).collect(),
        test: (ntr + nv..ntr + nv + nte).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(labels: Vec<u8>, channels: usize, seed: u8) -> Split {
        let (rows, cols) = (2, 3);
        let n = labels.len();
        Split {
            images: (0..n * channels * rows * cols)
                .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
                .collect(),
            labels,
            channels,
            rows,
            cols,
        }
    }

    #[test]
    fn one_binary_task_per_class_and_mean_subtracted_rows() {
        let data = Dataset {
            name: "tiny".into(),
            classes: 3,
            source: "test".into(),
            train: split(vec![0, 2, 1, 2], 2, 1),
            val: split(vec![1], 2, 2),
            test: split(vec![2, 0], 2, 3),
        };
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let h = one_vs_rest(&data, &names, true);
        assert_eq!(
            (h.train.clone(), h.val.clone(), h.test.clone()),
            ((0..4).collect(), vec![4], vec![5, 6])
        );
        // Row 1 is the training image labelled 2: task 2 only.
        assert_eq!(
            [h.target(1, 0), h.target(1, 1), h.target(1, 2)],
            [0.0, 0.0, 1.0]
        );
        assert_eq!(h.target(4, 1), 1.0);
        assert_eq!(h.tasks[2].name, "c");
        // Test row 5 (the first test image): its bytes minus the training means.
        let mean = data.train.channel_mean();
        let mut out = vec![f32::NAN; 12];
        h.inputs.gather(&[5], &mut out);
        let want: Vec<f32> = data.test.images[..12]
            .iter()
            .enumerate()
            .map(|(i, &b)| f32::from(b) / 255.0 - mean[i / 6])
            .collect();
        assert_eq!(out, want);
        // The training images' mean of each channel is now ~0.
        let mut all = vec![0.0; 4 * 12];
        h.inputs.gather(&[0, 1, 2, 3], &mut all);
        for c in 0..2 {
            let s: f64 = all
                .chunks(12)
                .flat_map(|img| &img[c * 6..(c + 1) * 6])
                .map(|&v| v as f64)
                .sum();
            assert!(s.abs() < 1e-5, "channel {c} sums to {s}");
        }
    }
}
