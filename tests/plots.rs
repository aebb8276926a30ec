//! The figures: `train` writes curves.png (and grouping.png when sharing decided),
//! summary.md links them, `reproduce` writes table.png, the heterogeneous trainer
//! writes curves.png and summary.md, a heterogeneous `reproduce` table.png, and `sskernel explain` writes explain.png per run and the
//! side-by-side grid, refusing what it cannot explain with the file named. Every PNG
//! is decoded and must have its expected size and real content (text, lines, maps),
//! not one flat colour. Small data and a few steps: seconds.

use sskernel::backend::cpu::Cpu;
use sskernel::data::attributes;
use sskernel::model::Mode;
use sskernel::sharing::criteria::Criterion;
use sskernel::sharing::selective::SharingConfig;
use sskernel::train::hetero::{train_hetero, HeteroConfig};
use sskernel::train::{self, reproduce, TrainConfig};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
#[path = "common/runs.rs"]
mod runs;
use runs::{sskernel, tiny};

/// Two epochs of 4 steps at batch 32.
fn config(mode: Mode, out: &Path, seed: u64) -> TrainConfig {
    TrainConfig {
        dataset: "mnist".into(),
        mode,
        epochs: 2,
        batch: 32,
        lr: 0.02,
        momentum: 0.5,
        seed,
        max_steps: None,
        data_dir: None,
        out: out.to_path_buf(),
        device: "cpu".into(),
        sharing: (mode == Mode::Selective).then(|| SharingConfig::new(Criterion::Similarity)),
        checkpoints: Default::default(),
        eager: false,
    }
}

/// Decodes `path`, checks its size, and that it is a picture: many distinct
/// colours (anti-aliased text, lines, colour maps) and a good share of pixels that
/// are not the background.
#[track_caller]
fn assert_picture(path: &Path, size: (u32, u32)) {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(image.dimensions(), size, "{}", path.display());
    let colours: HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() >= 30,
        "{}: {} distinct colours",
        path.display(),
        colours.len()
    );
    let background = image.get_pixel(0, image.height() - 1).0;
    let drawn = image.pixels().filter(|p| p.0 != background).count();
    let share = drawn as f64 / (size.0 * size.1) as f64;
    assert!(
        share > 0.02,
        "{}: {share:.3} of the pixels drawn",
        path.display()
    );
}

