//! Decompress-once cache for `.gz` data files, so readers can memory-map plain bytes.
//!
//! Where: `.sskernel-cache/` next to the source if that directory is writable, else
//! `$XDG_CACHE_HOME/sskernel/` or `~/.cache/sskernel/` (there the file name carries a
//! hash of the source path, since sources from many directories share it).
//! Reuse: a cache file is trusted when it is strictly newer than its source and its
//! length equals the gzip trailer's ISIZE (uncompressed length mod 2^32).
//! Writes are atomic (temp file in the same directory, then rename), so a reader
//! never maps a half-written file and two processes racing both end up correct.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::error::{DataError, Result};

/// Name of the cache directory created next to `.gz` sources.
pub const LOCAL_CACHE_DIR: &str = ".sskernel-cache";

/// Returns the path of the decompressed copy of `gz`, building it if needed.
pub fn decompressed(gz: &Path) -> Result<PathBuf> {
    decompressed_in(gz, &candidate_dirs(gz))
}

/// Cache directories for `gz`, in order of preference, each with the file name to use.
fn candidate_dirs(gz: &Path) -> Vec<(PathBuf, String)> {
    let stem = gz
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gz").to_string())
        .unwrap_or_else(|| "data".to_string());
    let parent = match gz.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![(parent.join(LOCAL_CACHE_DIR), stem.clone())];
    if let Some(user) = user_cache_dir() {
        let abs = fs::canonicalize(gz).unwrap_or_else(|_| gz.to_path_buf());
        let tag = hex(&Sha256::digest(abs.to_string_lossy().as_bytes()))[..16].to_string();
        dirs.push((user.join("sskernel"), format!("{tag}-{stem}")));
    }
    dirs
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache`.
pub fn user_cache_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))
}

/// Uses the first fresh cache among `dirs`, else builds one in the first writable dir.
fn decompressed_in(gz: &Path, dirs: &[(PathBuf, String)]) -> Result<PathBuf> {
    let meta = fs::metadata(gz).map_err(|e| DataError::io(gz, e))?;
    let src_mtime = meta.modified().map_err(|e| DataError::io(gz, e))?;
    let isize = gzip_isize(gz)?;
    for (dir, name) in dirs {
        let cached = dir.join(name);
        if is_fresh(&cached, src_mtime, isize) {
            return Ok(cached);
        }
    }
    let mut tried = Vec::new();
    for (dir, name) in dirs {
        let cached = dir.join(name);
        match build(gz, dir, &cached)? {
            true => return Ok(cached),
            false => tried.push(dir.clone()),
        }
    }
    Err(DataError::NoCacheDir {
        source_path: gz.to_path_buf(),
        tried,
    })
}

fn is_fresh(cached: &Path, src_mtime: SystemTime, isize: u32) -> bool {
    let Ok(meta) = fs::metadata(cached) else {
        return false;
    };
    let newer = meta.modified().is_ok_and(|m| m > src_mtime);
    newer && meta.is_file() && meta.len() as u32 == isize
}

/// The gzip trailer's last 4 bytes: uncompressed size mod 2^32 (of the last member).
fn gzip_isize(gz: &Path) -> Result<u32> {
    let bad = |msg: &str| DataError::Gzip {
        path: gz.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, msg.to_string()),
    };
    let mut f = File::open(gz).map_err(|e| DataError::io(gz, e))?;
    let len = f.metadata().map_err(|e| DataError::io(gz, e))?.len();
    if len < 18 {
        return Err(bad(&format!(
            "{len} bytes is shorter than a gzip header and trailer"
        )));
    }
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic).map_err(|e| DataError::io(gz, e))?;
    if magic != [0x1f, 0x8b] {
        return Err(bad(&format!(
            "starts with {:02x} {:02x}, expected gzip magic 1f 8b",
            magic[0], magic[1]
        )));
    }
    let mut tail = [0u8; 4];
    f.seek(SeekFrom::End(-4))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| DataError::io(gz, e))?;
    Ok(u32::from_le_bytes(tail))
}

/// Decompresses `gz` into `cached` atomically. `Ok(false)` when `dir` is not writable.
fn build(gz: &Path, dir: &Path, cached: &Path) -> Result<bool> {
    if fs::create_dir_all(dir).is_err() {
        return Ok(false);
    }
    let tmp = crate::atomic_file::temp_path(cached);
    let Ok(mut out) = File::create(&tmp) else {
        return Ok(false);
    };
    let result = (|| {
        let src = File::open(gz).map_err(|e| DataError::io(gz, e))?;
        let mut dec = MultiGzDecoder::new(io::BufReader::new(src));
        copy_gz(&mut dec, &mut out, gz, &tmp)?;
        out.sync_all().map_err(|e| DataError::io(&tmp, e))?;
        drop(out);
        fs::rename(&tmp, cached).map_err(|e| DataError::io(cached, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Copies decoded bytes, telling decode errors (the source's fault) from write errors.
fn copy_gz(dec: &mut impl Read, out: &mut File, gz: &Path, tmp: &Path) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = dec.read(&mut buf).map_err(|e| DataError::Gzip {
            path: gz.to_path_buf(),
            source: e,
        })?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(tmp, e))?;
    }
}

/// Decompresses a whole in-memory gzip stream; `name` is used in errors.
pub fn gunzip_bytes(gz: &[u8], name: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    MultiGzDecoder::new(gz)
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip {
            path: name.to_path_buf(),
            source: e,
        })?;
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};

    fn write_gz(path: &Path, data: &[u8]) {
        let mut e = GzEncoder::new(File::create(path).unwrap(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap();
    }

    #[test]
    fn falls_back_to_second_dir_when_first_is_unusable() {
        let tmp = tempfile::tempdir().unwrap();
        let gz = tmp.path().join("x.gz");
        write_gz(&gz, b"hello");
        // A regular file where the first cache directory should be: not creatable.
        let blocked = tmp.path().join("blocked");
        fs::write(&blocked, b"").unwrap();
        let dirs = vec![
            (blocked.join("sub"), "x".to_string()),
            (tmp.path().join("user"), "tag-x".to_string()),
        ];
        let p = decompressed_in(&gz, &dirs).unwrap();
        assert_eq!(p, tmp.path().join("user").join("tag-x"));
        assert_eq!(fs::read(&p).unwrap(), b"hello");
    }

    #[test]
    fn no_writable_dir_names_what_was_tried() {
        let tmp = tempfile::tempdir().unwrap();
        let gz = tmp.path().join("x.gz");
        write_gz(&gz, b"hello");
        let blocked = tmp.path().join("blocked");
        fs::write(&blocked, b"").unwrap();
        let dirs = vec![(blocked.join("sub"), "x".to_string())];
        let msg = decompressed_in(&gz, &dirs).unwrap_err().to_string();
        assert!(msg.contains("no writable cache directory"), "{msg}");
        assert!(msg.contains("blocked"), "{msg}");
    }

    #[test]
    fn isize_is_read_from_trailer() {
        let tmp = tempfile::tempdir().unwrap();
        let gz = tmp.path().join("x.gz");
        write_gz(&gz, &[7u8; 1000]);
        assert_eq!(gzip_isize(&gz).unwrap(), 1000);
    }
}
