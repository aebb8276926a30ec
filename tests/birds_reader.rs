//! The CUB-200-2011 attribute reader on a small set of the published files (30
//! images, every one of the 312 attributes annotated): tasks, scores, the split,
//! features aligned by images.txt order, and each kind of malformed input failing
//! with the file (and line) named.

use std::fs;
use std::path::Path;

use sskernel::data::birds::{self, load_birds, Options};
use sskernel::data::npy;
use sskernel::data::{HeteroData, TaskKind};

const N: usize = 30;
const DIM: usize = 4;

/// Image ids in images.txt order: not 1..=N in order, so rows are found by id.
fn ids() -> Vec<u32> {
    (0..N as u32).map(|r| (r * 7) % N as u32 + 1).collect()
}

/// Training images: ids not divisible by 3 (20 of 30).
fn is_train(id: u32) -> bool {
    !id.is_multiple_of(3)
}

fn present(id: u32, a: u32) -> u32 {
    (id + a) % 2
}

fn certainty(id: u32, a: u32) -> u32 {
    1 + (id * 3 + a) % 4
}

struct Files {
    images: String,
    split: String,
    labels: String,
    features: Vec<u8>,
}

fn files() -> Files {
    let ids = ids();
    let images = ids
        .iter()
        .map(|id| format!("{id} {id:03}.Bird/Bird_{id}.jpg\n"))
        .collect();
    let split = ids
        .iter()
        .rev()
        .map(|&id| format!("{id} {}\n", is_train(id) as u32))
        .collect();
    let mut labels = String::new();
    for id in 1..=N as u32 {
        for a in 1..=birds::ATTRIBUTES {
            if (id, a) == (10, 7) {
                continue; // a missing annotation
            }
            let (p, c) = (present(id, a), certainty(id, a));
            // Some published lines carry an extra field; it must be tolerated.
            let extra = if a % 50 == 0 { " 0" } else { "" };
            labels.push_str(&format!("{id} {a} {p} {c} 12.5{extra}\n"));
        }
    }
    Files {
        images,
        split,
        labels,
        features: features(N),
    }
}

/// Row r is [r, r + 0.25, r + 0.5, r + 0.75] as f32.
fn features(rows: usize) -> Vec<u8> {
    let values: Vec<u8> = (0..rows * DIM)
        .flat_map(|k| ((k / DIM) as f32 + (k % DIM) as f32 * 0.25).to_le_bytes())
        .collect();
    npy::encode("<f4", &[rows, DIM], &values)
}

fn write(dir: &Path, f: &Files) {
    fs::create_dir_all(dir.join("attributes")).unwrap();
    fs::write(dir.join(birds::IMAGES), &f.images).unwrap();
    fs::write(dir.join(birds::SPLIT), &f.split).unwrap();
    fs::write(dir.join(birds::LABELS), &f.labels).unwrap();
    fs::write(dir.join("features.npy"), &f.features).unwrap();
}

fn options(seed: u64) -> Options {
    Options {
        attributes: vec![2, 7, 312],
        seed,
    }
}

fn load(dir: &Path, o: &Options) -> sskernel::data::error::Result<HeteroData> {
    load_birds(dir, &dir.join("features.npy"), o)
}

#[test]
fn tasks_scores_split_and_features() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &files());
    let d = load(dir.path(), &options(3)).unwrap();
    let names: Vec<&str> = d.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["attribute_2", "attribute_7", "attribute_312"]);
    assert!(d.tasks.iter().all(|t| t.kind == TaskKind::Rank));
    assert_eq!((d.inputs.rows(), d.inputs.dim()), (N, DIM));

    let ids = ids();
    for (row, &id) in ids.iter().enumerate() {
        for (t, &a) in [2u32, 7, 312].iter().enumerate() {
            let got = d.target(row, t);
            let c = certainty(id, a);
            if (id, a) == (10, 7) || c == 1 {
                assert!(got.is_nan(), "image {id} attribute {a}: {got}");
            } else {
                let sign = if present(id, a) == 1 { 1.0 } else { -1.0 };
                assert_eq!(got, sign * (c - 1) as f32 / 3.0, "image {id} attribute {a}");
            }
        }
    }

    // Official split; validation is 10% of the training images.
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (18, 2, 10));
    let test_ids: Vec<u32> = d.test.iter().map(|&r| ids[r]).collect();
    assert!(test_ids.iter().all(|&id| !is_train(id)), "{test_ids:?}");
    let mut official: Vec<usize> = [&d.train[..], &d.val[..]].concat();
    official.sort_unstable();
    assert_eq!(
        official,
        (0..N).filter(|&r| is_train(ids[r])).collect::<Vec<_>>()
    );
    assert_eq!(load(dir.path(), &options(3)).unwrap().val, d.val);
    assert_ne!(load(dir.path(), &options(4)).unwrap().val, d.val);

    // Feature row r belongs to images.txt line r.
    let mut out = vec![0.0; 2 * DIM];
    d.inputs.gather(&[5, 0], &mut out);
    assert_eq!(out, [5.0, 5.25, 5.5, 5.75, 0.0, 0.25, 0.5, 0.75]);

    let defaults = load(dir.path(), &Options::default()).unwrap();
    assert_eq!(defaults.tasks.len(), 10);
    assert_eq!(defaults.tasks[9].name, "attribute_280");
}

