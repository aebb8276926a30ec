//! The run's figures as PNG (DESIGN.md §8), drawn from the run records of
//! `crate::run` and the sharing decisions, never from numbers of their own:
//! `curves.png` (loss, metrics and parameters per epoch, the merges marked),
//! `grouping.png` (each decision's distance matrix with its groups outlined, and
//! HDBSCAN's condensed tree), `table.png` (`reproduce`'s rows with the seeds' spread:
//! the digit table's or the heterogeneous one's, one panel per task).
//!
//! plotters draws into an RGB buffer; `image` encodes it. Text is rendered from a
//! font compiled into the binary (egui's Ubuntu Light through ab_glyph), so the
//! figures look the same on a machine without fonts or fontconfig.

use super::hetero::HeteroRow;
use super::table::Row;
use crate::data::TaskSpec;
use crate::run::{metric_name, EpochRecord, HeteroEpoch, HeteroSummary, RunSummary};
use crate::sharing::selective::Decision;
use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
use std::path::Path;
use std::sync::OnceLock;

/// The family name every text style below uses; `canvas` registers the embedded
/// font under it.
pub const FONT: &str = "sans-serif";

/// A drawing area of the canvas `write_png` hands out.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// plotters' errors are generic over the backend; the figures only report them.
pub fn drawing_failed(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

fn register_font() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let loaded = *LOADED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .is_ok()
    });
    anyhow::ensure!(loaded, "the embedded font (Ubuntu Light) did not parse");
    Ok(())
}

/// Draws a `width`×`height` figure on white with `draw` and writes it to `path` as
/// PNG (atomically, as every output).
pub fn write_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<()> {
    register_font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root).with_context(|| format!("cannot draw {}", path.display()))?;
        root.present().map_err(drawing_failed)?;
    }
    let image = image::RgbImage::from_raw(width, height, rgb).context("canvas size")?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::atomic_file::write(path, &png)
}

/// One line of a panel: a name and a value per epoch (NaN: no value).
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// One panel of `curves.png`: a quantity (its unit on the y axis) per epoch.
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// What `curves.png` shows, read off a run's records.
pub struct Curves {
    pub title: String,
    pub epochs: Vec<usize>,
    pub panels: Vec<Panel>,
    /// Epochs whose sharing decision merged branches.
    pub merges: Vec<usize>,
    pub lock_epoch: Option<usize>,
    pub best_epoch: usize,
}

fn merge_epochs(decisions: Option<&[Decision]>) -> Vec<usize> {
    decisions
        .unwrap_or(&[])
        .iter()
        .filter(|d| !d.merged.is_empty())
        .map(|d| d.epoch)
        .collect()
}

impl Curves {
    /// A digit run (`train::train`): train loss, 10-way validation and test accuracy,
    /// mean per-task test accuracy (multi-task nets), parameters.
    pub fn digits(
        title: String,
        records: &[EpochRecord],
        summary: &RunSummary,
        decisions: Option<&[Decision]>,
    ) -> Self {
        let series = |name: &str, f: &dyn Fn(&EpochRecord) -> f64| Series {
            name: name.to_string(),
            values: records.iter().map(f).collect(),
        };
        let mut accuracy = vec![
            series("validation, 10-way", &|r| 100.0 * r.val_acc),
            series("test, 10-way", &|r| 100.0 * r.test_acc),
        ];
        if records.iter().all(|r| r.test_task_acc.is_some()) {
            accuracy.push(series("test, mean over tasks (binary)", &|r| {
                let t = r.test_task_acc.as_deref().unwrap_or(&[]);
                100.0 * t.iter().sum::<f64>() / t.len().max(1) as f64
            }));
        }
        Curves {
            title,
            epochs: records.iter().map(|r| r.epoch).collect(),
            panels: vec![
                Panel {
                    title: "training loss".into(),
                    series: vec![series("train", &|r| r.train_loss)],
                },
                Panel {
                    title: "accuracy %".into(),
                    series: accuracy,
                },
                Panel {
                    title: "trainable parameters".into(),
                    series: vec![series("parameters", &|r| r.params as f64)],
                },
                Panel {
                    title: "branches".into(),
                    series: vec![series("branches", &|r| r.branches as f64)],
                },
            ],
            merges: merge_epochs(decisions),
            lock_epoch: summary.lock_epoch,
            best_epoch: summary.best_epoch,
        }
    }

