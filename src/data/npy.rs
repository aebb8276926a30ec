//! NumPy `.npy` files: the points `sskernel cluster` reads and the labels /
//! probabilities / outlier scores it writes.
//!
//! Format (numpy.lib.format): magic `\x93NUMPY`, major/minor version, header length
//! (u16 little-endian for v1, u32 for v2 and v3), then an ASCII (v3: UTF-8) Python
//! dict literal `{'descr': '<f8', 'fortran_order': False, 'shape': (n, d), }` padded
//! with spaces and a newline, then the raw data in C order.
//!
//! Reading maps the file with memmap2 and converts the values to `f64` in one pass,
//! except `map_matrix`, which keeps a feature matrix in its map and converts only the
//! rows asked for (data sets larger than memory). Every failure is an `NpyError` naming the file and what was found versus what
//! was expected.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a .npy file: the first bytes are {found:02x?}, expected the magic \\x93NUMPY", path.display())]
    BadMagic { path: PathBuf, found: Vec<u8> },

    #[error("{}: .npy format version {major}.{minor} is not supported (expected 1.0, 2.0 or 3.0)", path.display())]
    Version { path: PathBuf, major: u8, minor: u8 },

    #[error("{}: file is {len} bytes, too short for its .npy header ({need} bytes)", path.display())]
    ShortHeader {
        path: PathBuf,
        len: usize,
        need: usize,
    },

    #[error("{}: malformed .npy header {header:?}: {problem}", path.display())]
    Header {
        path: PathBuf,
        header: String,
        problem: String,
    },

    #[error("{}: dtype '{descr}' is not supported; expected {expected}", path.display())]
    DType {
        path: PathBuf,
        descr: String,
        expected: &'static str,
    },

    #[error("{}: array is in Fortran (column-major) order; expected C order (save it with np.ascontiguousarray)", path.display())]
    FortranOrder { path: PathBuf },

    #[error("{}: array has shape {shape:?} ({} dimensions); expected {expected} dimensions", path.display(), shape.len())]
    Rank {
        path: PathBuf,
        shape: Vec<usize>,
        expected: usize,
    },

    #[error("{}: file is {len} bytes, expected {expected} (header {header} + {count} values of {item} bytes for shape {shape:?}): {}", path.display(), if len < expected { "truncated" } else { "trailing bytes" })]
    Length {
        path: PathBuf,
        len: usize,
        expected: usize,
        header: usize,
        count: usize,
        item: usize,
        shape: Vec<usize>,
    },

    #[error("{}: shape {shape:?} of {item}-byte values is more than any file can hold (this one is {len} bytes)", path.display())]
    Overflow {
        path: PathBuf,
        len: usize,
        item: usize,
        shape: Vec<usize>,
    },

    #[error("{}: value at row {row}, column {col} is {value}; expected finite numbers", path.display())]
    NonFinite {
        path: PathBuf,
        row: usize,
        col: usize,
        value: f64,
    },
}

pub type Result<T> = std::result::Result<T, NpyError>;

/// A 2-D float matrix read from a `.npy` file, converted to f64. data: [rows, cols].
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

/// Element types this module reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DType {
    /// IEEE half precision (`'<f2'`), as features are often stored to halve the file.
    F16,
    F32,
    F64,
    I64,
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    fn descr(self) -> &'static str {
        match self {
            DType::F16 => "<f2",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::I64 => "<i8",
        }
    }
}

/// The parsed header: element type, shape, and where the data starts.
#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
    data_offset: usize,
}

/// Reads a 2-D float32 or float64 C-order array, rejecting NaN and ±inf.
/// Returns the values as f64, `[rows, cols]`.
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    let map = map_file(path)?;
    let (dtype, shape, data) = parse(&map, path, &[DType::F32, DType::F64], "'<f4' or '<f8'")?;
    if shape.len() != 2 {
        return Err(NpyError::Rank {
            path: path.to_path_buf(),
            shape,
            expected: 2,
        });
    }
    let (rows, cols) = (shape[0], shape[1]);
    let values = to_f64(dtype, data);
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(NpyError::NonFinite {
            path: path.to_path_buf(),
            row: k / cols.max(1),
            col: k % cols.max(1),
            value: values[k],
        });
    }
    Ok(Matrix {
        rows,
        cols,
        data: values,
    })
}

