//! `sskernel explain`: the activation regions of the paper's Figure 6. For a few
//! test images and each task, the input regions that drive the task's output:
//! gradient × input of the task's logit, the gradient from the net's explicit
//! backward (`Net::input_gradient`, batch norm in its evaluation form) on the run's
//! best checkpoint. One PNG grid per run (rows: images, columns: tasks, the map over
//! the grey image), and the runs side by side when several are given.
//!
//! Digit runs only (the CNN of DESIGN.md §4); a heterogeneous run is refused by name.

use crate::backend::Backend;
use crate::model::{Activations, Mode};
use crate::report::plot::{drawing_failed, write_png, Area, FONT};
use crate::train::{checkpoint, load_run, Inputs, LoadedRun};
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The most images one grid shows.
pub const MAX_IMAGES: usize = 100;
/// A run's own grid, in its directory.
pub const EXPLAIN_PNG: &str = "explain.png";
/// The side-by-side grid of several runs, in the first run's directory unless
/// `--out` says otherwise.
pub const COMPARE_PNG: &str = "explain-compare.png";

/// The maps of one run: `maps[i][k]` = gradient × input of image i for task
/// `tasks[k]`, `[H·W]`, with the images they explain.
pub struct Regions {
    pub title: String,
    pub tasks: Vec<usize>,
    pub maps: Vec<Vec<Vec<f32>>>,
    /// The images `[n, H·W]` as the net read them (pixel/255), and their digits.
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub cols: usize,
}

/// What to explain.
pub struct ExplainRequest<'a> {
    pub runs: &'a [PathBuf],
    pub images: usize,
    /// Task (MTL) or class (STL) indices; empty: every one.
    pub tasks: &'a [usize],
    /// Where the grid of every run side by side goes (default, with several runs:
    /// the first run's `explain-compare.png`); each run's own grid is written too.
    pub out: Option<&'a Path>,
}

/// Writes `explain.png` in every run directory and, with several runs or an `out`,
/// the side-by-side grid; returns the paths written.
pub fn explain<B: Backend>(be: &B, req: &ExplainRequest) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(
        !req.runs.is_empty(),
        "explain needs at least one run directory"
    );
    anyhow::ensure!(
        (1..=MAX_IMAGES).contains(&req.images),
        "--images must be 1 to {MAX_IMAGES}, got {}",
        req.images
    );
    let mut pictures: Vec<Regions> = Vec::new();
    let mut written = Vec::new();
    for run in req.runs {
        let loaded = load_run(be, run, checkpoint::BEST)
            .with_context(|| format!("cannot explain the run in {}", run.display()))?;
        let outputs = loaded.net.outputs();
        let tasks: Vec<usize> = if req.tasks.is_empty() {
            (0..outputs).collect()
        } else {
            req.tasks.to_vec()
        };
        if let Some(&bad) = tasks.iter().find(|&&t| t >= outputs) {
            anyhow::bail!(
                "{}: --tasks {bad}: the net has {outputs} outputs (0 to {})",
                run.display(),
                outputs - 1
            );
        }
        let data = loaded.data.name.clone();
        let regions = regions(be, loaded, req.images, tasks, run)?;
        if let Some(first) = pictures.first() {
            anyhow::ensure!(
                regions.images == first.images,
                "{}: runs are compared on the same test images, but this run's ({data}) \
                 differ from those of {}",
                run.display(),
                req.runs[0].display()
            );
        }
        let path = run.join(EXPLAIN_PNG);
        write_grid(&path, std::slice::from_ref(&regions))?;
        println!("wrote {}", path.display());
        written.push(path);
        pictures.push(regions);
    }
    if pictures.len() > 1 || req.out.is_some() {
        let path = req
            .out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| req.runs[0].join(COMPARE_PNG));
        write_grid(&path, &pictures)?;
        println!("wrote {}", path.display());
        written.push(path);
    }
    Ok(written)
}

/// Test images to explain: the first of each digit in turn (0, 1, …, 9, then the
/// second of each, …), so a small grid shows every class; fewer when the split has
/// fewer.
pub fn pick_images(labels: &[u8], count: usize) -> Vec<usize> {
    let mut picks = Vec::with_capacity(count);
    let mut taken = vec![false; labels.len()];
    while picks.len() < count {
        let before = picks.len();
        for digit in 0..=u8::MAX {
            if picks.len() == count {
                break;
            }
            if let Some(i) = (0..labels.len()).find(|&i| !taken[i] && labels[i] == digit) {
                taken[i] = true;
                picks.push(i);
            }
        }
        if picks.len() == before {
            break;
        }
    }
    picks
}