    /// A heterogeneous run (`train::hetero`): train and validation loss, each task's
    /// test metric in one panel per unit, parameters.
    pub fn hetero(
        title: String,
        records: &[HeteroEpoch],
        summary: &HeteroSummary,
        decisions: Option<&[Decision]>,
    ) -> Self {
        let mut panels = vec![Panel {
            title: "loss (sum over tasks)".into(),
            series: vec![
                Series {
                    name: "train".into(),
                    values: records.iter().map(|r| r.train_loss).collect(),
                },
                Series {
                    name: "validation".into(),
                    values: records.iter().map(|r| r.val_loss).collect(),
                },
            ],
        }];
        for unit in summary.kinds.iter().map(metric_name) {
            if panels.iter().any(|p| p.title == format!("test {unit}")) {
                continue;
            }
            let series = (0..summary.tasks.len())
                .filter(|&t| metric_name(&summary.kinds[t]) == unit)
                .map(|t| Series {
                    name: summary.tasks[t].clone(),
                    values: records.iter().map(|r| r.test[t]).collect(),
                })
                .collect();
            panels.push(Panel {
                title: format!("test {unit}"),
                series,
            });
        }
        panels.push(Panel {
            title: "trainable parameters".into(),
            series: vec![Series {
                name: "parameters".into(),
                values: records.iter().map(|r| r.params as f64).collect(),
            }],
        });
        Curves {
            title,
            epochs: records.iter().map(|r| r.epoch).collect(),
            panels,
            merges: merge_epochs(decisions),
            lock_epoch: summary.lock_epoch,
            best_epoch: summary.best_epoch,
        }
    }
}

const PANEL: (u32, u32) = (420, 260);
const HEADER: u32 = 44;

/// Writes `curves.png`: the panels two to a row under a header that names the marks.
pub fn write_curves(path: &Path, curves: &Curves) -> Result<()> {
    let rows = curves.panels.len().div_ceil(2) as u32;
    let size = (2 * PANEL.0, HEADER + rows * PANEL.1);
    write_png(path, size, |root| {
        root.fill(&WHITE).map_err(drawing_failed)?;
        let (header, body) = root.split_vertically(HEADER);
        header
            .draw(&Text::new(curves.title.as_str(), (10, 4), (FONT, 18)))
            .map_err(drawing_failed)?;
        let mut marks = format!("green: best validation epoch ({})", curves.best_epoch);
        if !curves.merges.is_empty() {
            marks += &format!("; red: branches merged (epochs {:?})", curves.merges);
        }
        if let Some(lock) = curves.lock_epoch {
            marks += &format!("; black: grouping locked (epoch {lock})");
        }
        header
            .draw(&Text::new(marks, (10, 25), (FONT, 13)))
            .map_err(drawing_failed)?;
        let cells = body.split_evenly((rows as usize, 2));
        for (panel, area) in curves.panels.iter().zip(&cells) {
            draw_panel(area, panel, curves)?;
        }
        Ok(())
    })
}

/// The smallest and largest finite values, widened so a flat line is visible.
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    // A flat line (a parameter count between merges) sits mid-panel.
    let pad = if hi - lo > hi.abs() * 1e-9 {
        (hi - lo) * 0.08
    } else {
        (hi.abs() * 0.05).max(0.5)
    };
    (lo - pad, hi + pad)
}

