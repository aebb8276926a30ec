//! OmniGlot (DESIGN.md §3, §4) from a user's copy of the published layout:
//! `DIR/images_background/ALPHABET/characterNN/*.png` (30 alphabets), and with
//! `Options::evaluation` also `DIR/images_evaluation/…` (20 more; 50 in all, as the
//! paper's 50 alphabet tasks).
//!
//! - Labels: the alphabet's index, alphabets sorted by directory name (byte order)
//!   over both sets together, so the numbering does not depend on the file system's
//!   listing order. One binary task per alphabet ("is this character from alphabet
//!   a?"), as the MNIST MTL net has one per digit: the result is a `Dataset` like
//!   MNIST's with `classes` = the number of alphabets. Labels are bytes, so at most
//!   256 alphabets.
//! - Pixels: each PNG decoded, converted to 8-bit grey (`to_luma8`, Rec. 709 luma),
//!   and resized to 28×28 with `FilterType::Triangle`. Downscaling 105 → 28 (3.75×),
//!   `image` widens the triangle to the scale, so every source pixel contributes to
//!   an area-weighted average: the one-pixel pen strokes survive as grey, where
//!   nearest-neighbour would drop most of them, and a linear filter cannot ring
//!   (Lanczos overshoots at the stroke edges and clips). Values are as drawn:
//!   white background 255, ink near 0.
//! - Split: per alphabet (stratified), the alphabet's images in path order are
//!   split by `Options::fractions` (default 0.8 / 0.1 / 0.1) over a permutation
//!   drawn from `seed + alphabet index` (`split::split_by_fractions`: val and test
//!   rounded down, train the rest), so every alphabet is in every split in
//!   proportion, and a new seed gives a new split. Each split lists its images in
//!   (alphabet, character, file name) order.
//! - Files: in a character directory every non-hidden entry must be a `.png` file,
//!   and alphabets and characters must be directories. Anything else is an error
//!   rather than skipped, because the layout is then not the one this reader knows
//!   and skipping would silently change the task. Hidden entries (names starting
//!   with '.', such as `.DS_Store`) are skipped: they are the file manager's, not
//!   the data set's.
//!
//! Every failure names the file or directory; an unreadable PNG fails the whole
//! load (nothing partial is returned).

use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::ImageDecoder;
use rayon::prelude::*;

use super::error::{DataError, Result};
use super::split::{split_by_fractions, Dataset, Fractions, Split};

pub const ROWS: usize = 28;
pub const COLS: usize = 28;
/// Labels are `u8`.
pub const MAX_ALPHABETS: usize = 256;
pub const BACKGROUND: &str = "images_background";
pub const EVALUATION: &str = "images_evaluation";

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Also read `images_evaluation` (the paper's 50 alphabets).
    pub evaluation: bool,
    pub fractions: Fractions,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            evaluation: false,
            fractions: Fractions::DEFAULT,
            seed: 0,
        }
    }
}

/// The data set and the name of each label's alphabet.
#[derive(Clone, Debug)]
pub struct Omniglot {
    pub dataset: Dataset,
    /// alphabets[label]: the directory name.
    pub alphabets: Vec<String>,
}

/// One alphabet's images, in (character, file name) order.
struct Alphabet {
    name: String,
    pngs: Vec<PathBuf>,
}

pub fn load_omniglot(dir: &Path, options: &Options) -> Result<Omniglot> {
    let sets: &[&str] = if options.evaluation {
        &[BACKGROUND, EVALUATION]
    } else {
        &[BACKGROUND]
    };
    let mut alphabet_dirs = Vec::new();
    for set in sets {
        let root = dir.join(set);
        if !root.is_dir() {
            return Err(DataError::Missing {
                what: format!("OmniGlot {set} directory"),
                looked_for: vec![root],
            });
        }
        alphabet_dirs.extend(subdirectories(&root)?);
    }
    alphabet_dirs.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if let Some(w) = alphabet_dirs
        .windows(2)
        .find(|w| w[0].file_name() == w[1].file_name())
    {
        return Err(DataError::Layout {
            path: w[1].clone(),
            problem: format!("alphabet also in {}; names must be unique", w[0].display()),
        });
    }
    if alphabet_dirs.len() > MAX_ALPHABETS {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            problem: format!(
                "{} alphabets, at most {MAX_ALPHABETS} fit in a byte label",
                alphabet_dirs.len()
            ),
        });
    }
    if alphabet_dirs.is_empty() {
        return Err(DataError::Layout {
            path: dir.join(BACKGROUND),
            problem: "holds no alphabet directories".into(),
        });
    }
    let alphabets = alphabet_dirs
        .iter()
        .map(|a| list_alphabet(a))
        .collect::<Result<Vec<_>>>()?;

    let (mut train, mut val, mut test) = (grey(), grey(), grey());
    for (label, alphabet) in alphabets.iter().enumerate() {
        let images = decode_all(&alphabet.pngs)?;
        let seed = options.seed.wrapping_add(label as u64);
        let (tr, va, te) = split_by_fractions(images.len(), options.fractions, seed);
        for (to, rows) in [(&mut train, tr), (&mut val, va), (&mut test, te)] {
            for i in rows {
                to.images.extend_from_slice(&images[i]);
                to.labels.push(label as u8);
            }
        }
    }
    let names: Vec<String> = alphabets.into_iter().map(|a| a.name).collect();
    Ok(Omniglot {
        dataset: Dataset {
            name: "omniglot".into(),
            classes: names.len(),
            source: format!(
                "OmniGlot PNGs in {} ({}), {} alphabets, split {} by seed {}",
                dir.display(),
                sets.join(" + "),
                names.len(),
                options.fractions,
                options.seed
            ),
            train,
            val,
            test,
        },
        alphabets: names,
    })
}