/// Gradient × input of `count` test images (`pick_images`) for each task, in one
/// batch.
fn regions<B: Backend>(
    be: &B,
    loaded: LoadedRun<B>,
    count: usize,
    tasks: Vec<usize>,
    run: &Path,
) -> Result<Regions> {
    let LoadedRun {
        mut net,
        data,
        mode,
        ..
    } = loaded;
    let picks = pick_images(&data.test.labels, count);
    anyhow::ensure!(
        !picks.is_empty(),
        "{}: the test split is empty",
        run.display()
    );
    let n = picks.len();
    let mut act = Activations::new(be, &net.spec, n);
    let inputs = Inputs::new(&data.test);
    let (mut images, mut targets) = (Vec::new(), Vec::new());
    inputs.gather(&picks, net.spec.classes, &mut images, &mut targets);
    be.write(&mut act.x, &images);
    let size = data.test.image_len();
    let mut maps = vec![Vec::with_capacity(tasks.len()); n];
    for &t in &tasks {
        net.forward(be, &mut act, n, false);
        let grad = net.input_gradient(be, &mut act, n, t);
        for (i, map) in maps.iter_mut().enumerate() {
            let range = i * size..(i + 1) * size;
            let x = &images[range.clone()];
            map.push(grad[range].iter().zip(x).map(|(g, x)| g * x).collect());
        }
    }
    let name = run.file_name().map_or(run.display().to_string(), |f| {
        f.to_string_lossy().into_owned()
    });
    let what = match mode {
        Mode::Stl => "STL, class logits",
        Mode::Mtl => "MTL",
        Mode::Selective => "selective",
    };
    Ok(Regions {
        title: format!("{name} ({what})"),
        tasks,
        maps,
        labels: picks.iter().map(|&i| data.test.labels[i]).collect(),
        images,
        cols: data.test.cols,
    })
}

const SCALE: i32 = 2;
const GAP: i32 = 3;
const BLOCK_GAP: i32 = 18;
const TOP: i32 = 44;
const LEFT: i32 = 34;

/// One grid per run, side by side: rows are images (their digit on the left),
/// columns tasks. Each map is scaled by its own largest |gradient × input|: red
/// where the pixel raises the task's logit, blue where it lowers it, over the grey
/// image.
fn write_grid(path: &Path, pictures: &[Regions]) -> Result<()> {
    let first = &pictures[0];
    let n = first.labels.len();
    let size = first.images.len() / n;
    let cols = first.cols;
    let rows = size / cols;
    let (cw, ch) = (cols as i32 * SCALE, rows as i32 * SCALE);
    let widest = pictures.iter().map(|p| p.tasks.len()).max().unwrap_or(1) as i32;
    let block_w = widest * (cw + GAP);
    let width = LEFT + pictures.len() as i32 * (block_w + BLOCK_GAP);
    let height = TOP + n as i32 * (ch + GAP) + 22;
    write_png(path, (width as u32, height as u32), |root| {
        root.fill(&WHITE).map_err(drawing_failed)?;
        let text = |area: &Area, s: String, at: (i32, i32), size: i32| {
            area.draw(&Text::new(s, at, (FONT, size)))
                .map_err(drawing_failed)
        };
        for (i, &label) in first.labels.iter().enumerate() {
            let y = TOP + i as i32 * (ch + GAP) + ch / 2 - 7;
            text(root, format!("{label}"), (10, y), 14)?;
        }
        text(
            root,
            "gradient × input per task (red raises the task's logit, blue lowers it)".into(),
            (LEFT, height - 18),
            12,
        )?;
        for (b, regions) in pictures.iter().enumerate() {
            let x0 = LEFT + b as i32 * (block_w + BLOCK_GAP);
            text(root, regions.title.clone(), (x0, 4), 14)?;
            for (k, t) in regions.tasks.iter().enumerate() {
                let x = x0 + k as i32 * (cw + GAP) + cw / 2 - 8;
                text(root, format!("t{t}"), (x, 24), 12)?;
            }
            for (i, row) in regions.maps.iter().enumerate() {
                let image = &regions.images[i * size..(i + 1) * size];
                for (k, map) in row.iter().enumerate() {
                    let scale = map.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let origin = (x0 + k as i32 * (cw + GAP), TOP + i as i32 * (ch + GAP));
                    for (p, (&v, &grey)) in map.iter().zip(image).enumerate() {
                        let colour = overlay(grey, if scale > 0.0 { v / scale } else { 0.0 });
                        let (px, py) = ((p % cols) as i32 * SCALE, (p / cols) as i32 * SCALE);
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            root.draw_pixel((origin.0 + px + dx, origin.1 + py + dy), &colour)
                                .map_err(drawing_failed)?;
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// The grey image (ink white on black, dimmed) with a signed map value in [−1, 1]
/// laid over it: red for positive, blue for negative, opaque in proportion to |v|.
fn overlay(grey: f32, v: f32) -> RGBColor {
    let g = 0.6 * grey.clamp(0.0, 1.0) * 255.0;
    let a = v.abs().clamp(0.0, 1.0).sqrt();
    let target = if v >= 0.0 {
        (255.0, 40.0, 20.0)
    } else {
        (40.0, 90.0, 255.0)
    };
    let mix = |t: f32| ((1.0 - a) * g + a * t).round() as u8;
    RGBColor(mix(target.0), mix(target.1), mix(target.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_cycle_through_the_digits() {
        let labels = [3, 0, 0, 1, 3, 9];
        assert_eq!(pick_images(&labels, 4), vec![1, 3, 0, 5]);
        assert_eq!(pick_images(&labels, 10), vec![1, 3, 0, 5, 2, 4]);
    }
}