fn draw_panel(area: &Area, panel: &Panel, curves: &Curves) -> Result<()> {
    let last = curves.epochs.last().copied().unwrap_or(1) as i32;
    let (lo, hi) = value_range(panel.series.iter().flat_map(|s| s.values.iter().copied()));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0..last + 1, lo..hi)
        .map_err(drawing_failed)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|&e| {
            if (1..=last).contains(&e) {
                e.to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|&v| short_number(v))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .light_line_style(WHITE)
        .draw()
        .map_err(drawing_failed)?;
    let vertical = |epoch: usize, color: RGBColor| {
        PathElement::new(
            vec![(epoch as i32, lo), (epoch as i32, hi)],
            color.mix(0.55).stroke_width(2),
        )
    };
    let marks = curves
        .merges
        .iter()
        .map(|&e| vertical(e, RED))
        .chain(curves.lock_epoch.map(|e| vertical(e, BLACK)))
        .chain(std::iter::once(vertical(curves.best_epoch, GREEN)));
    chart.draw_series(marks).map_err(drawing_failed)?;
    for (k, series) in panel.series.iter().enumerate() {
        let color = line_colour(k);
        let points: Vec<(i32, f64)> = curves
            .epochs
            .iter()
            .zip(&series.values)
            .filter(|(_, v)| v.is_finite())
            .map(|(&e, &v)| (e as i32, v))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(drawing_failed)?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(drawing_failed)?;
    }
    if panel.series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FONT, 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(drawing_failed)?;
    }
    Ok(())
}

/// Line colours (tab10 without its red and green, which mark merges and the best
/// epoch).
const LINE_COLOURS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

fn line_colour(k: usize) -> RGBColor {
    LINE_COLOURS[k % LINE_COLOURS.len()]
}

/// 1234567 → "1.23M", 0.0123 → "0.0123": axis labels that fit.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

const DECISION: (u32, u32) = (900, 330);

/// Writes `grouping.png`: one row per sharing decision, the distance matrix as a
/// heat map (rows and columns in group order, each group outlined; the labels are
/// the branches' origin tasks) beside HDBSCAN's condensed tree.
pub fn write_grouping(path: &Path, decisions: &[Decision]) -> Result<()> {
    anyhow::ensure!(!decisions.is_empty(), "no grouping decision to draw");
    let size = (DECISION.0, DECISION.1 * decisions.len() as u32);
    write_png(path, size, |root| {
        root.fill(&WHITE).map_err(drawing_failed)?;
        for (d, row) in decisions
            .iter()
            .zip(root.split_evenly((decisions.len(), 1)))
        {
            let merged: Vec<String> = d
                .merged
                .iter()
                .map(|m| format!("{:?} keep {}", m.group, m.kept))
                .collect();
            let title = format!(
                "epoch {} ({}): groups {:?}; {}{}",
                d.epoch,
                d.criterion.name(),
                d.groups,
                if merged.is_empty() {
                    "no merge".to_string()
                } else {
                    format!("merged {}", merged.join(", "))
                },
                d.locked
                    .as_ref()
                    .map_or(String::new(), |why| format!("; locked: {why}"))
            );
            row.draw(&Text::new(title, (10, 6), (FONT, 14)))
                .map_err(drawing_failed)?;
            let body = row.margin(28, 6, 6, 6);
            let (left, right) = body.split_horizontally(DECISION.0 * 4 / 10);
            draw_distances(&left, d)?;
            draw_condensed_tree(&right, d)?;
        }
        Ok(())
    })
}

/// Positions of the active branches in group order: each group's members
/// together, then the rest (noise, singletons the criterion left out).
fn group_order(d: &Decision) -> (Vec<usize>, Vec<(usize, usize)>) {
    let position = |name: usize| d.branches.iter().position(|&b| b == name);
    let mut order = Vec::new();
    let mut blocks = Vec::new();
    for group in &d.groups {
        let start = order.len();
        order.extend(group.iter().filter_map(|&name| position(name)));
        if order.len() > start {
            blocks.push((start, order.len()));
        }
    }
    for p in 0..d.branches.len() {
        if !order.contains(&p) {
            order.push(p);
        }
    }
    (order, blocks)
}