/// Reads a 1-D float32 or float64 array as f64. NaN and ±inf are kept: outlier
/// scores written by the reference library may legitimately hold NaN.
pub fn read_f64_vector(path: &Path) -> Result<Vec<f64>> {
    let map = map_file(path)?;
    let (dtype, shape, data) = parse(&map, path, &[DType::F32, DType::F64], "'<f4' or '<f8'")?;
    if shape.len() != 1 {
        return Err(NpyError::Rank {
            path: path.to_path_buf(),
            shape,
            expected: 1,
        });
    }
    Ok(to_f64(dtype, data))
}

/// Reads a float32 or float64 C-order array of any shape as f64, keeping NaN and
/// ±inf (a condensed tree written by the reference library holds λ = ∞).
/// Returns (shape, values).
pub fn read_f64_array(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let map = map_file(path)?;
    let (dtype, shape, data) = parse(&map, path, &[DType::F32, DType::F64], "'<f4' or '<f8'")?;
    Ok((shape, to_f64(dtype, data)))
}

/// Reads a 1-D int64 array (labels).
pub fn read_i64_vector(path: &Path) -> Result<Vec<i64>> {
    let map = map_file(path)?;
    let (_, shape, data) = parse(&map, path, &[DType::I64], "'<i8'")?;
    if shape.len() != 1 {
        return Err(NpyError::Rank {
            path: path.to_path_buf(),
            shape,
            expected: 1,
        });
    }
    Ok(data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// A 2-D float array left in its memory map: header, dtype, order, rank and file
/// length validated up front, values converted to f32 only when a row is asked for,
/// so a feature matrix larger than memory can be trained on. data: [rows, cols].
///
/// Values are not checked for NaN or ±inf: that would read every page of the file.
pub struct MappedMatrix {
    path: PathBuf,
    map: MappedFile,
    dtype: DType,
    rows: usize,
    cols: usize,
    data_offset: usize,
}

/// Maps a 2-D float16, float32 or float64 C-order array without reading its values.
pub fn map_matrix(path: &Path) -> Result<MappedMatrix> {
    let map = map_file(path)?;
    let allowed = [DType::F16, DType::F32, DType::F64];
    let (dtype, shape, data) = parse(&map, path, &allowed, "'<f2', '<f4' or '<f8'")?;
    if shape.len() != 2 {
        return Err(NpyError::Rank {
            path: path.to_path_buf(),
            shape,
            expected: 2,
        });
    }
    let data_offset = map.len() - data.len();
    Ok(MappedMatrix {
        path: path.to_path_buf(),
        map,
        dtype,
        rows: shape[0],
        cols: shape[1],
        data_offset,
    })
}

impl MappedMatrix {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The element type as numpy writes it: `'<f2'`, `'<f4'` or `'<f8'`.
    pub fn descr(&self) -> &'static str {
        self.dtype.descr()
    }

    /// Converts row `r` to f32 into `out` ([cols]). float64 values are rounded to
    /// the nearest f32, as the models compute in f32.
    ///
    /// Panics if `r >= rows` or `out.len() != cols`: both are the caller's indices,
    /// not the file's content, which `map_matrix` has already validated.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        assert!(
            r < self.rows,
            "{}: row {r} of {}",
            self.path.display(),
            self.rows
        );
        assert_eq!(out.len(), self.cols, "output is not one row");
        let size = self.dtype.size();
        let start = self.data_offset + r * self.cols * size;
        let bytes = &self.map[start..start + self.cols * size];
        match self.dtype {
            DType::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            DType::F64 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    *o = f64::from_le_bytes(c.try_into().unwrap()) as f32;
                }
            }
            DType::I64 => unreachable!("map_matrix admits float types only"),
        }
    }
}

/// Writes a 1-D int64 array (`'<i8'`), e.g. labels.npy.
pub fn write_i64_vector(path: &Path, values: &[i64]) -> Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(path, "<i8", &[values.len()], &bytes)
}