fn grey() -> Split {
    Split {
        channels: 1,
        rows: ROWS,
        cols: COLS,
        ..Split::default()
    }
}

/// Non-hidden entries of `dir`, sorted by name; each must be a directory.
fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = visible_entries(dir)?;
    if let Some(file) = entries.iter().find(|p| !p.is_dir()) {
        return Err(DataError::Layout {
            path: file.clone(),
            problem: format!(
                "not a directory; {} should hold only directories",
                dir.display()
            ),
        });
    }
    Ok(entries)
}

/// Non-hidden entries of `dir`, sorted by name (byte order).
fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |e| DataError::io(dir, e);
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// An alphabet's PNGs, character by character; an alphabet or character with none
/// is an error (a damaged copy, and an empty task could not be learned).
fn list_alphabet(dir: &Path) -> Result<Alphabet> {
    let mut pngs = Vec::new();
    for character in subdirectories(dir)? {
        let files = visible_entries(&character)?;
        if let Some(other) = files
            .iter()
            .find(|p| !p.is_file() || p.extension().is_none_or(|e| e != "png"))
        {
            return Err(DataError::Layout {
                path: other.clone(),
                problem: "not a .png file; a character directory holds only its PNGs".into(),
            });
        }
        if files.is_empty() {
            return Err(DataError::Layout {
                path: character,
                problem: "character directory holds no .png images".into(),
            });
        }
        pngs.extend(files);
    }
    if pngs.is_empty() {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            problem: "alphabet holds no character directories".into(),
        });
    }
    Ok(Alphabet {
        name: dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        pngs,
    })
}

/// Decodes every PNG (in parallel); the error is the first bad file in path order,
/// whatever order the threads finished in.
fn decode_all(pngs: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    let decoded: Vec<Result<Vec<u8>>> = pngs.par_iter().map(|p| decode(p)).collect();
    decoded.into_iter().collect()
}

/// The most a deflate stream expands: 258 bytes from a 2-bit code, about 1032:1.
/// A PNG's scanlines are deflated, so a file of L bytes holds at most this × L bytes
/// of them.
pub const DEFLATE_MAX_RATIO: u64 = 1032;

/// One PNG as `[28, 28]` grey bytes (see the module doc for the filter).
///
/// The size the header claims is checked against the file's length before the
/// decoder allocates the image: a damaged header would otherwise have it allocate
/// up to the `image` crate's 512 MiB limit for a file of a few hundred bytes.
pub fn decode(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let image_err = |source| DataError::Image {
        path: path.to_path_buf(),
        source,
    };
    let reader =
        image::ImageReader::with_format(std::io::Cursor::new(&bytes[..]), image::ImageFormat::Png);
    let decoder = reader.into_decoder().map_err(image_err)?;
    let (width, height) = decoder.dimensions();
    // The fewest scanline bytes such an image deflates from: per row a filter byte
    // and the packed pixels (interlacing only adds rows).
    let bits = u64::from(decoder.original_color_type().bits_per_pixel());
    let scanlines = u64::from(height) * (1 + (u64::from(width) * bits).div_ceil(8));
    let most = DEFLATE_MAX_RATIO * bytes.len() as u64;
    if scanlines > most {
        return Err(DataError::ImageTooLarge {
            path: path.to_path_buf(),
            width,
            height,
            scanlines,
            len: bytes.len() as u64,
            most,
        });
    }
    let image = image::DynamicImage::from_decoder(decoder).map_err(image_err)?;
    let grey = image.to_luma8();
    let small = image::imageops::resize(&grey, COLS as u32, ROWS as u32, FilterType::Triangle);
    Ok(small.into_raw())
}
