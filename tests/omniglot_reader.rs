//! The OmniGlot reader on a small tree of the published layout, PNGs written with
//! the `image` crate: labels by sorted alphabet name, 28×28 grey pixels, the
//! stratified seeded split, and each kind of damaged tree failing with the path named.

use std::fs;
use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use sskernel::data::omniglot::{load_omniglot, Omniglot, Options};
use sskernel::data::split::Fractions;

const BACKGROUND: [&str; 3] = ["Greek", "Alpha", "Cyrillic"];
const PER_CHARACTER: usize = 4;

/// The grey value of image `file` of `character` in alphabet `name`: distinct per
/// image, uniform, so resizing keeps it.
fn shade(name: &str, character: usize, file: usize) -> u8 {
    let a = name.bytes().next().unwrap() - b'A';
    a * 8 + (character * PER_CHARACTER + file) as u8 * 2
}

fn png_path(root: &Path, set: &str, name: &str, character: usize, file: usize) -> PathBuf {
    root.join(set)
        .join(name)
        .join(format!("character{:02}", character + 1))
        .join(format!("{:04}_{:02}.png", character + 1, file + 1))
}

/// `alphabets` of `set`, 2 characters each, PER_CHARACTER 105×105 PNGs per character.
fn write_alphabets(root: &Path, set: &str, alphabets: &[&str]) {
    for name in alphabets {
        for c in 0..2 {
            for f in 0..PER_CHARACTER {
                let path = png_path(root, set, name, c, f);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                GrayImage::from_pixel(105, 105, Luma([shade(name, c, f)]))
                    .save(&path)
                    .unwrap();
            }
        }
    }
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_alphabets(dir.path(), "images_background", &BACKGROUND);
    dir
}

fn options(seed: u64) -> Options {
    Options {
        evaluation: false,
        fractions: Fractions::parse("0.5:0.25:0.25").unwrap(),
        seed,
    }
}

fn load(dir: &Path, o: &Options) -> Omniglot {
    load_omniglot(dir, o).unwrap()
}

#[test]
fn labels_pixels_and_stratified_split() {
    let dir = tree();
    let o = load(dir.path(), &options(5));
    assert_eq!(
        o.alphabets,
        ["Alpha", "Cyrillic", "Greek"],
        "sorted by name"
    );
    let d = &o.dataset;
    assert_eq!((d.name.as_str(), d.classes), ("omniglot", 3));
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (12, 6, 6));
    assert_eq!(d.train.label_counts(3), [4, 4, 4], "per alphabet: 8 × 0.5");
    assert_eq!(d.val.label_counts(3), [2, 2, 2]);
    assert_eq!(d.test.label_counts(3), [2, 2, 2]);

    // Every image of the tree is in exactly one split, under its alphabet's label,
    // resized to a uniform 28×28 of its shade.
    let mut seen = Vec::new();
    for s in [&d.train, &d.val, &d.test] {
        assert_eq!((s.channels, s.rows, s.cols), (1, 28, 28));
        assert!(s.labels.windows(2).all(|w| w[0] <= w[1]), "alphabet order");
        for i in 0..s.len() {
            let px = s.image(i);
            assert!(px.iter().all(|&p| p == px[0]), "uniform after resize");
            seen.push((s.labels[i], px[0]));
        }
    }
    seen.sort_unstable();
    let mut want: Vec<(u8, u8)> = Vec::new();
    for (label, name) in o.alphabets.iter().enumerate() {
        for c in 0..2 {
            for f in 0..PER_CHARACTER {
                want.push((label as u8, shade(name, c, f)));
            }
        }
    }
    want.sort_unstable();
    assert_eq!(seen, want);

    let again = load(dir.path(), &options(5)).dataset;
    assert_eq!(again.val, d.val, "same seed, same split");
    let other = load(dir.path(), &options(6)).dataset;
    assert_ne!(other.val.images, d.val.images, "new seed, new split");
}

