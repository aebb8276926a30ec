//! Bad inputs: each must give an error (never a panic) whose message names the
//! file and the problem with the values.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::{write::GzEncoder, Compression};
use sskernel::data::idx::{encode, read_pair};
use sskernel::data::mnist::load_standard;
use sskernel::data::{load, DatasetName};

const PX: usize = 28 * 28;

fn images(n: usize) -> Vec<u8> {
    encode(&[n as u32, 28, 28], &vec![7u8; n * PX])
}

fn labels(n: usize) -> Vec<u8> {
    encode(
        &[n as u32],
        &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
    )
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes a valid pair and returns (dir, images path, labels path).
fn pair(n_images: usize, n_labels: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let im = dir.path().join("train-images-idx3-ubyte");
    let lb = dir.path().join("train-labels-idx1-ubyte");
    fs::write(&im, images(n_images)).unwrap();
    fs::write(&lb, labels(n_labels)).unwrap();
    (dir, im, lb)
}

fn err(im: &Path, lb: &Path) -> String {
    match read_pair(im, lb, 28, 28, 10) {
        Ok(_) => panic!("expected an error for {} / {}", im.display(), lb.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, file: &Path, problem: &str) {
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "message does not name {name}: {msg}");
    assert!(
        msg.contains(problem),
        "message does not say '{problem}': {msg}"
    );
}

#[test]
fn truncated_file() {
    let (_d, im, lb) = pair(5, 5);
    let bytes = fs::read(&im).unwrap();
    fs::write(&im, &bytes[..bytes.len() - 100]).unwrap();
    let msg = err(&im, &lb);
    assert_names(&msg, &im, "truncated");
    assert!(
        msg.contains(&format!(
            "{} bytes, expected {}",
            16 + 5 * PX - 100,
            16 + 5 * PX
        )),
        "{msg}"
    );
}

#[test]
fn trailing_bytes() {
    let (_d, im, lb) = pair(5, 5);
    let mut bytes = fs::read(&lb).unwrap();
    bytes.push(0);
    fs::write(&lb, bytes).unwrap();
    assert_names(&err(&im, &lb), &lb, "trailing bytes");
}

#[test]
fn header_shorter_than_rank() {
    let (_d, im, lb) = pair(5, 5);
    fs::write(&im, [0, 0, 8, 3, 0, 0, 0, 5]).unwrap();
    assert_names(&err(&im, &lb), &im, "too short for an IDX header of rank 3");
}

#[test]
fn wrong_magic() {
    let (_d, im, lb) = pair(5, 5);
    let mut bytes = fs::read(&im).unwrap();
    bytes[0] = 0x1f; // e.g. a gzip file without the .gz name
    bytes[1] = 0x8b;
    fs::write(&im, bytes).unwrap();
    assert_names(
        &err(&im, &lb),
        &im,
        "magic 0x1f8b0803 is not IDX images (expected 0x00000803)",
    );
}

#[test]
fn labels_file_given_as_images() {
    let (_d, _im, lb) = pair(5, 5);
    // Rank 1 where rank 3 is expected.
    let msg = err(&lb, &lb);
    assert_names(&msg, &lb, "IDX rank 1, expected 3 (images)");
}

#[test]
fn wrong_data_type() {
    let (_d, im, lb) = pair(5, 5);
    let mut bytes = fs::read(&lb).unwrap();
    bytes[2] = 0x0d; // float
    fs::write(&lb, bytes).unwrap();
    assert_names(&err(&im, &lb), &lb, "data type 0x0d, expected 0x08");
}

#[test]
fn count_mismatch() {
    let (_d, im, lb) = pair(5, 4);
    let msg = err(&im, &lb);
    assert_names(&msg, &im, "has 5 images but");
    assert_names(&msg, &lb, "has 4 labels");
}

#[test]
fn label_out_of_range() {
    let (_d, im, lb) = pair(5, 5);
    let mut bytes = fs::read(&lb).unwrap();
    bytes[8 + 3] = 12;
    fs::write(&lb, bytes).unwrap();
    assert_names(
        &err(&im, &lb),
        &lb,
        "label 12 at index 3 is out of range 0..10",
    );
}

#[test]
fn empty_file() {
    let (_d, im, lb) = pair(5, 5);
    fs::write(&lb, b"").unwrap();
    assert_names(&err(&im, &lb), &lb, "file is empty");
}

#[test]
fn zero_count() {
    let (_d, im, lb) = pair(5, 5);
    fs::write(&im, encode(&[0, 28, 28], &[])).unwrap();
    assert_names(&err(&im, &lb), &im, "dimension 0 is 0");
}

#[test]
fn wrong_image_size() {
    let (_d, im, lb) = pair(5, 5);
    fs::write(&im, encode(&[5, 32, 32], &vec![0; 5 * 32 * 32])).unwrap();
    assert_names(&err(&im, &lb), &im, "images are 32x32, expected 28x28");
}

#[test]
fn missing_file() {
    let (d, _im, _lb) = pair(5, 5);
    let msg = load(DatasetName::Mnist, Some(d.path()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not found"), "{msg}");
    for name in [
        "t10k-images-idx3-ubyte",
        "t10k-images-idx3-ubyte.gz",
        "t10k-images.idx3-ubyte",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        assert!(msg.contains(name), "does not list {name}: {msg}");
    }
    // The files that are there are not listed as looked for.
    assert!(!msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
}

#[test]
fn missing_directory() {
    let msg = load(DatasetName::Mnist, Some(Path::new("/nonexistent/mnist")))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("/nonexistent/mnist/train-images-idx3-ubyte"),
        "{msg}"
    );
}

#[test]
fn not_gzip_at_all() {
    let (d, im, lb) = pair(5, 5);
    let bad = d.path().join("train-images-idx3-ubyte.gz");
    fs::write(&bad, b"this is not gzip data, just text").unwrap();
    assert_names(&err(&bad, &lb), &bad, "not a valid gzip stream");
    drop(im);
}

#[test]
fn corrupt_gzip_body() {
    let (d, _im, lb) = pair(5, 5);
    let bad = d.path().join("train-images-idx3-ubyte.gz");
    let mut bytes = gz(&images(5));
    let mid = bytes.len() / 2;
    bytes.truncate(mid); // lost the end of the deflate stream and the trailer
    bytes.extend_from_slice(&[0xff; 8]);
    fs::write(&bad, &bytes).unwrap();
    assert_names(&err(&bad, &lb), &bad, "not a valid gzip stream");
    // Nothing half-written is left in the cache to be reused.
    let cache = d.path().join(".sskernel-cache");
    let left = fs::read_dir(&cache).map(|r| r.count()).unwrap_or(0);
    assert_eq!(left, 0, "files left in {}", cache.display());
}

#[test]
fn too_few_for_validation_split() {
    let d = tempfile::tempdir().unwrap();
    for (stem, bytes) in [
        ("train-images-idx3-ubyte", images(5)),
        ("train-labels-idx1-ubyte", labels(5)),
        ("t10k-images-idx3-ubyte", images(2)),
        ("t10k-labels-idx1-ubyte", labels(2)),
    ] {
        fs::write(d.path().join(stem), bytes).unwrap();
    }
    let msg = load_standard(d.path(), "mnist", 10, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte: 5 training images is too few to hold out 10"),
        "{msg}"
    );
}
