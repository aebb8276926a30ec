//! `train features` data: a memory-mapped `.npy` X and a targets CSV, on small files
//! written here. Every bad input gives an error naming the file and, for a value,
//! its line, X row and column.

use std::fs;
use std::path::PathBuf;

use sskernel::data::features::{load_features, SplitSpec};
use sskernel::data::npy::encode;
use sskernel::data::split::Fractions;
use sskernel::data::tasks::{parse_task_flag, HeteroData, TaskKind, TaskType};

const ROWS: usize = 10;
const DIM: usize = 3;

/// Row r, column c: small multiples of 1/8, exact in f16, f32 and f64.
fn value(r: usize, c: usize) -> f32 {
    (r * DIM + c) as f32 / 8.0 - 1.0
}

/// X as `descr` ('<f2', '<f4' or '<f8'), [rows, DIM].
fn x_bytes(descr: &str, rows: usize) -> Vec<u8> {
    let values = (0..rows).flat_map(|r| (0..DIM).map(move |c| value(r, c)));
    let data: Vec<u8> = match descr {
        "<f2" => values
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        "<f4" => values.flat_map(f32::to_le_bytes).collect(),
        "<f8" => values.flat_map(|v| f64::from(v).to_le_bytes()).collect(),
        _ => unreachable!(),
    };
    encode(descr, &[rows, DIM], &data)
}

/// A header and ROWS lines: a class, a binary, a regression and a rank column, an
/// ignored one, and gaps (missing targets) on rows 2 and 5.
const GOOD_CSV: &str = "\
id,style,signed,year,score
0,cubism,1,1910.5,3
1,baroque,0,1650,2
2,, ,,
3,cubism,true,1912,1
4,\"pop, art\",False,1962,
5,baroque,,1640,0.5
6,cubism,1.0,1915,7
7,baroque,0,1655,1
8,pop art,1,1965,2
9,cubism,0,1920,9
";

struct Files {
    dir: tempfile::TempDir,
    x: PathBuf,
    y: PathBuf,
}

fn files(x: &[u8], csv: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let (xp, yp) = (dir.path().join("feats.npy"), dir.path().join("labels.csv"));
    fs::write(&xp, x).unwrap();
    fs::write(&yp, csv).unwrap();
    Files { dir, x: xp, y: yp }
}

fn all_tasks() -> Vec<(String, TaskType)> {
    [
        "style:class",
        "signed:binary",
        "year:regression",
        "score:rank",
    ]
    .iter()
    .map(|f| parse_task_flag(f).unwrap())
    .collect()
}

fn load(f: &Files, tasks: &[(String, TaskType)], split: SplitSpec) -> Result<HeteroData, String> {
    load_features(&f.x, &f.y, tasks, split, 0).map_err(|e| e.to_string())
}

fn gather_all(data: &HeteroData) -> Vec<f32> {
    let mut out = vec![f32::NAN; data.inputs.rows() * data.inputs.dim()];
    let idx: Vec<usize> = (0..data.inputs.rows()).collect();
    data.inputs.gather(&idx, &mut out);
    out
}

#[test]
fn f16_f32_and_f64_inputs_gather_the_same_rows() {
    let mut seen = Vec::new();
    for descr in ["<f2", "<f4", "<f8"] {
        let f = files(&x_bytes(descr, ROWS), GOOD_CSV);
        let data = load(&f, &all_tasks(), SplitSpec::Auto).unwrap();
        assert_eq!((data.inputs.rows(), data.inputs.dim()), (ROWS, DIM));
        let mut picked = vec![0f32; 2 * DIM];
        data.inputs.gather(&[7, 2], &mut picked);
        assert_eq!(
            picked,
            [7, 2].map(|r| [0, 1, 2].map(|c| value(r, c))).concat()
        );
        seen.push(gather_all(&data));
    }
    assert_eq!(seen[0], seen[1], "f16 vs f32");
    assert_eq!(seen[1], seen[2], "f32 vs f64");
}