/// Writes a 1-D float64 array (`'<f8'`), e.g. probabilities.npy.
pub fn write_f64_vector(path: &Path, values: &[f64]) -> Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(path, "<f8", &[values.len()], &bytes)
}

/// Writes a 2-D float64 C-order array. data: [rows, cols].
pub fn write_f64_matrix(path: &Path, data: &[f64], rows: usize, cols: usize) -> Result<()> {
    assert_eq!(
        data.len(),
        rows * cols,
        "write_f64_matrix: data is not [rows, cols]"
    );
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(path, "<f8", &[rows, cols], &bytes)
}

/// Encodes a version 1.0 `.npy` file in memory (version 2.0 when the header does
/// not fit in 65535 bytes, which needs a shape of thousands of dimensions).
pub fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_str = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_str}, }}");
    // magic(6) + version(2) + length(2 or 4) + dict + padding + '\n' is a multiple of 64.
    let (major, len_bytes) = if dict.len() + 1 + 10 <= 65535 {
        (1u8, 2)
    } else {
        (2u8, 4)
    };
    let prefix = 6 + 2 + len_bytes;
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let header_len = total - prefix;
    let mut out = Vec::with_capacity(total + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

fn write(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<()> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::atomic_file::write_io(path, &encode(descr, shape, data)).map_err(io)
}

/// Memory-maps a file; an empty file is read as an empty slice (mapping 0 bytes fails).
fn map_file(path: &Path) -> Result<MappedFile> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(MappedFile(None));
    }
    // Safety: the file is opened read-only and only read through this map; a
    // concurrent writer could change the bytes under us, which at worst gives a
    // parse error or wrong values, never undefined behaviour in our code's logic
    // (the slice stays valid for the map's lifetime).
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    Ok(MappedFile(Some(map)))
}

struct MappedFile(Option<Mmap>);

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// Validates the header and the length; returns (dtype, shape, data bytes).
fn parse<'a>(
    bytes: &'a [u8],
    path: &Path,
    allowed: &[DType],
    expected: &'static str,
) -> Result<(DType, Vec<usize>, &'a [u8])> {
    let header = parse_header(bytes, path)?;
    let dtype = [DType::F16, DType::F32, DType::F64, DType::I64]
        .into_iter()
        .find(|t| t.descr() == header.descr)
        .filter(|t| allowed.contains(t))
        .ok_or_else(|| NpyError::DType {
            path: path.to_path_buf(),
            descr: header.descr.clone(),
            expected,
        })?;
    if header.fortran_order && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(NpyError::FortranOrder {
            path: path.to_path_buf(),
        });
    }
    // A shape is the file's claim, checked against the file's length before it sizes
    // anything; a product that overflows cannot match any file.
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d));
    let expected_len = count
        .and_then(|c| c.checked_mul(dtype.size()))
        .and_then(|b| b.checked_add(header.data_offset));
    let (Some(count), Some(expected_len)) = (count, expected_len) else {
        return Err(NpyError::Overflow {
            path: path.to_path_buf(),
            len: bytes.len(),
            item: dtype.size(),
            shape: header.shape,
        });
    };
    if bytes.len() != expected_len {
        return Err(NpyError::Length {
            path: path.to_path_buf(),
            len: bytes.len(),
            expected: expected_len,
            header: header.data_offset,
            count,
            item: dtype.size(),
            shape: header.shape,
        });
    }
    Ok((dtype, header.shape, &bytes[header.data_offset..]))
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic {
            path: path.to_path_buf(),
            found: bytes[..bytes.len().min(6)].to_vec(),
        });
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_bytes, len) = match (major, minor) {
        (1, 0) if bytes.len() >= 10 => (2, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        (2 | 3, 0) if bytes.len() >= 12 => (
            4,
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        ),
        (1, 0) | (2 | 3, 0) => {
            return Err(NpyError::ShortHeader {
                path: path.to_path_buf(),
                len: bytes.len(),
                need: if major == 1 { 10 } else { 12 },
            })
        }
        _ => {
            return Err(NpyError::Version {
                path: path.to_path_buf(),
                major,
                minor,
            })
        }
    };
    let start = 8 + len_bytes;
    let data_offset = start + len;
    if bytes.len() < data_offset {
        return Err(NpyError::ShortHeader {
            path: path.to_path_buf(),
            len: bytes.len(),
            need: data_offset,
        });
    }
    let text = std::str::from_utf8(&bytes[start..data_offset]).map_err(|_| NpyError::Header {
        path: path.to_path_buf(),
        header: String::from_utf8_lossy(&bytes[start..data_offset]).into_owned(),
        problem: "not UTF-8 text".into(),
    })?;
    let bad = |problem: &str| NpyError::Header {
        path: path.to_path_buf(),
        header: text.trim_end().to_string(),
        problem: problem.to_string(),
    };
    let descr = dict_value(text, "descr")
        .and_then(quoted)
        .ok_or_else(|| bad("no 'descr' string"))?;
    let fortran_order = match dict_value(text, "fortran_order") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err(bad("no 'fortran_order' True/False")),
    };
    let shape = dict_value(text, "shape")
        .and_then(parse_shape)
        .ok_or_else(|| bad("no 'shape' tuple of integers"))?;
    Ok(Header {
        // '|' (not applicable) and '=' (native) byte orders name the same
        // little-endian types on the machines we run on; normalise them.
        descr: normalise_descr(&descr),
        fortran_order,
        shape,
        data_offset,
    })
}