fn draw_distances(area: &Area, d: &Decision) -> Result<()> {
    let n = d.distances.len();
    if n == 0 {
        return Ok(());
    }
    let (order, blocks) = group_order(d);
    let (w, h) = area.dim_in_pixel();
    let label = 22i32;
    let side = ((w as i32 - label - 70).min(h as i32 - label - 4)).max(n as i32);
    let cell = side / n as i32;
    let (x0, y0) = (label, 0);
    let (lo, hi) = d
        .distances
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let draw = |r: Rectangle<(i32, i32)>| area.draw(&r).map_err(drawing_failed);
    for (r, &pr) in order.iter().enumerate() {
        for (c, &pc) in order.iter().enumerate() {
            let v = d.distances[pr][pc];
            let color = if v.is_finite() {
                ViridisRGB.get_color_normalized(v as f32, lo as f32, hi as f32)
            } else {
                RGBColor(255, 0, 255)
            };
            let (x, y) = (x0 + c as i32 * cell, y0 + r as i32 * cell);
            draw(Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                color.filled(),
            ))?;
        }
        let name = d.branches[pr].to_string();
        let style = (FONT, 12).into_font().color(&BLACK);
        let mid = r as i32 * cell + cell / 2 - 6;
        area.draw(&Text::new(name.clone(), (2, y0 + mid), style.clone()))
            .map_err(drawing_failed)?;
        area.draw(&Text::new(
            name,
            (x0 + mid + 2, y0 + n as i32 * cell + 3),
            style,
        ))
        .map_err(drawing_failed)?;
    }
    for &(start, end) in &blocks {
        let (a, b) = (start as i32 * cell, end as i32 * cell);
        draw(Rectangle::new(
            [(x0 + a, y0 + a), (x0 + b, y0 + b)],
            RED.stroke_width(2),
        ))?;
    }
    // Colour bar.
    let bx = x0 + n as i32 * cell + 12;
    let steps = 64;
    let span = n as i32 * cell;
    for s in 0..steps {
        let v = hi - (hi - lo) * s as f64 / (steps - 1) as f64;
        let y = y0 + span * s / steps;
        let color = ViridisRGB.get_color_normalized(v as f32, lo as f32, hi as f32);
        draw(Rectangle::new(
            [(bx, y), (bx + 12, y + span / steps + 1)],
            color.filled(),
        ))?;
    }
    let style = (FONT, 11).into_font().color(&BLACK);
    area.draw(&Text::new(format!("{hi:.3}"), (bx + 15, y0), style.clone()))
        .map_err(drawing_failed)?;
    area.draw(&Text::new(
        format!("{lo:.3}"),
        (bx + 15, y0 + span - 11),
        style,
    ))
    .map_err(drawing_failed)?;
    Ok(())
}

