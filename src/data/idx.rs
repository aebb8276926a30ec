//! IDX files (LeCun's MNIST format): a 4-byte magic `00 00 TT RR` (TT = data type,
//! 0x08 unsigned byte; RR = rank), RR big-endian u32 dimensions, then the data in C
//! order. Images are rank 3 `[n, rows, cols]` (magic 0x00000803), labels rank 1 `[n]`
//! (magic 0x00000801).
//!
//! Parsing works on byte slices, so the same code reads memory-mapped files and the
//! embedded set. Every check failure is a `DataError` naming the file and the values.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cache;
use super::error::{DataError, Result};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
const UNSIGNED_BYTE: u8 = 0x08;

/// Images parsed from an IDX file. pixels: [n, rows, cols], borrowed from the bytes.
#[derive(Debug)]
pub struct IdxImages<'a> {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: &'a [u8],
}

/// Validates an IDX image file: magic, type, rank 3, non-zero dims, the expected
/// `rows`x`cols`, and the exact length.
pub fn parse_images<'a>(
    bytes: &'a [u8],
    path: &Path,
    rows: usize,
    cols: usize,
) -> Result<IdxImages<'a>> {
    // The shape is checked before the length: "images are 14x14, expected 28x28"
    // says more than "file is N bytes, expected M".
    let check_shape = |dims: &[u32]| {
        let (r, c) = (dims[1] as usize, dims[2] as usize);
        if (r, c) == (rows, cols) {
            return Ok(());
        }
        Err(DataError::ImageSize {
            path: path.to_path_buf(),
            rows: r,
            cols: c,
            expected_rows: rows,
            expected_cols: cols,
        })
    };
    let (dims, data) = parse(bytes, path, 3, "images", check_shape)?;
    Ok(IdxImages {
        n: dims[0] as usize,
        rows,
        cols,
        pixels: data,
    })
}

/// Validates an IDX label file: magic, type, rank 1, non-zero count, exact length,
/// and every label `< classes`.
pub fn parse_labels<'a>(bytes: &'a [u8], path: &Path, classes: usize) -> Result<&'a [u8]> {
    let (_, labels) = parse(bytes, path, 1, "labels", |_| Ok(()))?;
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(DataError::LabelRange {
            path: path.to_path_buf(),
            label,
            index,
            classes,
        });
    }
    Ok(labels)
}

/// Checks the header against `rank`, the dims with `check_dims`, and the length
/// against the dims; returns the dims and the data bytes after the header.
fn parse<'a>(
    bytes: &'a [u8],
    path: &Path,
    rank: u8,
    kind: &'static str,
    check_dims: impl Fn(&[u32]) -> Result<()>,
) -> Result<(Vec<u32>, &'a [u8])> {
    let path_buf = || path.to_path_buf();
    let header = 4 + 4 * rank as usize;
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path_buf() });
    }
    if bytes.len() < 4 {
        return Err(DataError::ShortHeader {
            path: path_buf(),
            len: bytes.len(),
            rank: rank as usize,
            need: header,
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = 0x0800 | rank as u32;
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::BadMagic {
            path: path_buf(),
            found: magic,
            expected,
            kind,
        });
    }
    if bytes[2] != UNSIGNED_BYTE {
        return Err(DataError::DataType {
            path: path_buf(),
            found: bytes[2],
        });
    }
    if bytes[3] != rank {
        return Err(DataError::Rank {
            path: path_buf(),
            found: bytes[3],
            expected: rank,
            kind,
        });
    }
    if bytes.len() < header {
        return Err(DataError::ShortHeader {
            path: path_buf(),
            len: bytes.len(),
            rank: rank as usize,
            need: header,
        });
    }
    let dims: Vec<u32> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(axis) = dims.iter().position(|&d| d == 0) {
        return Err(DataError::ZeroDim {
            path: path_buf(),
            axis,
            dims,
        });
    }
    check_dims(&dims)?;
    // At most three u32 factors: u128 cannot overflow.
    let data_len: u128 = dims.iter().map(|&d| d as u128).product();
    let expected_len = header as u128 + data_len;
    if bytes.len() as u128 != expected_len {
        return Err(DataError::Length {
            path: path_buf(),
            len: bytes.len() as u64,
            expected: expected_len.min(u64::MAX as u128) as u64,
            header,
            dims,
        });
    }
    Ok((dims, &bytes[header..]))
}

/// An IDX file on disk, memory-mapped. A `.gz` path is decompressed once into the
/// cache (see `cache`) and the decompressed copy is mapped; `path` stays the
/// user's path so errors name the file they know.
pub struct IdxFile {
    pub path: PathBuf,
    pub mapped: PathBuf,
    map: Option<Mmap>,
}