fn normalise_descr(descr: &str) -> String {
    match descr.strip_prefix('=') {
        Some(rest) if cfg!(target_endian = "little") => format!("<{rest}"),
        _ => descr.to_string(),
    }
}

/// The text right after `'key':` in the header dict.
fn dict_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let pat_single = format!("'{key}'");
    let pat_double = format!("\"{key}\"");
    let at = text
        .find(&pat_single)
        .map(|i| i + pat_single.len())
        .or_else(|| text.find(&pat_double).map(|i| i + pat_double.len()))?;
    let rest = text[at..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

/// The contents of a leading '...' or "..." string.
fn quoted(v: &str) -> Option<String> {
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = v[1..].find(q)?;
    Some(v[1..1 + end].to_string())
}

/// `(3, 4)`, `(3,)`, `()` → dims.
fn parse_shape(v: &str) -> Option<Vec<usize>> {
    let inner = v.strip_prefix('(')?;
    let inner = &inner[..inner.find(')')?];
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

fn to_f64(dtype: DType, data: &[u8]) -> Vec<f64> {
    match dtype {
        DType::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DType::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        (dir, p)
    }

    fn f64_bytes(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn round_trip_f64_matrix_and_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.npy");
        write_f64_matrix(&m, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3).unwrap();
        let r = read_matrix(&m).unwrap();
        assert_eq!((r.rows, r.cols), (2, 3));
        assert_eq!(r.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let len = std::fs::read(&m).unwrap().len();
        assert_eq!(
            (len - 48) % 64,
            0,
            "header is padded to 64 bytes (numpy requires alignment)"
        );

        let l = dir.path().join("l.npy");
        write_i64_vector(&l, &[-1, 0, 7]).unwrap();
        assert_eq!(read_i64_vector(&l).unwrap(), vec![-1, 0, 7]);
        let p = dir.path().join("p.npy");
        write_f64_vector(&p, &[0.5, f64::NAN]).unwrap();
        let back = read_f64_vector(&p).unwrap();
        assert_eq!(back[0], 0.5);
        assert!(back[1].is_nan());
    }

    #[test]
    fn reads_f32_and_versions_2_and_3() {
        let data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut bytes = encode("<f4", &[1, 2], &data);
        let (_d, p) = tmp("a.npy", &bytes);
        assert_eq!(read_matrix(&p).unwrap().data, vec![1.5, -2.0]);

        // Version 2.0/3.0: same dict, u32 header length.
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }";
        for major in [2u8, 3] {
            bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[major, 0]);
            let pad = (64 - (12 + dict.len() + 1) % 64) % 64;
            let hl = dict.len() + pad + 1;
            bytes.extend_from_slice(&(hl as u32).to_le_bytes());
            bytes.extend_from_slice(dict.as_bytes());
            bytes.extend(std::iter::repeat_n(b' ', pad));
            bytes.push(b'\n');
            bytes.extend_from_slice(&f64_bytes(&[3.0, 4.0]));
            let (_d, p) = tmp("v.npy", &bytes);
            let m = read_matrix(&p).unwrap();
            assert_eq!((m.rows, m.cols, m.data), (2, 1, vec![3.0, 4.0]));
        }
    }

    /// The same values stored as f2, f4 and f8 give the same f32 rows, and the
    /// checks of `read_matrix` apply before any value is read.
    #[test]
    fn mapped_rows_in_every_float_width() {
        let values = [0.5f32, -1.25, 3.0, 0.0, 1024.0, -0.125];
        let stored = [
            (
                "<f2",
                values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            ("<f4", values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("<f8", f64_bytes(&values.map(f64::from))),
        ];
        for (descr, data) in stored {
            let (_d, p) = tmp("x.npy", &encode(descr, &[2, 3], &data));
            let m = map_matrix(&p).unwrap();
            assert_eq!((m.rows(), m.cols(), m.descr()), (2, 3, descr));
            let mut row = [0f32; 3];
            m.row_into(1, &mut row);
            assert_eq!(row, values[3..], "{descr}");
        }
        for (bytes, says) in [
            (encode("<i8", &[2, 3], &[0; 48]), "'<f2', '<f4' or '<f8'"),
            (encode("<f4", &[6], &[0; 24]), "expected 2 dimensions"),
            (encode("<f2", &[2, 3], &[0; 11]), "truncated"),
        ] {
            let (_d, p) = tmp("bad.npy", &bytes);
            let e = map_matrix(&p).err().expect(says).to_string();
            assert!(e.contains("bad.npy") && e.contains(says), "{e}");
        }
    }

    fn err(bytes: &[u8]) -> String {
        let (_d, p) = tmp("bad.npy", bytes);
        let e = read_matrix(&p).unwrap_err().to_string();
        assert!(e.contains("bad.npy"), "message must name the file: {e}");
        e
    }

    /// A shape whose size overflows is refused, not multiplied out (found by
    /// tests/fuzz_readers.rs: `(8, 9223372036854775807)` panicked in the product).
    #[test]
    fn overflowing_shapes_are_refused() {
        for shape in [
            vec![8, usize::MAX / 4],
            vec![usize::MAX / 8 + 1],
            vec![1 << 40, 1 << 40],
        ] {
            let e = err(&encode("<f8", &shape, &[0u8; 16]));
            assert!(e.contains("more than any file can hold"), "{e}");
        }
    }

    #[test]
    fn errors_name_file_and_problem() {
        let e = err(b"PK\x03\x04 not npy");
        assert!(e.contains("magic"), "{e}");
        let e = err(&encode("<i4", &[2, 2], &[0u8; 16]));
        assert!(e.contains("'<i4'") && e.contains("'<f8'"), "{e}");
        let e = err(&encode(">f8", &[1, 1], &[0u8; 8]));
        assert!(e.contains("'>f8'"), "{e}");
        let mut fortran = encode("<f8", &[2, 2], &f64_bytes(&[1.0; 4]));
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        let e = err(&fortran);
        assert!(e.contains("Fortran"), "{e}");
        let e = err(&encode("<f8", &[4], &f64_bytes(&[1.0; 4])));
        assert!(
            e.contains("expected 2 dimensions") && e.contains("[4]"),
            "{e}"
        );
        let mut short = encode("<f8", &[3, 2], &f64_bytes(&[1.0; 6]));
        short.truncate(short.len() - 5);
        let e = err(&short);
        assert!(e.contains("truncated") && e.contains("[3, 2]"), "{e}");
        let e = err(&encode(
            "<f8",
            &[2, 2],
            &f64_bytes(&[1.0, 2.0, f64::NAN, 4.0]),
        ));
        assert!(e.contains("row 1, column 0") && e.contains("NaN"), "{e}");
        let e = err(b"");
        assert!(e.contains("magic"), "{e}");
        let mut v = encode("<f8", &[1, 1], &f64_bytes(&[1.0]));
        v[6] = 4;
        let e = err(&v);
        assert!(e.contains("version 4.0"), "{e}");
    }
}