#[test]
fn train_and_reproduce_draw_their_figures_and_explain_draws_the_regions() {
    let data = tiny(128, 60, 60);
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<PathBuf> = [Mode::Selective, Mode::Stl]
        .iter()
        .map(|&mode| {
            let out = dir
                .path()
                .join(reproduce::label(mode, Criterion::Similarity));
            train::train(&Cpu, &config(mode, &out, 1), &data).unwrap();
            out
        })
        .collect();
    let (sel, stl) = (&runs[0], &runs[1]);
    // Four panels two to a row under the header.
    assert_picture(&sel.join("curves.png"), (840, 44 + 2 * 260));
    assert_picture(&stl.join("curves.png"), (840, 44 + 2 * 260));
    // One row per decision: one each epoch (the short run does not lock).
    let decisions = std::fs::read_to_string(sel.join("grouping.json")).unwrap();
    let decisions: serde_json::Value = serde_json::from_str(&decisions).unwrap();
    let rows = decisions.as_array().unwrap().len() as u32;
    assert!(rows >= 1);
    assert_picture(&sel.join("grouping.png"), (900, 330 * rows));
    assert!(!stl.join("grouping.png").exists(), "STL decides nothing");
    let md = std::fs::read_to_string(sel.join("summary.md")).unwrap();
    assert!(
        md.contains("](curves.png)") && md.contains("](grouping.png)"),
        "{md}"
    );
    let md = std::fs::read_to_string(stl.join("summary.md")).unwrap();
    assert!(
        md.contains("](curves.png)") && !md.contains("grouping.png"),
        "{md}"
    );

    // explain: one grid per run (6 images × 10 tasks of 56 px + 3 px gaps), and both
    // side by side where --out says.
    let compare = dir.path().join("compare.png");
    let out = sskernel(&[
        "explain",
        sel.to_str().unwrap(),
        stl.to_str().unwrap(),
        "--images",
        "6",
        "--device",
        "cpu",
        "--out",
        compare.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let block = 10 * (56 + 3);
    let height = 44 + 6 * (56 + 3) + 22;
    assert_picture(&sel.join("explain.png"), (34 + block + 18, height));
    assert_picture(&stl.join("explain.png"), (34 + block + 18, height));
    assert_picture(&compare, (34 + 2 * (block + 18), height));
    // A subset of tasks; the default comparison path.
    let out = sskernel(&[
        "explain",
        sel.to_str().unwrap(),
        stl.to_str().unwrap(),
        "--tasks",
        "2,7",
        "--images",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let height = 44 + 3 * (56 + 3) + 22;
    assert_picture(
        &sel.join("explain-compare.png"),
        (34 + 2 * (2 * (56 + 3) + 18), height),
    );

    // reproduce: table.png beside table.md, which links it.
    let configs: Vec<TrainConfig> = [0, 1]
        .iter()
        .flat_map(|&seed| {
            [Mode::Stl, Mode::Selective].map(|mode| {
                let label = reproduce::label(mode, Criterion::Similarity);
                config(mode, &dir.path().join(format!("{label}-seed{seed}")), seed)
            })
        })
        .collect();
    reproduce::run(&Cpu, &configs, &data, dir.path()).unwrap();
    assert_picture(&dir.path().join("table.png"), (900, 200));
    let md = std::fs::read_to_string(dir.path().join("table.md")).unwrap();
    assert!(md.contains("](table.png)"), "{md}");
}

#[test]
fn explain_refuses_what_it_cannot_explain_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fail = |args: &[&str]| {
        let out = sskernel(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let run = dir.path().to_str().unwrap();
    // No run there.
    let err = fail(&["explain", run, "--device", "cpu"]);
    assert!(err.contains("config.json"), "{err}");
    // A heterogeneous run.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"config": {"mode": "mtl"}, "data": "mnist-attributes"}"#,
    )
    .unwrap();
    let err = fail(&["explain", run, "--device", "cpu"]);
    assert!(
        err.contains("config.json")
            && err.contains("heterogeneous")
            && err.contains("mnist-attributes"),
        "{err}"
    );
    // A digit run whose checkpoint is missing.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"config": {"dataset": "mnist", "mode": "mtl", "batch": 64}, "data": {}}"#,
    )
    .unwrap();
    let err = fail(&["explain", run, "--device", "cpu"]);
    assert!(err.contains("best.safetensors"), "{err}");
    let err = fail(&["explain", run, "--images", "0", "--device", "cpu"]);
    assert!(err.contains("--images"), "{err}");
}

#[test]
fn the_heterogeneous_trainer_draws_its_curves_and_groupings() {
    let mut data = attributes::load().unwrap();
    data.train.truncate(400);
    data.val.truncate(200);
    data.test.truncate(200);
    let dir = tempfile::tempdir().unwrap();
    let cfg = HeteroConfig {
        mode: Mode::Selective,
        only_task: None,
        epochs: 2,
        batch: 100,
        lr: 0.002,
        seed: 3,
        max_steps: None,
        convs: None,
        shared: 64,
        branch_hidden: [24, 16],
        dropout: 0.2,
        out: dir.path().to_path_buf(),
        device: "cpu".into(),
        sharing: Some(SharingConfig::new(Criterion::Similarity)),
        checkpoints: Default::default(),
    };
    train_hetero(&Cpu, &cfg, &data).unwrap();
    // Loss, three metric units (accuracy %, MAE, rank accuracy %), parameters.
    assert_picture(&dir.path().join("curves.png"), (840, 44 + 3 * 260));
    let decisions = std::fs::read_to_string(dir.path().join("grouping.json")).unwrap();
    let decisions: serde_json::Value = serde_json::from_str(&decisions).unwrap();
    let rows = decisions.as_array().unwrap().len() as u32;
    assert_picture(&dir.path().join("grouping.png"), (900, 330 * rows));
    // summary.md: each task in its unit, the epochs, both figures.
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    for part in [
        "| digit (class (10), accuracy %) |",
        "| ink (regression, MAE) |",
        "| ink-rank (rank, rank accuracy %) |",
        "Tasks per branch of this model: ",
        "## Epochs",
        "## Grouping decision of epoch",
        "](curves.png)",
        "](grouping.png)",
    ] {
        assert!(md.contains(part), "no `{part}` in\n{md}");
    }
}

#[test]
fn a_heterogeneous_reproduce_draws_its_table_and_every_run_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = sskernel(&[
        "reproduce",
        "mnist-attributes",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--shared",
        "16",
        "--hidden",
        "8,8",
        "--configs",
        "stl,mtl,selective-similarity",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Six tasks and the parameters, two panels to a row; three configurations.
    let rows = 3;
    assert_picture(
        &dir.path().join("table.png"),
        (900, 30 + 4 * sskernel::report::plot::table_row_height(rows)),
    );
    let md = std::fs::read_to_string(dir.path().join("table.md")).unwrap();
    assert!(md.contains("](table.png)"), "{md}");
    // Every run links its curves; MTL decides nothing, so no grouping.png.
    // Panels: the loss, one per metric unit, the parameters.
    for (run, panels) in [
        ("stl-digit-seed0", 3),
        ("stl-ink-rank-seed0", 3),
        ("mtl-seed0", 5),
    ] {
        let run = dir.path().join(run);
        let md = std::fs::read_to_string(run.join("summary.md")).unwrap();
        assert!(
            md.contains("](curves.png)") && !md.contains("grouping.png"),
            "{md}"
        );
        let rows: u32 = (panels as u32).div_ceil(2);
        assert_picture(&run.join("curves.png"), (840, 44 + rows * 260));
    }
    let md = std::fs::read_to_string(dir.path().join("mtl-seed0/summary.md")).unwrap();
    assert!(md.contains("| parity (binary, accuracy %) |"), "{md}");
}