impl IdxFile {
    pub fn open(path: &Path) -> Result<IdxFile> {
        let is_gz = path.extension().is_some_and(|e| e == "gz");
        let mapped = if is_gz {
            cache::decompressed(path)?
        } else {
            path.to_path_buf()
        };
        let file = File::open(&mapped).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        // Mapping a zero-length file fails on some platforms; `bytes()` is then empty
        // and the parser reports the empty file.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this process. Data files
            // and our cache files are replaced by rename, never rewritten in place,
            // so the mapped pages do not change under us in normal use.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?)
        };
        Ok(IdxFile {
            path: path.to_path_buf(),
            mapped,
            map,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// Images and labels of one IDX pair, copied out of the files. images: [n, rows*cols].
pub struct Labelled {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

/// Parses an image/label pair from bytes and checks that the counts agree.
pub fn parse_pair(
    images: (&[u8], &Path),
    labels: (&[u8], &Path),
    rows: usize,
    cols: usize,
    classes: usize,
) -> Result<Labelled> {
    let im = parse_images(images.0, images.1, rows, cols)?;
    let lb = parse_labels(labels.0, labels.1, classes)?;
    if im.n != lb.len() {
        return Err(DataError::CountMismatch {
            images_path: images.1.to_path_buf(),
            images: im.n,
            labels_path: labels.1.to_path_buf(),
            labels: lb.len(),
        });
    }
    Ok(Labelled {
        images: im.pixels.to_vec(),
        labels: lb.to_vec(),
        rows,
        cols,
    })
}

/// Opens (memory-maps) and parses an image/label pair of files.
pub fn read_pair(
    images: &Path,
    labels: &Path,
    rows: usize,
    cols: usize,
    classes: usize,
) -> Result<Labelled> {
    let im = IdxFile::open(images)?;
    let lb = IdxFile::open(labels)?;
    parse_pair(
        (im.bytes(), images),
        (lb.bytes(), labels),
        rows,
        cols,
        classes,
    )
}

/// Serialises an unsigned-byte IDX file: magic, big-endian dims, data. For tests
/// and tools that write data sets.
pub fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("t/train-labels-idx1-ubyte")
    }

    #[test]
    fn labels_roundtrip() {
        let b = encode(&[3], &[0, 9, 4]);
        assert_eq!(parse_labels(&b, &p(), 10).unwrap(), &[0, 9, 4]);
    }

    #[test]
    fn label_out_of_range_message() {
        let mut data = vec![1u8; 500];
        data[431] = 12;
        let b = encode(&[500], &data);
        let e = parse_labels(&b, &p(), 10).unwrap_err().to_string();
        assert_eq!(
            e,
            "t/train-labels-idx1-ubyte: label 12 at index 431 is out of range 0..10"
        );
    }

    #[test]
    fn images_roundtrip_and_size_check() {
        let b = encode(&[2, 2, 3], &[1; 12]);
        let im = parse_images(&b, &p(), 2, 3).unwrap();
        assert_eq!((im.n, im.rows, im.cols, im.pixels.len()), (2, 2, 3, 12));
        let e = parse_images(&b, &p(), 28, 28).unwrap_err().to_string();
        assert!(e.contains("images are 2x3, expected 28x28"), "{e}");
    }

    #[test]
    fn header_checks() {
        let e = |b: &[u8]| parse_labels(b, &p(), 10).unwrap_err().to_string();
        assert!(e(&[]).contains("empty"));
        assert!(e(&[0, 0]).contains("too short"));
        assert!(e(&[0, 0, 8, 1, 0]).contains("too short"));
        assert!(e(&[1, 0, 8, 1, 0, 0, 0, 1, 0]).contains("magic 0x01000801"));
        assert!(e(&[0, 0, 9, 1, 0, 0, 0, 1, 0]).contains("data type 0x09"));
        assert!(e(&[0, 0, 8, 3, 0, 0, 0, 1, 0]).contains("rank 3, expected 1"));
        assert!(e(&[0, 0, 8, 1, 0, 0, 0, 0]).contains("dimension 0 is 0"));
        assert!(e(&[0, 0, 8, 1, 0, 0, 0, 2, 0]).contains("truncated"));
        assert!(e(&[0, 0, 8, 1, 0, 0, 0, 1, 0, 0]).contains("trailing bytes"));
    }

    #[test]
    fn huge_dims_do_not_overflow() {
        let b = encode(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        let e = parse_images(&b, &p(), 28, 28).unwrap_err().to_string();
        assert!(e.contains("expected 28x28"), "{e}");
        let b = encode(&[u32::MAX, 28, 28], &[]);
        let e = parse_images(&b, &p(), 28, 28).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