/// Loads the set after `damage`, expecting an error whose message holds every `needle`.
fn fails(damage: impl Fn(&mut Files), o: &Options, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut f = files();
    damage(&mut f);
    write(dir.path(), &f);
    let e = match load(dir.path(), o) {
        Ok(_) => panic!("loaded; expected an error with {needles:?}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(e.contains(n), "{e:?} lacks {n:?}");
    }
}

#[test]
fn features_not_aligned_with_images() {
    fails(
        |f| f.features = features(N - 1),
        &options(0),
        &["features.npy has 29 rows but", "images.txt lists 30 images"],
    );
}

#[test]
fn unknown_image_ids() {
    fails(
        |f| f.split.push_str("999 1\n"),
        &options(0),
        &[
            "train_test_split.txt: line 31: image id 999 is not in ",
            "/images.txt",
        ],
    );
    fails(
        |f| f.labels.insert_str(0, "31 2 1 4 3.0\n"),
        &options(0),
        &[
            "image_attribute_labels.txt: line 1: image id 31 is not in ",
            "/images.txt",
        ],
    );
}

/// A split or label line naming an id that images.txt lacks may be either file's
/// fault (found by tests/fuzz_readers.rs: a changed id in images.txt was reported
/// only against the split file), so images.txt is named in full too.
#[test]
fn unknown_image_id_names_images_txt_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = files();
    f.images = f.images.replacen("1 ", "4294967295 ", 1);
    write(dir.path(), &f);
    let e = load(dir.path(), &options(0)).unwrap_err().to_string();
    let images = dir.path().join(birds::IMAGES);
    assert!(
        e.contains(&format!("image id 1 is not in {}", images.display())),
        "{e}"
    );
}

#[test]
fn malformed_lines_name_file_and_line() {
    fails(
        |f| f.labels = f.labels.replacen("1 3 0 ", "1 3 2 ", 1),
        &options(0),
        &["image_attribute_labels.txt: line 3: is_present \"2\" (field 3) is not an integer in 0..=1"],
    );
    fails(
        |f| f.labels = f.labels.replacen("\n1 4 1 4 12.5\n", "\n1 4 1 12.5\n", 1),
        &options(0),
        &["line 4: certainty_id \"12.5\" (field 4) is not an integer in 1..=4"],
    );
    fails(
        |f| f.labels.push_str("4 1 1\n"),
        &options(0),
        &["line 9360: 3 fields, expected at least 4"],
    );
    fails(
        |f| f.images = f.images.replacen(".jpg\n", ".jpg extra\n", 1),
        &options(0),
        &["images.txt: line 1: 3 fields, expected 2"],
    );
    fails(
        |f| f.split.insert_str(0, "24 yes\n"),
        &options(0),
        &["train_test_split.txt: line 1: is_training_image \"yes\""],
    );
}

#[test]
fn attribute_ids_out_of_range() {
    fails(
        |f| f.labels.push_str("4 313 1 4 1.0\n"),
        &options(0),
        &["line 9360: attribute id \"313\" (field 2) is not an integer in 1..=312"],
    );
    fails(
        |_| {},
        &Options {
            attributes: vec![2, 0],
            seed: 0,
        },
        &["attribute id 0 is out of range 1..=312"],
    );
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &files());
    fs::remove_file(dir.path().join(birds::LABELS)).unwrap();
    let e = load(dir.path(), &options(0)).unwrap_err().to_string();
    assert!(
        e.contains("attributes/image_attribute_labels.txt") && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn every_image_needs_one_split_line() {
    fails(
        |f| f.split = f.split.lines().skip(1).map(|l| format!("{l}\n")).collect(),
        &options(0),
        &["train_test_split.txt: no line for image id"],
    );
    fails(
        |f| f.split.push_str("1 1\n"),
        &options(0),
        &["line 31: image id 1 appears twice"],
    );
}

#[test]
fn duplicate_annotation() {
    fails(
        |f| f.labels.push_str("1 7 1 4 1.0\n"),
        &options(0),
        &["line 9360: image 1, attribute 7 is annotated twice"],
    );
}