#[test]
fn targets_missing_cells_and_labels() {
    let f = files(&x_bytes("<f4", ROWS), GOOD_CSV);
    let data = load(&f, &all_tasks(), SplitSpec::Fractions(Fractions::DEFAULT)).unwrap();
    let kinds: Vec<TaskKind> = data.tasks.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            TaskKind::Class { classes: 4 },
            TaskKind::Binary,
            TaskKind::Regression,
            TaskKind::Rank
        ]
    );
    assert_eq!(data.targets.len(), ROWS * 4);
    // Row 2 is all gaps; row 5 lacks `signed`; row 4 lacks `score`.
    for t in 0..4 {
        assert!(data.target(2, t).is_nan(), "row 2 task {t}");
    }
    assert!(data.target(5, 1).is_nan() && data.target(4, 3).is_nan());
    assert_eq!(
        [3, 4, 6, 7].map(|r| data.target(r, 1)),
        [1.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(data.target(0, 2), 1910.5, "regression keeps its unit");
    assert_eq!(data.target(5, 3), 0.5);

    // Class indices: first appearance over the training rows, ascending; a
    // quoted comma is part of the label.
    let style = &data.tasks[0];
    let label_of = |r: usize| style.labels[data.target(r, 0) as usize].as_str();
    assert_eq!(label_of(4), "pop, art");
    assert_eq!(label_of(8), "pop art");
    let first = data.train.iter().find(|&&r| r != 2).unwrap();
    assert_eq!(
        data.target(*first, 0),
        0.0,
        "first training row has index 0"
    );
    let mut train_labels: Vec<&str> = Vec::new();
    for &r in &data.train {
        if r != 2 && !train_labels.contains(&label_of(r)) {
            train_labels.push(label_of(r));
        }
    }
    assert_eq!(style.labels[..train_labels.len()], train_labels[..]);

    // Moments of `year` over training rows only.
    let years: Vec<f64> = data
        .train
        .iter()
        .map(|&r| f64::from(data.target(r, 2)))
        .filter(|v| !v.is_nan())
        .collect();
    let mean = years.iter().sum::<f64>() / years.len() as f64;
    let (m, s) = data.train_moments(2);
    assert!((m - mean).abs() < 1e-9 && s > 0.0, "{m} {s} vs {mean}");
}

#[test]
fn fraction_split_is_seeded_and_a_split_column_is_used() {
    let f = files(&x_bytes("<f4", ROWS), GOOD_CSV);
    let tasks = all_tasks();
    let split = SplitSpec::parse("0.6:0.2:0.2").unwrap();
    let a = load_features(&f.x, &f.y, &tasks, split, 3).unwrap();
    let b = load_features(&f.x, &f.y, &tasks, split, 3).unwrap();
    assert_eq!((a.train.len(), a.val.len(), a.test.len()), (6, 2, 2));
    assert_eq!(
        (&a.train, &a.val),
        (&b.train, &b.val),
        "same seed, same split"
    );

    let with_column: String = GOOD_CSV
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let part = match i {
                0 => "split",
                1 | 5 => "val",
                9 => "test",
                _ => "train",
            };
            format!("{line},{part}\n")
        })
        .collect();
    let f = files(&x_bytes("<f4", ROWS), &with_column);
    let data = load(&f, &tasks, SplitSpec::Auto).unwrap();
    assert_eq!(data.val, [0, 4]);
    assert_eq!(data.test, [8]);
    assert_eq!(data.train, [1, 2, 3, 5, 6, 7, 9]);
    // "baroque" is the first training label; "pop, art" (only in val) and then
    // "pop art" (only in test) come after the training ones.
    assert_eq!(
        data.tasks[0].labels,
        ["baroque", "cubism", "pop, art", "pop art"]
    );
    assert_eq!(
        [1, 0, 4, 8].map(|r| data.target(r, 0)),
        [0.0, 1.0, 2.0, 3.0]
    );

    let e = load(&f, &tasks, split).unwrap_err();
    assert!(
        e.contains("labels.csv") && e.contains("'split' column") && e.contains("--split"),
        "{e}"
    );
}

/// The error for `csv` (and X of `rows` rows), which must name `file` and hold
/// each of `says`.
fn error_of(rows: usize, csv: &str, tasks: &[&str], file: &str, says: &[&str]) {
    let f = files(&x_bytes("<f4", rows), csv);
    let tasks: Vec<_> = tasks.iter().map(|t| parse_task_flag(t).unwrap()).collect();
    let e = load(&f, &tasks, SplitSpec::Auto).unwrap_err();
    assert!(e.contains(file), "does not name {file}: {e}");
    for s in says {
        assert!(e.contains(s), "does not say {s:?}: {e}");
    }
    drop(f.dir);
}