/// HDBSCAN's condensed tree as a dendrogram: λ = 1/distance grows downwards;
/// each cluster is a horizontal bar at the λ it was born, its members hang from
/// it down to the λ where they leave (a point: a dot in its HDBSCAN label's colour,
/// grey for noise) or split into clusters of their own. λ = ∞ (points at distance
/// 0) is drawn at the bottom.
fn draw_condensed_tree(area: &Area, d: &Decision) -> Result<()> {
    let tree = &d.condensed_tree;
    let n = d.branches.len();
    let style = (FONT, 12).into_font().color(&BLACK);
    if tree.is_empty() {
        area.draw(&Text::new(
            "no condensed tree (fewer than two branches)",
            (10, 20),
            style,
        ))
        .map_err(drawing_failed)?;
        return Ok(());
    }
    let finite_max = tree
        .iter()
        .map(|e| e.2)
        .filter(|l| l.is_finite())
        .fold(0.0f64, f64::max);
    let lambda_max = if finite_max > 0.0 {
        finite_max * 1.1
    } else {
        1.0
    };
    let lambda = |l: f64| if l.is_finite() { l } else { lambda_max };
    // Leaves in depth-first order; a cluster sits over the mean of its leaves.
    let root = n;
    let children = |p: usize| tree.iter().filter(move |e| e.0 == p);
    let mut order = Vec::new();
    depth_first_leaves(tree, root, n, &mut order);
    let mut x_of = vec![f64::NAN; tree.iter().map(|e| e.1.max(e.0)).max().unwrap_or(n) + 1];
    for (i, &p) in order.iter().enumerate() {
        x_of[p] = i as f64;
    }
    // Children have larger ids than their parents: fill clusters from the last.
    for c in (n..x_of.len()).rev() {
        let xs: Vec<f64> = children(c).map(|e| x_of[e.1]).collect();
        if !xs.is_empty() {
            x_of[c] = xs.iter().sum::<f64>() / xs.len() as f64;
        }
    }
    let birth = |c: usize| tree.iter().find(|e| e.1 == c).map_or(0.0, |e| lambda(e.2));

    let (w, h) = area.dim_in_pixel();
    let (left, top, bottom) = (56i32, 18i32, 22i32);
    let plot_w = w as i32 - left - 10;
    let plot_h = h as i32 - top - bottom;
    let px = |x: f64| left + ((x + 0.5) / order.len().max(1) as f64 * plot_w as f64) as i32;
    let py = |l: f64| top + (l / lambda_max * plot_h as f64) as i32;
    let draw = |e: PathElement<(i32, i32)>| area.draw(&e).map_err(drawing_failed);
    let line = BLACK.stroke_width(2);
    for &(parent, child, l, _) in tree {
        let from = birth(parent);
        let x = px(x_of[child]);
        draw(PathElement::new(
            vec![(x, py(from)), (x, py(lambda(l)))],
            line,
        ))?;
    }
    for parent in std::iter::once(root).chain(tree.iter().map(|e| e.1).filter(|&c| c >= n)) {
        let xs: Vec<i32> = children(parent).map(|e| px(x_of[e.1])).collect();
        if let (Some(&a), Some(&b)) = (xs.iter().min(), xs.iter().max()) {
            let y = py(birth(parent));
            draw(PathElement::new(vec![(a, y), (b, y)], line))?;
        }
    }
    for &(_, child, l, _) in tree.iter().filter(|e| e.1 < n) {
        let color = match d.labels.get(child) {
            Some(&label) if label >= 0 => Palette99::pick(label as usize).to_rgba(),
            _ => RGBAColor(150, 150, 150, 1.0),
        };
        let (x, y) = (px(x_of[child]), py(lambda(l)));
        area.draw(&Circle::new((x, y), 5, color.filled()))
            .map_err(drawing_failed)?;
        area.draw(&Text::new(
            d.branches[child].to_string(),
            (x - 4, top + plot_h + 6),
            style.clone().color(&color),
        ))
        .map_err(drawing_failed)?;
    }
    // λ axis.
    draw(PathElement::new(
        vec![(left - 8, top), (left - 8, top + plot_h)],
        BLACK.stroke_width(1),
    ))?;
    for k in 0..=4 {
        let l = lambda_max * k as f64 / 4.0;
        area.draw(&Text::new(
            short_number(l),
            (4, py(l) - 6),
            (FONT, 11).into_font().color(&BLACK),
        ))
        .map_err(drawing_failed)?;
    }
    area.draw(&Text::new(
        "λ = 1/distance; condensed tree, leaves coloured by HDBSCAN label",
        (left, 0),
        (FONT, 12).into_font().color(&BLACK),
    ))
    .map_err(drawing_failed)?;
    Ok(())
}

/// The points under cluster `p` of a condensed tree, depth first in edge order.
fn depth_first_leaves(
    tree: &[(usize, usize, f64, usize)],
    p: usize,
    n: usize,
    out: &mut Vec<usize>,
) {
    for e in tree.iter().filter(|e| e.0 == p) {
        if e.1 < n {
            out.push(e.1);
        } else {
            depth_first_leaves(tree, e.1, n, out);
        }
    }
}

/// One panel of `table.png`: a quantity per configuration, mean and std over seeds.
pub struct Bars {
    pub title: String,
    pub values: Vec<(f64, f64)>,
    /// Bars start at 0 (counts) rather than at the smallest value (metrics).
    pub from_zero: bool,
}

/// Writes `table.png` of `reproduce mnist`: per configuration, the 10-way test
/// accuracy and the measured model's parameters.
pub fn write_table(path: &Path, rows: &[Row]) -> Result<()> {
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let accuracy = Bars {
        title: "10-way accuracy %".into(),
        values: rows
            .iter()
            .map(|r| (100.0 * r.test_acc.0, 100.0 * r.test_acc.1))
            .collect(),
        from_zero: false,
    };
    let seeds = rows.first().map_or(0, |r| r.seeds.len());
    write_bar_table(
        path,
        &labels,
        seeds,
        &[accuracy, params_bars(rows.iter().map(|r| r.params))],
    )
}

