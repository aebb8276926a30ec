//! The CIFAR-10 binary reader on small files of the exact format (60 records a
//! file instead of 10,000): shapes, labels, the split, the channel mean, and each
//! kind of damaged directory failing with the file named.

use std::fs;
use std::path::Path;

use sskernel::data::cifar10::{self, load_cifar10, load_cifar10_layout, Layout};

const PER_FILE: usize = 60;
const LAYOUT: Layout = Layout {
    records_per_file: PER_FILE,
    val_count: PER_FILE,
};

/// Record `i` of the whole set (training files first, then test): label i % 10;
/// R plane i % 256, G plane 2·label, B plane a ramp 0..=255 over the 1024 pixels.
fn record(i: usize) -> (u8, Vec<u8>) {
    let label = (i % 10) as u8;
    let mut pixels = vec![(i % 256) as u8; 1024];
    pixels.extend(std::iter::repeat_n(2 * label, 1024));
    pixels.extend((0..1024).map(|p| (p / 4) as u8));
    (label, pixels)
}

fn file_bytes(first: usize) -> Vec<u8> {
    let records: Vec<(u8, Vec<u8>)> = (first..first + PER_FILE).map(record).collect();
    let refs: Vec<(u8, &[u8])> = records.iter().map(|(l, p)| (*l, &p[..])).collect();
    cifar10::encode(&refs)
}

fn write_set(dir: &Path) {
    for (f, name) in cifar10::TRAIN_FILES.iter().enumerate() {
        fs::write(dir.join(name), file_bytes(f * PER_FILE)).unwrap();
    }
    fs::write(dir.join(cifar10::TEST_FILE), file_bytes(5 * PER_FILE)).unwrap();
}

#[test]
fn loads_shapes_labels_split_and_channel_mean() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path());
    let d = load_cifar10_layout(dir.path(), LAYOUT).unwrap();
    assert_eq!((d.name.as_str(), d.classes), ("cifar10", 10));
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (240, 60, 60));
    for s in [&d.train, &d.val, &d.test] {
        assert_eq!((s.channels, s.rows, s.cols), (3, 32, 32));
        assert_eq!(s.images.len(), s.len() * 3072);
    }
    // Batches 1–4 train in order, batch 5 validates, test_batch tests.
    for (split, first) in [(&d.train, 0), (&d.val, 240), (&d.test, 300)] {
        for k in [0, 17, split.len() - 1] {
            let (label, pixels) = record(first + k);
            assert_eq!(split.labels[k], label, "record {}", first + k);
            assert_eq!(split.image(k), &pixels[..], "record {}", first + k);
        }
    }
    assert_eq!(d.train.label_counts(10), vec![24; 10]);

    // Per-channel mean of the training records, pixel/255.
    let n = 240.0;
    let red = (0..240).map(|i| (i % 256) as f64).sum::<f64>() / n / 255.0;
    let green = (0..240).map(|i| 2.0 * (i % 10) as f64).sum::<f64>() / n / 255.0;
    let blue = (0..1024).map(|p| (p / 4) as f64).sum::<f64>() / 1024.0 / 255.0;
    let mean = d.train.channel_mean();
    assert_eq!(mean.len(), 3);
    for (got, want) in mean.iter().zip([red, green, blue]) {
        assert!((*got as f64 - want).abs() < 1e-6, "{mean:?} vs {want}");
    }
}

/// Loads `dir` after `damage`, expecting an error whose message holds every
/// `needle`.
fn fails(damage: impl Fn(&Path), layout: Layout, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path());
    damage(dir.path());
    let e = load_cifar10_layout(dir.path(), layout)
        .unwrap_err()
        .to_string();
    for n in needles {
        assert!(e.contains(n), "{e:?} lacks {n:?}");
    }
}

#[test]
fn missing_file_is_named() {
    fails(
        |d| fs::remove_file(d.join("test_batch.bin")).unwrap(),
        LAYOUT,
        &["not found", "test_batch.bin"],
    );
}

#[test]
fn size_not_a_multiple_of_a_record() {
    fails(
        |d| {
            let mut b = file_bytes(120);
            b.extend_from_slice(&[0; 5]);
            fs::write(d.join("data_batch_3.bin"), b).unwrap();
        },
        LAYOUT,
        &[
            "data_batch_3.bin",
            "184385 bytes",
            "not a whole number of 3073-byte",
        ],
    );
}

#[test]
fn file_truncated_at_a_record_boundary() {
    fails(
        |d| {
            let b = file_bytes(60);
            fs::write(d.join("data_batch_2.bin"), &b[..b.len() - 3073]).unwrap();
        },
        LAYOUT,
        &["data_batch_2.bin: 59 records, expected 60: truncated"],
    );
}

#[test]
fn empty_file() {
    fails(
        |d| fs::write(d.join("data_batch_1.bin"), b"").unwrap(),
        LAYOUT,
        &["data_batch_1.bin: 0 records, expected 60"],
    );
}

#[test]
fn label_above_nine() {
    fails(
        |d| {
            let mut b = file_bytes(180);
            b[17 * 3073] = 10;
            fs::write(d.join("data_batch_4.bin"), b).unwrap();
        },
        LAYOUT,
        &["data_batch_4.bin: label 10 at index 17 is out of range 0..10"],
    );
}

#[test]
fn small_files_are_not_the_official_set() {
    fails(
        |_| {},
        Layout::OFFICIAL,
        &["data_batch_1.bin: 60 records, expected 10000: truncated"],
    );
}

#[test]
fn missing_or_unreadable_directory() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nowhere");
    let e = load_cifar10(&gone).unwrap_err().to_string();
    assert!(e.contains("nowhere") && e.contains("No such file"), "{e}");
    let file = dir.path().join("a_file");
    fs::write(&file, b"x").unwrap();
    let e = load_cifar10(&file).unwrap_err().to_string();
    assert!(e.contains("a_file: is not a directory"), "{e}");
}