#[test]
fn evaluation_alphabets_join_in_name_order_and_colour_becomes_grey() {
    let dir = tree();
    write_alphabets(dir.path(), "images_evaluation", &["Bengali"]);
    // One colour PNG, converted to grey by its luma.
    let colour = png_path(dir.path(), "images_evaluation", "Bengali", 0, 0);
    RgbImage::from_pixel(105, 105, Rgb([200, 100, 50]))
        .save(&colour)
        .unwrap();
    // A file manager's hidden file is not part of the data set.
    fs::write(colour.with_file_name(".DS_Store"), b"junk").unwrap();

    let o = load(
        dir.path(),
        &Options {
            evaluation: true,
            fractions: Fractions::parse("1:0:0").unwrap(),
            seed: 0,
        },
    );
    assert_eq!(o.alphabets, ["Alpha", "Bengali", "Cyrillic", "Greek"]);
    let train = &o.dataset.train;
    assert_eq!((o.dataset.classes, train.len()), (4, 32));
    // Bengali (label 1) is images 8..16 in (alphabet, character, file) order.
    assert_eq!(train.labels[8..16], [1; 8]);
    let luma = 0.2126 * 200.0 + 0.7152 * 100.0 + 0.0722 * 50.0;
    let got = train.image(8)[0] as f64;
    assert!((got - luma).abs() <= 1.0, "{got} vs {luma}");
}

/// Loads `dir` after `damage`, expecting an error whose message holds every `needle`.
fn fails(damage: impl Fn(&Path), needles: &[&str]) {
    let dir = tree();
    damage(dir.path());
    let e = load_omniglot(dir.path(), &options(0))
        .unwrap_err()
        .to_string();
    for n in needles {
        assert!(e.contains(n), "{e:?} lacks {n:?}");
    }
}

#[test]
fn missing_directory() {
    fails(
        |d| fs::remove_dir_all(d.join("images_background")).unwrap(),
        &[
            "OmniGlot images_background directory not found",
            "images_background",
        ],
    );
    let dir = tree();
    let e = load_omniglot(
        dir.path(),
        &Options {
            evaluation: true,
            ..options(0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("images_evaluation"), "{e}");
}

#[test]
fn empty_alphabet() {
    fails(
        |d| fs::create_dir(d.join("images_background/Hebrew")).unwrap(),
        &["images_background/Hebrew: alphabet holds no character directories"],
    );
}

#[test]
fn empty_character() {
    fails(
        |d| fs::create_dir(d.join("images_background/Greek/character03")).unwrap(),
        &["Greek/character03: character directory holds no .png images"],
    );
}

#[test]
fn corrupt_png_is_named() {
    fails(
        |d| {
            fs::write(
                png_path(d, "images_background", "Cyrillic", 1, 2),
                b"not a png",
            )
            .unwrap()
        },
        &["Cyrillic/character02/0002_03.png: not a readable PNG"],
    );
}

#[test]
fn truncated_png_is_named() {
    fails(
        |d| {
            let p = png_path(d, "images_background", "Alpha", 0, 3);
            let b = fs::read(&p).unwrap();
            fs::write(&p, &b[..b.len() / 2]).unwrap();
        },
        &["Alpha/character01/0001_04.png: not a readable PNG"],
    );
}

/// A PNG whose header claims far more pixels than its bytes can hold is refused
/// before the decoder allocates the image (tests/fuzz_readers.rs found a 267-byte
/// file claiming 65535×105 pixels allocating 20 MB; up to 512 MiB could go).
#[test]
fn png_claiming_more_pixels_than_its_bytes_is_refused() {
    fails(
        |d| {
            let p = png_path(d, "images_background", "Greek", 1, 0);
            let mut b = fs::read(&p).unwrap();
            // IHDR: length, type, then width and height; its CRC follows the 13 bytes.
            b[16..20].copy_from_slice(&30_000u32.to_be_bytes());
            b[20..24].copy_from_slice(&20_000u32.to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(&b[12..29]);
            b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
            fs::write(&p, &b).unwrap();
        },
        &[
            "Greek/character02/0002_01.png: the PNG header claims 30000x20000 pixels",
            "a damaged file",
        ],
    );
}

#[test]
fn non_png_file_is_an_error() {
    fails(
        |d| {
            fs::write(
                d.join("images_background/Alpha/character02/notes.txt"),
                b"x",
            )
            .unwrap()
        },
        &["Alpha/character02/notes.txt: not a .png file"],
    );
}

#[test]
fn file_where_an_alphabet_should_be() {
    fails(
        |d| fs::write(d.join("images_background/README"), b"x").unwrap(),
        &["images_background/README: not a directory"],
    );
}

#[test]
fn more_alphabets_than_byte_labels() {
    fails(
        |d| {
            for i in 0..254 {
                fs::create_dir(d.join(format!("images_background/extra{i:03}"))).unwrap();
            }
        },
        &["257 alphabets, at most 256"],
    );
}
