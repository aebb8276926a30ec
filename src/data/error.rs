//! Every way reading a data set can fail. Each message names the file (or the
//! command) and the values involved, so the user can act on it without a debugger.
//! A row of a targets CSV is named twice: by its line in the file (what an editor
//! shows; the header is line 1) and by its 0-based row of X (what numpy shows).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a valid gzip stream: {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} not found; looked for: {}", looked_for.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Missing {
        what: String,
        looked_for: Vec<PathBuf>,
    },

    #[error("{}: file is empty (0 bytes), expected an IDX header", path.display())]
    Empty { path: PathBuf },

    #[error("{}: {len} bytes is too short for an IDX header of rank {rank} ({need} bytes)", path.display())]
    ShortHeader {
        path: PathBuf,
        len: usize,
        rank: usize,
        need: usize,
    },

    #[error("{}: magic 0x{found:08x} is not IDX {kind} (expected 0x{expected:08x})", path.display())]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        kind: &'static str,
    },

    #[error("{}: IDX data type 0x{found:02x}, expected 0x08 (unsigned byte)", path.display())]
    DataType { path: PathBuf, found: u8 },

    #[error("{}: IDX rank {found}, expected {expected} ({kind})", path.display())]
    Rank {
        path: PathBuf,
        found: u8,
        expected: u8,
        kind: &'static str,
    },

    #[error("{}: dimension {axis} is 0 (dims {dims:?})", path.display())]
    ZeroDim {
        path: PathBuf,
        axis: usize,
        dims: Vec<u32>,
    },

    #[error("{}: images are {rows}x{cols}, expected {expected_rows}x{expected_cols}", path.display())]
    ImageSize {
        path: PathBuf,
        rows: usize,
        cols: usize,
        expected_rows: usize,
        expected_cols: usize,
    },

    #[error("{}: file is {len} bytes, expected {expected} (header {header} + data for dims {dims:?}): {}", path.display(), if len < expected { "truncated" } else { "trailing bytes" })]
    Length {
        path: PathBuf,
        len: u64,
        expected: u64,
        header: usize,
        dims: Vec<u32>,
    },

    #[error("{}: label {label} at index {index} is out of range 0..{classes}", path.display())]
    LabelRange {
        path: PathBuf,
        label: u8,
        index: usize,
        classes: usize,
    },

    #[error("{} has {images} images but {} has {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },

    #[error("{}: {n} training images is too few to hold out {val} for validation", path.display())]
    TooFewForSplit { path: PathBuf, n: usize, val: usize },

    #[error("{}: sha256 of the decompressed IDX bytes is {found}, expected {expected}", path.display())]
    Checksum {
        path: PathBuf,
        found: String,
        expected: String,
    },

    #[error("no writable cache directory for {}; tried: {}", source_path.display(), tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoCacheDir {
        source_path: PathBuf,
        tried: Vec<PathBuf>,
    },

    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },

    #[error("{0}")]
    NothingToFetch(String),

    #[error(transparent)]
    Npy(#[from] super::npy::NpyError),

    #[error("{}: {source}", path.display())]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },

    #[error("{} has {records} data rows but {} has {rows} rows; expected one target row per row of X", targets.display(), features.display())]
    TargetRows {
        targets: PathBuf,
        records: usize,
        features: PathBuf,
        rows: usize,
    },

    #[error("{}: no column '{column}' (named by --task); the header has: {}", path.display(), header.join(", "))]
    UnknownColumn {
        path: PathBuf,
        column: String,
        header: Vec<String>,
    },

    #[error("{}: column '{column}' appears more than once in the header", path.display())]
    DuplicateColumn { path: PathBuf, column: String },

    #[error("{}: line {line} (X row {row}), column '{column}': {value:?} is not {expected}", path.display())]
    BadTarget {
        path: PathBuf,
        line: u64,
        row: usize,
        column: String,
        value: String,
        expected: &'static str,
    },

    #[error("--task {flag}: {problem}")]
    TaskFlag { flag: String, problem: String },

    #[error("--split {flag}: {problem}")]
    SplitFlag { flag: String, problem: String },

    #[error("{} has a 'split' column and --split {flag} was also given; use one of them (drop --split to split by the column)", path.display())]
    SplitConflict { path: PathBuf, flag: String },

    #[error("{}: column '{column}' is empty in all {train} training rows ({how}); its branch could not learn", path.display())]
    UnlabelledTask {
        path: PathBuf,
        column: String,
        train: usize,
        how: String,
    },

    #[error("{}: {how} leaves no training rows among {rows}", path.display())]
    NoTrainingRows {
        path: PathBuf,
        how: String,
        rows: usize,
    },

    #[error("{}: {len} bytes is not a whole number of {record}-byte records (1 label byte + 3x32x32 pixels): truncated, or not the CIFAR-10 binary version", path.display())]
    RecordLength {
        path: PathBuf,
        len: u64,
        record: u64,
    },

    #[error("{}: {records} records, expected {expected}: {}", path.display(), if records < expected { "truncated" } else { "too many" })]
    RecordCount {
        path: PathBuf,
        records: usize,
        expected: usize,
    },

    #[error("{}: {problem}", path.display())]
    Layout { path: PathBuf, problem: String },

    #[error("{}: not a readable PNG: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    #[error("{}: the PNG header claims {width}x{height} pixels ({scanlines} bytes of scanlines), more than a {len}-byte file can hold ({most} at deflate's 1032:1): a damaged file", path.display())]
    ImageTooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        scanlines: u64,
        len: u64,
        most: u64,
    },

    #[error("{}: line {line}: {problem}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        problem: String,
    },

    #[error("{} has {rows} rows but {} lists {images} images; expected one feature row per image, in its order", features.display(), images_path.display())]
    MisalignedFeatures {
        features: PathBuf,
        rows: usize,
        images_path: PathBuf,
        images: usize,
    },

    #[error("attribute list {list:?}: {problem}")]
    Attributes { list: Vec<u32>, problem: String },
}

pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