#[test]
fn bad_targets_name_file_row_and_column() {
    error_of(
        ROWS + 1,
        GOOD_CSV,
        &["year:regression"],
        "labels.csv",
        &["10 data rows", "feats.npy", "11 rows"],
    );
    error_of(
        ROWS - 1,
        GOOD_CSV,
        &["year:regression"],
        "feats.npy",
        &["9 rows"],
    );
    error_of(
        ROWS,
        GOOD_CSV,
        &["genre:class"],
        "labels.csv",
        &["no column 'genre'", "id, style, signed, year, score"],
    );
    let bad_year = GOOD_CSV.replace("1962", "1962?");
    error_of(
        ROWS,
        &bad_year,
        &["year:regression"],
        "labels.csv",
        &[
            "line 6 (X row 4)",
            "column 'year'",
            "\"1962?\"",
            "finite number",
        ],
    );
    let nan_score = GOOD_CSV.replace(",1920,9", ",1920,nan");
    error_of(
        ROWS,
        &nan_score,
        &["score:rank"],
        "labels.csv",
        &["line 11 (X row 9)", "column 'score'", "finite number"],
    );
    let bad_binary = GOOD_CSV.replace("1,baroque,0,", "1,baroque,2,");
    error_of(
        ROWS,
        &bad_binary,
        &["signed:binary"],
        "labels.csv",
        &[
            "line 3 (X row 1)",
            "column 'signed'",
            "\"2\"",
            "0, 1, true or false",
        ],
    );
    let bad_split = GOOD_CSV.replace("score\n", "score,split\n").replace(
        "\n0,cubism,1,1910.5,3\n",
        "\n0,cubism,1,1910.5,3,training\n",
    );
    error_of(
        ROWS,
        &bad_split,
        &["year:regression"],
        "labels.csv",
        &["line 2 (X row 0)", "\"training\""],
    );
    let ragged = GOOD_CSV.replace("7,baroque,0,1655,1", "7,baroque,0,1655");
    error_of(
        ROWS,
        &ragged,
        &["year:regression"],
        "labels.csv",
        &["line: 9"],
    );
    let no_scores: String = GOOD_CSV
        .lines()
        .map(|l| format!("{},\n", l.rsplit_once(',').unwrap().0))
        .collect();
    error_of(
        ROWS,
        &no_scores.replacen(",\n", ",score\n", 1),
        &["year:regression", "score:rank"],
        "labels.csv",
        &[
            "column 'score' is empty in all 8 training rows",
            "0.8:0.1:0.1",
        ],
    );
    let twice = GOOD_CSV.replace("score\n", "year\n");
    error_of(
        ROWS,
        &twice,
        &["year:regression"],
        "labels.csv",
        &["'year' appears more than once"],
    );
}

#[test]
fn split_column_values_are_checked() {
    let csv: String = GOOD_CSV
        .lines()
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{l},{}\n",
                ["split", "train", "valid"].get(i).unwrap_or(&"test")
            )
        })
        .collect();
    error_of(
        ROWS,
        &csv,
        &["year:regression"],
        "labels.csv",
        &[
            "line 3 (X row 1)",
            "column 'split'",
            "\"valid\"",
            "train, val or test",
        ],
    );
}

#[test]
fn bad_flags_name_the_flag() {
    let e = parse_task_flag("year:ordinal").unwrap_err().to_string();
    assert!(
        e.contains("--task year:ordinal") && e.contains("class, binary, regression, rank"),
        "{e}"
    );
    for bad in ["0.8:0.1", "0.8:0.3:0.1", "x:0.1:0.1"] {
        let e = SplitSpec::parse(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("--split {bad}")), "{e}");
    }
    let f = files(&x_bytes("<f4", ROWS), GOOD_CSV);
    let twice = [
        parse_task_flag("year:regression").unwrap(),
        parse_task_flag("year:rank").unwrap(),
    ];
    let e = load(&f, &twice, SplitSpec::Auto).unwrap_err();
    assert!(
        e.contains("--task year:rank") && e.contains("more than once"),
        "{e}"
    );
    let e = load(&f, &[], SplitSpec::Auto).unwrap_err();
    assert!(e.contains("no task") && e.contains("labels.csv"), "{e}");
}

#[test]
fn bad_features_files_are_refused() {
    let write = |bytes: &[u8]| files(bytes, GOOD_CSV);
    let tasks = all_tasks();
    let check = |f: &Files, says: &str| {
        let e = load(f, &tasks, SplitSpec::Auto).unwrap_err();
        assert!(e.contains("feats.npy") && e.contains(says), "{e}");
    };
    check(
        &write(&encode("<i4", &[ROWS, DIM], &[0; ROWS * DIM * 4])),
        "'<f2', '<f4' or '<f8'",
    );
    check(
        &write(&encode("<f4", &[ROWS * DIM], &[0; ROWS * DIM * 4])),
        "expected 2 dimensions",
    );
    let mut short = x_bytes("<f4", ROWS);
    short.truncate(short.len() - 1);
    check(&write(&short), "truncated");
    let mut long = x_bytes("<f2", ROWS);
    long.push(0);
    check(&write(&long), "trailing bytes");
    let mut fortran = x_bytes("<f8", ROWS);
    let at = fortran.windows(5).position(|w| w == b"False").unwrap();
    fortran[at..at + 5].copy_from_slice(b"True ");
    check(&write(&fortran), "Fortran");
    check(&write(b"not an npy file"), "magic");
    let f = write(&x_bytes("<f4", ROWS));
    let missing = Files {
        x: f.dir.path().join("absent.npy"),
        y: f.y.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let e = load(&missing, &tasks, SplitSpec::Auto).unwrap_err();
    assert!(e.contains("absent.npy"), "{e}");
}