/// Writes `table.png` of `reproduce` on a heterogeneous problem: per configuration,
/// each task's test metric in its unit (`metric_name`) and the measured model's
/// parameters (STL: every task's net).
pub fn write_hetero_table(path: &Path, rows: &[HeteroRow], tasks: &[TaskSpec]) -> Result<()> {
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let mut panels: Vec<Bars> = tasks
        .iter()
        .enumerate()
        .map(|(t, task)| Bars {
            title: format!("{} ({})", task.name, metric_name(&task.kind)),
            values: rows.iter().map(|r| r.tasks[t]).collect(),
            from_zero: false,
        })
        .collect();
    panels.push(params_bars(rows.iter().map(|r| r.params)));
    let seeds = rows.first().map_or(0, |r| r.seeds.len());
    write_bar_table(path, &labels, seeds, &panels)
}

fn params_bars(params: impl Iterator<Item = (f64, f64)>) -> Bars {
    Bars {
        title: "trainable parameters".into(),
        values: params.collect(),
        from_zero: true,
    }
}

/// The height of one row of panels of `table.png` for `n` configurations.
pub fn table_row_height(n: usize) -> u32 {
    (60 + 34 * n as u32).max(170)
}

/// Draws `panels` two to a row (900 px wide, the configurations named on the left
/// panel of each row) under a header: each value's mean as a bar and ± one standard
/// deviation over the seeds as a whisker.
fn write_bar_table(path: &Path, labels: &[&str], seeds: usize, panels: &[Bars]) -> Result<()> {
    anyhow::ensure!(!labels.is_empty(), "no row to draw");
    let rows = panels.len().div_ceil(2) as u32;
    let row_height = table_row_height(labels.len());
    write_png(path, (900, 30 + rows * row_height), |root| {
        root.fill(&WHITE).map_err(drawing_failed)?;
        let (header, body) = root.split_vertically(30);
        header
            .draw(&Text::new(
                format!(
                    "test metrics of the best-validation epoch: mean ± std over {seeds} seed(s)"
                ),
                (10, 6),
                (FONT, 15),
            ))
            .map_err(drawing_failed)?;
        for (pair, row) in panels.chunks(2).zip(body.split_evenly((rows as usize, 1))) {
            let (left, right) = row.split_horizontally(520);
            draw_bars(&left, &pair[0], labels, 170)?;
            if let Some(second) = pair.get(1) {
                draw_bars(&right, second, labels, 0)?;
            }
        }
        Ok(())
    })
}

/// Horizontal bars of `values` (mean, std), one per label, top to bottom.
fn draw_bars(area: &Area, bars: &Bars, labels: &[&str], label_width: u32) -> Result<()> {
    let (title, values) = (bars.title.as_str(), &bars.values);
    let n = labels.len();
    let (lo, hi) = value_range(values.iter().flat_map(|&(m, s)| [m - s, m + s]));
    let lo = if bars.from_zero { 0.0 } else { lo };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 14))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(label_width)
        .build_cartesian_2d(lo..hi, -0.5..n as f64 - 0.5)
        .map_err(drawing_failed)?;
    chart
        .configure_mesh()
        .y_labels(2 * n + 1)
        .y_label_formatter(&|&y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                labels[n - 1 - i as usize].to_string()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|&v| short_number(v))
        .label_style((FONT, 12))
        .light_line_style(WHITE)
        .disable_y_mesh()
        .draw()
        .map_err(drawing_failed)?;
    for (k, &(mean, std)) in values.iter().enumerate() {
        let y = (n - 1 - k) as f64;
        let color = line_colour(k);
        chart
            .draw_series([Rectangle::new(
                [(lo, y - 0.3), (mean, y + 0.3)],
                color.mix(0.7).filled(),
            )])
            .map_err(drawing_failed)?;
        let whisker = BLACK.stroke_width(2);
        chart
            .draw_series([
                PathElement::new(vec![(mean - std, y), (mean + std, y)], whisker),
                PathElement::new(
                    vec![(mean - std, y - 0.15), (mean - std, y + 0.15)],
                    whisker,
                ),
                PathElement::new(
                    vec![(mean + std, y - 0.15), (mean + std, y + 0.15)],
                    whisker,
                ),
            ])
            .map_err(drawing_failed)?;
    }
    Ok(())
}
